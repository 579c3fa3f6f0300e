"""Candidate pools of the catalog and exact (brute-force) search over them, for evaluation.

xq (n, d) query vectors, xb (N, d) candidate vectors, k results per query, inner product.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import torch
from numpy.typing import NDArray

from catalog import Catalog

Row = dict[str, Any]


@dataclass
class Pool:
    """All candidates of one kind (entities of a kind, or the catalog's queries for kind 'query')."""

    kind: str
    ids: list[str]
    rows: list[Row]  # entity rows, or query rows with a `text` key
    langs: list[str]
    _index: dict[str, int] = field(default_factory=dict)

    def position(self, item_id: str) -> int | None:
        if not self._index:
            self._index = {i: n for n, i in enumerate(self.ids)}
        return self._index.get(item_id)

    def lang_mask(self, lang: str | None) -> NDArray[np.bool_] | None:
        if lang is None:
            return None
        return np.array([x == lang for x in self.langs], dtype=bool)


class Pools:
    """Lazily loaded candidate pools of a catalog."""

    def __init__(self, cat: Catalog) -> None:
        self.cat = cat
        self._pools: dict[str, Pool] = {}

    def get(self, kind: str) -> Pool:
        if kind not in self._pools:
            rows = list(self.cat.queries()) if kind == "query" else list(self.cat.entities(kind))
            self._pools[kind] = Pool(kind, [r["id"] for r in rows], rows, [r.get("lang") or "" for r in rows])
        return self._pools[kind]


class Retriever(Protocol):
    """A system under evaluation: query texts -> ranked candidate ids of one kind."""

    name: str

    def search(self, texts: list[str], kind: str, k: int, lang: str | None = None) -> list[list[str]]:
        """Top-k ids per text among the pool of `kind` (restricted to language `lang` if given)."""
        ...


def exact_topk(
    xq: NDArray[np.float32], xb: NDArray[np.float32], k: int, mask: NDArray[np.bool_] | None = None
) -> NDArray[np.int64]:
    """(n, d), (N, d) -> (n, min(k, allowed)) indices into xb by descending inner product."""
    allowed = int(mask.sum()) if mask is not None else xb.shape[0]
    k = min(k, allowed)
    out = np.zeros((xq.shape[0], k), np.int64)
    tb = torch.from_numpy(np.ascontiguousarray(xb))
    penalty = None if mask is None else torch.from_numpy(np.where(mask, 0.0, -np.inf).astype(np.float32))
    for start in range(0, xq.shape[0], 256):
        scores = torch.from_numpy(np.ascontiguousarray(xq[start : start + 256])) @ tb.T  # (b, N)
        if penalty is not None:
            scores = scores + penalty[None, :]
        out[start : start + 256] = torch.topk(scores, k, dim=1).indices.numpy()
    return out


class DenseRetriever:
    """Exact search over vectors of each pool, computed once per kind by `embed_pool`."""

    name = "dense"

    def __init__(self, pools: Pools) -> None:
        self.pools = pools
        self._vectors: dict[str, tuple[list[str], NDArray[np.float32], list[str]]] = {}

    def embed_pool(self, pool: Pool) -> tuple[list[str], NDArray[np.float32]]:
        raise NotImplementedError

    def embed_texts(self, texts: list[str], kind: str) -> NDArray[np.float32]:
        raise NotImplementedError

    def _candidates(self, kind: str) -> tuple[list[str], NDArray[np.float32], list[str]]:
        if kind not in self._vectors:
            pool = self.pools.get(kind)
            ids, vecs = self.embed_pool(pool)
            langs = [pool.langs[p] for p in (pool.position(i) for i in ids) if p is not None]
            self._vectors[kind] = (ids, vecs, langs)
        return self._vectors[kind]

    def search(self, texts: list[str], kind: str, k: int, lang: str | None = None) -> list[list[str]]:
        ids, xb, langs = self._candidates(kind)
        if not ids:
            return [[] for _ in texts]
        mask = None if lang is None else np.array([x == lang for x in langs], dtype=bool)
        if mask is not None and not mask.any():
            return [[] for _ in texts]
        xq = self.embed_texts(texts, kind)
        top = exact_topk(xq, xb, k, mask)
        return [[ids[j] for j in row] for row in top]


def chunks(seq: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(seq), size):
        yield seq[i : i + size]
