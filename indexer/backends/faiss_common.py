"""What every faiss backend shares: train/add/search/save, per-call search parameters, threads, the GPU clone.

GPU: when `faiss.get_num_gpus() > 0` (a faiss-gpu build, `pip install omnisearchsage[gpu]`), a built or loaded
index is cloned to all GPUs with `faiss.index_cpu_to_all_gpus` and searched there; the CPU copy stays the one
that is trained, added to and saved, so files are the same with or without a GPU. Index types faiss cannot
put on a GPU (HNSW, fast-scan PQ) stay on the CPU with a log line. Set OMNISEARCH_FAISS_GPU=0 to never clone.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TypeVar

import faiss
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
from indexer.errors import IndexNotReady, InvalidParameter

log = logging.getLogger(__name__)

F = TypeVar("F", bound="FaissBackend")

FAISS_METRIC = {"ip": faiss.METRIC_INNER_PRODUCT, "l2": faiss.METRIC_L2}


@contextlib.contextmanager
def omp_threads(n: int) -> Iterator[None]:
    """Run faiss with n OpenMP threads in the calling thread (the setting is per thread in libgomp)."""
    if n <= 0:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(n)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


def gpu_count() -> int:
    if os.environ.get("OMNISEARCH_FAISS_GPU", "1") == "0" or not hasattr(faiss, "get_num_gpus"):
        return 0
    return int(faiss.get_num_gpus())


def set_default_search_params(index: Any, values: Params) -> None:
    """Write search parameters into the index objects themselves (used for the defaults)."""
    ix = faiss.downcast_index(index)
    if isinstance(ix, faiss.IndexRefine):
        if "k_factor" in values:
            ix.k_factor = float(values["k_factor"])
        set_default_search_params(ix.base_index, values)
    elif isinstance(ix, faiss.IndexPreTransform):
        set_default_search_params(ix.index, values)
    elif isinstance(ix, faiss.IndexIVF):
        if "nprobe" in values:
            ix.nprobe = int(values["nprobe"])
    elif isinstance(ix, faiss.IndexHNSW):
        if "efSearch" in values:
            ix.hnsw.efSearch = int(values["efSearch"])


def search_parameters(index: Any, values: Params) -> tuple[Any, list[Any]]:
    """A faiss SearchParameters tree for one call, leaving the index untouched (safe across threads).

    Returns the root object and every object created: SWIG does not keep the nested ones alive by itself.
    """
    keep: list[Any] = []

    def walk(node: Any) -> Any:
        ix = faiss.downcast_index(node)
        sp: Any
        if isinstance(ix, faiss.IndexRefine):
            sp = faiss.IndexRefineSearchParameters()
            sp.k_factor = float(values.get("k_factor", ix.k_factor))
            base = walk(ix.base_index)
            if base is not None:
                sp.base_index_params = base
        elif isinstance(ix, faiss.IndexPreTransform):
            inner = walk(ix.index)
            if inner is None:
                return None
            sp = faiss.SearchParametersPreTransform()
            sp.index_params = inner
        elif isinstance(ix, faiss.IndexIVF):
            sp = faiss.SearchParametersIVF()
            sp.nprobe = int(values.get("nprobe", ix.nprobe))
        elif isinstance(ix, faiss.IndexHNSW):
            sp = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]
            sp.efSearch = int(values.get("efSearch", ix.hnsw.efSearch))
        else:
            return None
        keep.append(sp)
        return sp

    return walk(index), keep


def faiss_bytes(index: Any) -> int:
    """Approximate resident bytes of a CPU faiss index, from its structure."""
    ix = faiss.downcast_index(index)
    n = int(ix.ntotal)
    if isinstance(ix, faiss.IndexRefine):
        return faiss_bytes(ix.base_index) + faiss_bytes(ix.refine_index)
    if isinstance(ix, faiss.IndexPreTransform):
        return faiss_bytes(ix.index) + 4 * ix.d * ix.d
    if isinstance(ix, faiss.IndexIVF):
        code = int(ix.code_size)
        total = faiss_bytes(ix.quantizer) + n * (code + 8)
        if isinstance(ix, faiss.IndexIVFFastScan):
            total += int(ix.nlist) * int(ix.bbs) * code  # blocks of bbs codes are padded per list
        if isinstance(ix, faiss.IndexIVFPQ | faiss.IndexIVFPQFastScan):
            total += 4 * ix.d * (1 << int(ix.pq.nbits))  # codebooks
        return total
    if isinstance(ix, faiss.IndexHNSW):
        links = int(ix.hnsw.neighbors.size()) * 4 + n * 12  # type: ignore[attr-defined]  # ids, offsets, levels
        return faiss_bytes(ix.storage) + links
    try:
        return n * int(ix.sa_code_size())
    except RuntimeError:
        return n * 4 * int(ix.d)


class FaissBackend(BackendBase):
    """A faiss index built by `_new_index()`; subclasses add parameters and the estimate."""

    def __init__(self, dim: int, metric: str = "ip", threads: int = -1, **params: Any) -> None:
        super().__init__(dim, metric, threads, **params)
        self.index: Any = None  # CPU index: trained, added to and saved
        self._search_index: Any = None  # what search() calls: the CPU index or its GPU clone
        self._built = False

    # ----------------------------------------------------------------- to implement
    def _new_index(self) -> Any:
        raise NotImplementedError

    # ----------------------------------------------------------------- building
    def is_built(self) -> bool:
        return self._built

    def needs_training(self) -> bool:
        if self.index is None:
            if "auto" in self.params.values():
                return True  # sizes are fixed from the training data first
            self.index = self._new_index()
        return not self.index.is_trained

    def train(self, xb: NDArray[np.float32]) -> None:
        x = as_vectors(xb, self.dim, "training vectors")
        if self.index is None:
            self.index = self._new_index()
        if not self.index.is_trained:
            if len(x) == 0:
                raise InvalidParameter(f"{self.name}: cannot train on zero vectors")
            with omp_threads(self.threads):
                self.index.train(x)

    def spawn(self: F) -> F:
        other = type(self)(self.dim, self.metric, self.threads, **self.params)
        if self.index is not None and self.index.is_trained:
            other.index = faiss.clone_index(self.index)
            if other.index.ntotal:
                other.index.reset()  # keeps the trained quantizer/codebooks, drops the vectors
        return other

    def build(self, vectors: NDArray[np.float32], ids: NDArray[np.int64] | None = None) -> None:
        x = as_vectors(vectors, self.dim)
        labels = as_labels(ids, len(x))
        if self.index is None:
            self.index = self._new_index()
        elif self.index.ntotal:
            self.index.reset()
        with omp_threads(self.threads):
            if not self.index.is_trained:
                if len(x) == 0:
                    raise InvalidParameter(f"{self.name}: cannot train on zero vectors")
                self.index.train(x)
            self.index.add(x)
        self._labels = labels
        self._count = len(x)
        self._built = True
        self._apply_search_params()
        self._search_index = self._maybe_gpu(self.index)

    def _apply_search_params(self) -> None:
        if self.index is not None:
            set_default_search_params(self.index, self.params)
        if self._search_index is not None and self._search_index is not self.index:
            self._apply_gpu_params()

    def _maybe_gpu(self, index: Any) -> Any:
        if gpu_count() == 0:
            return index
        try:
            gpu_index = faiss.index_cpu_to_all_gpus(index)
        except RuntimeError as exc:  # e.g. HNSW and fast-scan have no GPU version
            log.info("%s stays on the CPU: %s", self.name, exc)
            return index
        self._search_index = gpu_index
        self._apply_gpu_params()
        return gpu_index

    def _apply_gpu_params(self) -> None:
        space = faiss.GpuParameterSpace()
        for key in ("nprobe",):
            if key in self.params:
                with contextlib.suppress(RuntimeError):
                    space.set_index_parameter(self._search_index, key, float(self.params[key]))

    # ----------------------------------------------------------------- searching
    def search(self, xq: NDArray[np.float32], k: int, **params: Any) -> Result:
        self._require_built()
        k = check_k(k)
        x = as_vectors(xq, self.dim, "queries")
        if self._count == 0 or len(x) == 0:
            return padded(len(x), k, self.metric)
        sp = None
        if params:
            sp, _keep = search_parameters(self.index, self._search_overrides(params))
        with omp_threads(self.threads):
            D, L = self._search_index.search(x, k, params=sp)
        return D, self._map_labels(L)  # faiss already pads with -1 and -/+FLT_MAX

    # ----------------------------------------------------------------- files and size
    def save(self, directory: str | os.PathLike[str]) -> None:
        self._require_built()
        path = Path(directory)
        faiss.write_index(self.index, str(path / self.INDEX_FILE))
        self._write_meta(path, {"faiss_version": faiss.__version__})

    @classmethod
    def load(cls: type[F], directory: str | os.PathLike[str]) -> F:
        path = Path(directory)
        obj, meta = cls._read_meta(path)
        try:
            obj.index = faiss.read_index(str(path / meta["index_file"]))
        except RuntimeError as exc:
            raise IndexNotReady(f"cannot read faiss index in {path}: {exc}") from exc
        if int(obj.index.ntotal) != obj._count or int(obj.index.d) != obj.dim:
            raise IndexNotReady(f"{path}: index holds {obj.index.ntotal} x {obj.index.d}, metadata says "
                                f"{obj._count} x {obj.dim}")
        obj._built = True
        obj._apply_search_params()
        obj._search_index = obj._maybe_gpu(obj.index)
        return obj

    def memory_bytes(self) -> int:
        if self.index is None:
            return 0
        labels = 0 if self._labels is None else self._labels.nbytes
        return faiss_bytes(self.index) + labels
