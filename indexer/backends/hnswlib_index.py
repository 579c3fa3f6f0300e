"""hnswlib HNSW: the fastest graph index on CPU here (PERF-FACTS), labels stored by the library itself.

hnswlib reports "ip" distances as 1 - <x, q>; they are turned back into inner products so that every backend
scores alike. `ef` is a property of the index object in hnswlib, so a per-call `ef` is applied under a lock
and put back afterwards; calls with the default parameters take no lock (they may run with the override
while one is active: a different beam, never a wrong result). hnswlib itself searches with max(ef, k), so
the default `ef` is a floor: a larger k always gets a beam of at least k.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path
from typing import Any, ClassVar, TypeVar

import hnswlib
import numpy as np
from numpy.typing import NDArray

from indexer.backends.base import (
    BackendBase,
    Params,
    Result,
    as_labels,
    as_vectors,
    check_k,
    padded,
)
from indexer.errors import IndexNotReady

H = TypeVar("H", bound="HnswlibBackend")

MUTEX_BYTES = 40  # one std::mutex per element (link_list_locks_) plus the fixed pool below
LABEL_LOCKS = 65536


class HnswlibBackend(BackendBase):
    """hnswlib.Index with spaces "ip" / "l2"; builds with `threads` threads (-1: all cores)."""

    name: ClassVar[str] = "hnswlib"
    BUILD_DEFAULTS: ClassVar[Params] = {
        "M": 16,  # links per node (2M on level 0)
        "ef_construction": 200,  # build-time beam (PERF-FACTS configuration)
        "seed": 100,  # level generator seed (hnswlib's own default)
    }
    SEARCH_DEFAULTS: ClassVar[Params] = {
        # search beam (hnswlib searches with max(ef, k), so k > ef widens it): recall@10 against exact search
        # 0.999 at 32 vs 1.000 at 64 on the server benchmark's 100k x 256 clustered vectors (0.961 at 16), 0.957
        # vs 0.978 on PERF-FACTS' 200k; 32 costs 69 us per single query there against 122 us at 64
        "ef": 32,
    }
    ALIASES: ClassVar[dict[str, str]] = {"efConstruction": "ef_construction", "efSearch": "ef"}

    def __init__(self, dim: int, metric: str = "ip", threads: int = -1, **params: Any) -> None:
        super().__init__(dim, metric, threads, **params)
        self.index: Any = None
        self._lock = threading.Lock()

    def is_built(self) -> bool:
        return self.index is not None

    def train(self, xb: NDArray[np.float32]) -> None:
        """HNSW needs no training."""

    def spawn(self: H) -> H:
        return type(self)(self.dim, self.metric, self.threads, **self.params)

    def build(self, vectors: NDArray[np.float32], ids: NDArray[np.int64] | None = None) -> None:
        x = as_vectors(vectors, self.dim)
        n = len(x)
        labels = as_labels(ids, n)
        index = hnswlib.Index(space=self.metric, dim=self.dim)
        index.init_index(
            max_elements=max(n, 1),
            M=int(self.params["M"]),
            ef_construction=int(self.params["ef_construction"]),
            random_seed=int(self.params["seed"]),
        )
        if n:
            index.add_items(x, labels if labels is not None else np.arange(n), num_threads=self.threads)
        index.set_ef(int(self.params["ef"]))
        self.index = index
        self._count = n

    def _apply_search_params(self) -> None:
        self.index.set_ef(int(self.params["ef"]))

    def search(self, xq: NDArray[np.float32], k: int, **params: Any) -> Result:
        self._require_built()
        k = check_k(k)
        x = as_vectors(xq, self.dim, "queries")
        nq = len(x)
        kk = min(k, self._count)  # hnswlib refuses k > n
        if kk == 0 or nq == 0:
            return padded(nq, k, self.metric)
        if params:
            ef = int({**self.search_params(), **self._search_overrides(params)}["ef"])
            with self._lock:
                self.index.set_ef(ef)
                try:
                    labels, dist = self.index.knn_query(x, k=kk, num_threads=self.threads)
                finally:
                    self.index.set_ef(int(self.params["ef"]))
        else:
            labels, dist = self.index.knn_query(x, k=kk, num_threads=self.threads)
        L = labels.view(np.int64)  # (nq, kk) uint64 -> int64 without a copy
        D = dist
        if self.metric == "ip":
            np.subtract(1.0, D, out=D)  # hnswlib "ip" distance is 1 - <x, q>
        if kk < k:
            Dp, Lp = padded(nq, k, self.metric)
            Dp[:, :kk] = D
            Lp[:, :kk] = L
            return Dp, Lp
        return D, L

    def save(self, directory: str | os.PathLike[str]) -> None:
        self._require_built()
        path = Path(directory)
        self.index.save_index(str(path / self.INDEX_FILE))
        self._write_meta(path, {"hnswlib_version": _hnswlib_version()})

    @classmethod
    def load(cls: type[H], directory: str | os.PathLike[str]) -> H:
        path = Path(directory)
        obj, meta = cls._read_meta(path)
        index = hnswlib.Index(space=obj.metric, dim=obj.dim)
        try:
            index.load_index(str(path / meta["index_file"]), max_elements=max(obj._count, 1))
        except RuntimeError as exc:
            raise IndexNotReady(f"cannot read hnswlib index in {path}: {exc}") from exc
        if index.element_count != obj._count:
            raise IndexNotReady(
                f"{path}: index holds {index.element_count} vectors, metadata says {obj._count}"
            )
        index.set_ef(int(obj.params["ef"]))
        obj.index = index
        return obj

    @classmethod
    def estimate_bytes(cls, n: int, dim: int, params: Params) -> int:
        m = int(params.get("M") or cls.BUILD_DEFAULTS["M"])
        level0 = 4 * dim + 4 * (2 * m + 1) + 8  # vector, links + count, label
        upper = (4 * m + 4) / max(m - 1, 1)  # expected links on higher levels (P(level >= l) = M^-l)
        bookkeeping = 8 + 4 + MUTEX_BYTES + 48  # link-list pointer, level, lock, label hash entry
        return int(n * (level0 + upper + bookkeeping)) + LABEL_LOCKS * MUTEX_BYTES

    def memory_bytes(self) -> int:
        if self.index is None:
            return 0
        return self.estimate_bytes(self._count, self.dim, self.params)


def _hnswlib_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("hnswlib")
    except PackageNotFoundError:
        return "unknown"
