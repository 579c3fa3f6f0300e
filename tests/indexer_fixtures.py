"""Shared helpers of the indexer tests: seeded clustered vectors and small homes with a catalog."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from catalog import Catalog, Home
from indexer.synthetic import clustered, clustered_with_queries

N, NQ, DIM = 5000, 200, 32  # the registry tests' data: recall needs a few thousand clustered vectors


def data(n: int = N, nq: int = NQ, dim: int = DIM, seed: int = 7) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    return clustered_with_queries(n, nq, dim, seed=seed)


def ids_for(n: int, prefix: str = "e") -> list[str]:
    return [f"{prefix}{i:06d}" for i in range(n)]


def write_vectors(tmp: Path, n: int = 2000, dim: int = 16, seed: int = 3) -> tuple[Path, Path, NDArray[np.float32]]:
    """A .npy of clustered unit vectors and an ids.txt beside it."""
    x = clustered(n, dim, seed=seed)
    vec = tmp / "vectors.npy"
    ids = tmp / "ids.txt"
    np.save(vec, x)
    ids.write_text("".join(f"{i}\n" for i in ids_for(n)))
    return vec, ids, x


def catalog_home(root: Path, n: int = 1500, dims: dict[str, int] | None = None) -> Home:
    """A home whose catalog holds `n` pins, a few queries, and legacy spaces {name: dim} of clustered vectors."""
    home = Home.resolve(root).ensure()
    spaces = dims or {"pinsage": 24}
    with Catalog.edit(home.catalog_db) as cat:
        cat.upsert_entities(
            {"id": f"pin-{i:05d}", "kind": "pin", "lang": "en", "source": "test", "title": f"pin number {i}"}
            for i in range(n)
        )
        cat.upsert_queries(
            {"id": f"q{i}", "text": f"query {i}", "lang": "en", "group_id": f"q{i}", "source": "test"}
            for i in range(20)
        )
        for s, (name, dim) in enumerate(sorted(spaces.items())):
            x = clustered(n, dim, seed=11 + s)
            cat.put_legacy_vectors(name, [f"pin-{i:05d}" for i in range(n)], x, description="test vectors")
    return home
