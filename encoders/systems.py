"""The trained model as evaluation systems: its own space, and each legacy space over the stored vectors."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from catalog import Catalog
from encoders.model import OmniSearchSage
from encoders.retrieval import DenseRetriever, Pool, Pools


class ModelRetriever(DenseRetriever):
    """Queries in space "model" against entities embedded by the entity tower (or queries, for kind query)."""

    def __init__(self, model: OmniSearchSage, pools: Pools, name: str = "model") -> None:
        super().__init__(pools)
        self.model = model
        self.name = name

    def embed_pool(self, pool: Pool) -> tuple[list[str], NDArray[np.float32]]:
        if pool.kind == "query":
            return pool.ids, self.model.embed_related([r["text"] for r in pool.rows])
        return pool.ids, self.model.embed_entities(pool.rows)

    def embed_texts(self, texts: list[str], kind: str) -> NDArray[np.float32]:
        return self.model.embed_queries(texts, space="model")


class LegacyRetriever(DenseRetriever):
    """Queries in space "legacy-<space>" against the catalog's stored (never re-embedded) legacy vectors."""

    def __init__(self, model: OmniSearchSage, pools: Pools, cat: Catalog, space: str) -> None:
        super().__init__(pools)
        self.model, self.cat, self.space = model, cat, space
        self.name = f"legacy-{space}"
        ids, vecs = cat.legacy_vectors(space)
        norms = np.linalg.norm(vecs, axis=1, keepdims=True)
        self._ids, self._vecs = ids, (vecs / np.maximum(norms, 1e-12)).astype(np.float32)

    def embed_pool(self, pool: Pool) -> tuple[list[str], NDArray[np.float32]]:
        keep = [n for n, i in enumerate(self._ids) if pool.position(i) is not None]
        return [self._ids[n] for n in keep], self._vecs[keep]

    def embed_texts(self, texts: list[str], kind: str) -> NDArray[np.float32]:
        return self.model.embed_queries(texts, space=f"legacy-{self.space}")

    def covers(self, kind: str) -> bool:
        """True when some entity of `kind` has a vector in this space."""
        return kind != "query" and bool(self.embed_pool(self.pools.get(kind))[0])
