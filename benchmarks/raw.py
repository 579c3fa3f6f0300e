"""The ANN libraries called directly, at the parameters a project backend was given: the "raw" column.

This is the one place in the project that calls hnswlib and faiss without the indexer's backends, and only to
measure what the backends' wrapping costs (input checks, label mapping, score conversion, thread settings).
Parameters are resolved by the backend class itself (`resolve_params`), so "auto" values mean the same here.

Names: `xb` (n, d) database, `xq` (nq, d) queries, `k` neighbours, `D` scores, `I` labels.
"""

from __future__ import annotations

from typing import Any

import faiss
import hnswlib
import numpy as np
from numpy.typing import NDArray

from benchmarks.errors import BenchmarkError

FAISS_METRIC = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}
DEFAULT_OMP_THREADS = faiss.omp_get_max_threads()  # the process default, restored after every measurement


class RawHnswlib:
    """hnswlib.Index with the parameters of the `hnswlib` backend."""

    def __init__(self, dim: int, metric: str, params: dict[str, Any]) -> None:
        self.dim, self.metric, self.params = dim, metric, params
        self.index: Any = None
        self.threads = -1

    def build(self, xb: NDArray[np.float32], threads: int) -> None:
        index = hnswlib.Index(space=self.metric, dim=self.dim)
        index.init_index(max_elements=len(xb), M=int(self.params["M"]),
                         ef_construction=int(self.params["ef_construction"]),
                         random_seed=int(self.params["seed"]))
        index.add_items(xb, np.arange(len(xb)), num_threads=threads)
        self.index = index

    def set_search(self, params: dict[str, Any]) -> None:
        self.index.set_ef(int(params["ef"]))

    def set_threads(self, n: int) -> None:
        self.threads = n

    def prepare_thread(self) -> None:
        """hnswlib takes its thread count per call; nothing to do."""

    def search(self, xq: NDArray[np.float32], k: int) -> tuple[Any, Any]:
        labels, dist = self.index.knn_query(xq, k=k, num_threads=self.threads)
        return dist, labels

    def labels(self, result: tuple[Any, Any]) -> NDArray[np.int64]:
        return np.asarray(result[1]).astype(np.int64)

    def close(self) -> None:
        self.index = None


class RawFaiss:
    """A faiss index built the way the project's faiss backend `backend` builds it."""

    def __init__(self, backend: str, dim: int, metric: str, params: dict[str, Any]) -> None:
        self.backend, self.dim, self.metric, self.params = backend, dim, metric, params
        self.index: Any = None
        self.threads = -1

    def _new(self) -> Any:
        p, m = self.params, FAISS_METRIC[self.metric]
        if self.backend == "flat":
            return faiss.IndexFlatIP(self.dim) if self.metric == "ip" else faiss.IndexFlatL2(self.dim)
        if self.backend == "faiss-hnsw":
            index = faiss.IndexHNSWFlat(self.dim, int(p["M"]), m)
            index.hnsw.efConstruction = int(p["efConstruction"])
            return index
        if self.backend == "faiss-ivf-flat":
            return faiss.index_factory(self.dim, f"IVF{int(p['nlist'])},Flat", m)
        if self.backend == "faiss-ivfpq":
            fs = "fs" if p["fast_scan"] else ""
            refine = ",RFlat" if p["refine"] else ""
            spec = f"IVF{int(p['nlist'])},PQ{int(p['m'])}x{int(p['nbits'])}{fs}{refine}"
            return faiss.index_factory(self.dim, spec, m)
        if self.backend == "faiss-factory":
            return faiss.index_factory(self.dim, str(p["factory"]), m)
        raise BenchmarkError(f"no raw counterpart for backend {self.backend!r}")

    def build(self, xb: NDArray[np.float32], threads: int) -> None:
        index = self._new()
        before = faiss.omp_get_max_threads()
        if threads > 0:
            faiss.omp_set_num_threads(threads)
        try:
            if not index.is_trained:
                index.train(xb)
            index.add(xb)
        finally:
            faiss.omp_set_num_threads(before)
        self.index = index

    def set_search(self, params: dict[str, Any]) -> None:
        _set_faiss_params(self.index, params)

    def set_threads(self, n: int) -> None:
        """Threads of the calling thread's next searches (-1: the process default)."""
        self.threads = n
        self.prepare_thread()

    def prepare_thread(self) -> None:
        """OpenMP thread counts are per calling thread in libgomp: set it in every thread that searches."""
        faiss.omp_set_num_threads(self.threads if self.threads > 0 else DEFAULT_OMP_THREADS)

    def search(self, xq: NDArray[np.float32], k: int) -> tuple[Any, Any]:
        return self.index.search(xq, k)

    def labels(self, result: tuple[Any, Any]) -> NDArray[np.int64]:
        return np.asarray(result[1], dtype=np.int64)

    def close(self) -> None:
        self.index = None


def _set_faiss_params(index: Any, params: dict[str, Any]) -> None:
    ix = faiss.downcast_index(index)
    if isinstance(ix, faiss.IndexRefine):
        if "k_factor" in params:
            ix.k_factor = float(params["k_factor"])
        _set_faiss_params(ix.base_index, params)
    elif isinstance(ix, faiss.IndexPreTransform):
        _set_faiss_params(ix.index, params)
    elif isinstance(ix, faiss.IndexIVF):
        if "nprobe" in params:
            ix.nprobe = int(params["nprobe"])
    elif isinstance(ix, faiss.IndexHNSW) and "efSearch" in params:
        ix.hnsw.efSearch = int(params["efSearch"])


RAW_BACKENDS = ("hnswlib", "flat", "faiss-hnsw", "faiss-ivf-flat", "faiss-ivfpq", "faiss-factory")


def raw_index(backend: str, dim: int, metric: str, params: dict[str, Any]) -> RawHnswlib | RawFaiss | None:
    """The raw counterpart of a project backend (None when the harness has none for it).

    Args:
        params: the backend's resolved parameters (`resolve_params`), canonical names.
    """
    if backend == "hnswlib":
        return RawHnswlib(dim, metric, params)
    if backend in RAW_BACKENDS:
        return RawFaiss(backend, dim, metric, params)
    return None
