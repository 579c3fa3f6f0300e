"""Deployments to load with `benchmarks serve`: a vectors generation, or a catalog embedded with a real model.

`vectors_deployment`: seeded clustered unit vectors (the size of a real index) published as the index
`vectors`; the vector mix and swap runs use it. `model_deployment`: the shipped ESCI catalog fragment embedded
with an untrained OmniSearchSage checkpoint on the MiniLM backbone (untrained weights cost exactly as much to
run as trained ones), published as pins/products/queries indices; the text mixes use it.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import numpy as np

from catalog import Catalog, Home


def vectors_deployment(home: Home, n: int = 100_000, dim: int = 256, backend: str = "hnswlib", shards: int = 2,
                       seed: int = 0) -> Any:
    """Publish a generation with one index `vectors` of n clustered unit vectors (ids v0..v{n-1})."""
    from indexer.build import rebuild
    from indexer.synthetic import clustered

    home.ensure()
    with tempfile.TemporaryDirectory(dir=home.root) as tmp:
        vec, ids = os.path.join(tmp, "vectors.npy"), os.path.join(tmp, "ids.json")
        np.save(vec, clustered(n, dim, seed=seed))
        with open(ids, "w") as fh:
            json.dump([f"v{i}" for i in range(n)], fh)
        return rebuild(home, indices=["vectors"], vectors=vec, ids=ids, backend=backend, shards=shards,
                       metric="ip", progress=True)


def model_deployment(home: Home, backend: str = "hnswlib", shards: int = 2) -> Any:
    """Import the shipped ESCI fragment (when the catalog is empty), write an untrained MiniLM checkpoint,
    embed the catalog with it and publish every index it supports."""
    from catalog.importers.runner import run_import
    from engine.testing import model_generation, tiny_checkpoint

    home.ensure()
    empty = True
    if home.catalog_db.exists():
        with Catalog(home.catalog_db, read_only=True) as cat:
            empty = not cat.entity_kinds()
    if empty:
        run_import(home, "esci")
    return model_generation(home, tiny_checkpoint(home, name="serve-bench"), backend=backend, shards=shards)
