"""The AnnBackend protocol every ANN backend implements, and the checks and plumbing they share.

Names used in the numeric code: `xb` (n, d) database vectors, `xq` (nq, d) query vectors, `k` neighbours,
`D` (nq, k) scores, `L` (nq, k) int64 labels. Scores follow faiss: inner products for metric "ip" (higher is
better), squared L2 distances for "l2" (lower is better). Missing results carry label -1 and the worst float32
score (-FLT_MAX for "ip", +FLT_MAX for "l2"), exactly as faiss pads.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from indexer.errors import DimensionMismatch, IndexNotReady, InvalidParameter, InvalidVector

METRICS = ("ip", "l2")
FLT_MAX = float(np.finfo(np.float32).max)
PAD_SCORE = {"ip": -FLT_MAX, "l2": FLT_MAX}
BACKEND_FILE = "backend.json"  # written by every backend's save(): name, dim, metric, params, count
LABELS_FILE = "labels.npy"  # only when labels are not 0..n-1 and the library cannot store them itself

TINY = 4096  # up to this many values (a few query vectors) the finite check is a plain isfinite pass
SMALL = 1 << 18  # below this many values (any query batch) the finite check is one sum

Params = dict[str, Any]
Result = tuple[NDArray[np.float32], NDArray[np.int64]]
B = TypeVar("B", bound="BackendBase")


@runtime_checkable
class AnnBackend(Protocol):
    """What the sharded index, the build gate and the benchmarks need from an ANN library.

    Every backend is constructed as `cls(dim, metric, threads=-1, **params)`; `params` mixes build parameters
    (fixed once built) and search parameters (defaults, overridable per call).
    """

    name: ClassVar[str]
    dim: int
    metric: str
    params: Params
    threads: int

    def train(self, xb: NDArray[np.float32]) -> None:
        """Learn what the index needs before adding vectors (coarse quantizer, codebooks); no-op if none."""

    def spawn(self) -> AnnBackend:
        """An empty backend with the same parameters sharing this one's trained state (for shards)."""

    def build(self, vectors: NDArray[np.float32], ids: NDArray[np.int64] | None = None) -> None:
        """Index `vectors` (n, dim) under int64 labels `ids` (default 0..n-1)."""

    def search(self, xq: NDArray[np.float32], k: int, **params: Any) -> Result:
        """Batched top-k: (D float32 (nq, k), L int64 (nq, k)) padded with -1; params override defaults."""

    def set_search_params(self, **params: Any) -> None:
        """Change the default search parameters (ef, nprobe, k_factor, ...)."""

    def save(self, directory: str | os.PathLike[str]) -> None:
        """Write the index and a backend.json into `directory` (which must exist)."""

    @classmethod
    def load(cls, directory: str | os.PathLike[str]) -> AnnBackend:
        """Read back what `save` wrote."""

    def __len__(self) -> int: ...

    def memory_bytes(self) -> int:
        """Approximate resident size of the built index."""

    @classmethod
    def estimate_bytes(cls, n: int, dim: int, params: Params) -> int:
        """Approximate size of an index of n vectors, before building it (for the memory check)."""

    @classmethod
    def resolve_params(cls, n: int, dim: int, params: Params) -> Params:
        """Defaults merged with `params`, "auto" values (nlist, m) fixed for n vectors of `dim`."""


def check_metric(metric: str) -> str:
    if metric not in METRICS:
        raise InvalidParameter(f"metric must be one of {METRICS}, got {metric!r}")
    return metric


def _all_finite(a: NDArray[np.float32]) -> bool:
    # Single-threaded on purpose: a multi-threaded pass (BLAS row sums) was 4x faster alone but waited ~10 ms
    # for its threads on a busy 2-core machine. Small inputs (query batches): one sum, since NaN and inf
    # survive a sum (only an overflowing sum needs the exact check). Large ones: isfinite over row blocks,
    # exact, with a bounded temporary. Tiny ones (single queries): isfinite directly, which is cheaper than
    # entering np.errstate for the sum (1 us against 3 us for 256 values).
    if a.size <= TINY:
        return bool(np.isfinite(a).all())
    if a.size < SMALL:
        with np.errstate(over="ignore", invalid="ignore"):
            if math.isfinite(np.add.reduce(a, axis=None)):
                return True
        return bool(np.isfinite(a).all())
    step = max(1, SMALL // a.shape[1])
    return all(bool(np.isfinite(a[i : i + step]).all()) for i in range(0, a.shape[0], step))


def as_vectors(x: Any, dim: int, what: str = "vectors") -> NDArray[np.float32]:
    """`x` as a C-contiguous float32 (n, dim) matrix, copying only when needed.

    Raises:
        DimensionMismatch: not 2-D (a single 1-D vector of `dim` is accepted) or wrong width.
        InvalidVector: any NaN or infinite value.
    """
    a = np.asarray(x)
    if a.ndim == 1 and a.shape[0] == dim:
        a = a.reshape(1, dim)  # (1, dim)
    if a.ndim != 2 or a.shape[1] != dim:
        raise DimensionMismatch(f"{what}: expected shape (n, {dim}), got {tuple(a.shape)}")
    if a.dtype != np.float32 or not a.flags.c_contiguous:
        a = np.ascontiguousarray(a, dtype=np.float32)
    if a.size and not _all_finite(a):
        bad = int(np.flatnonzero(~np.isfinite(a).all(axis=1))[0])
        raise InvalidVector(f"{what}: row {bad} holds NaN or infinite values")
    return a


def as_labels(ids: Any, n: int) -> NDArray[np.int64] | None:
    """Labels as int64 (n,), or None when they are exactly 0..n-1 (no mapping needed)."""
    if ids is None:
        return None
    lab = np.ascontiguousarray(ids, dtype=np.int64)
    if lab.shape != (n,):
        raise DimensionMismatch(f"ids: expected {n} labels, got shape {tuple(lab.shape)}")
    if n and (lab < 0).any():
        raise InvalidParameter("ids: labels must be non-negative (-1 marks a missing result)")
    if n and lab[0] == 0 and lab[-1] == n - 1 and (np.diff(lab) == 1).all():
        return None
    return lab


def check_k(k: int) -> int:
    if not isinstance(k, int | np.integer) or k < 1:
        raise InvalidParameter(f"k must be a positive integer, got {k!r}")
    return int(k)


def padded(nq: int, k: int, metric: str) -> Result:
    """An all-missing result block."""
    return np.full((nq, k), PAD_SCORE[metric], dtype=np.float32), np.full((nq, k), -1, dtype=np.int64)


class BackendBase:
    """Shared plumbing: parameter checks, label mapping, backend.json; subclasses set the constants."""

    name: ClassVar[str] = ""
    BUILD_DEFAULTS: ClassVar[Params] = {}  # build parameters and their defaults
    SEARCH_DEFAULTS: ClassVar[Params] = {}  # search parameters and their defaults
    ALIASES: ClassVar[dict[str, str]] = {}  # other spellings accepted for a parameter
    INDEX_FILE: ClassVar[str] = "index.bin"

    def __init__(self, dim: int, metric: str = "ip", threads: int = -1, **params: Any) -> None:
        if int(dim) < 1:
            raise InvalidParameter(f"dim must be positive, got {dim}")
        self.dim = int(dim)
        self.metric = check_metric(metric)
        self.threads = int(threads)  # -1: the library's default (all cores)
        self.params: Params = {**self.BUILD_DEFAULTS, **self.SEARCH_DEFAULTS, **self._canonical(params)}
        self._labels: NDArray[np.int64] | None = None
        self._count = 0

    # ----------------------------------------------------------------- parameters
    @classmethod
    def _canonical(cls, params: Params) -> Params:
        out: Params = {}
        known = set(cls.BUILD_DEFAULTS) | set(cls.SEARCH_DEFAULTS)
        for key, value in params.items():
            key = cls.ALIASES.get(key, key)
            if key not in known:
                raise InvalidParameter(
                    f"backend {cls.name!r} has no parameter {key!r}; known: {sorted(known)}"
                )
            out[key] = value
        return out

    @classmethod
    def _search_overrides(cls, params: Params) -> Params:
        out = cls._canonical(params)
        build_only = set(out) - set(cls.SEARCH_DEFAULTS)
        if build_only:
            raise InvalidParameter(
                f"{sorted(build_only)} are build parameters of {cls.name!r}, not search ones"
            )
        return out

    @classmethod
    def resolve_params(cls, n: int, dim: int, params: Params) -> Params:
        return {**cls.BUILD_DEFAULTS, **cls.SEARCH_DEFAULTS, **cls._canonical(params)}

    def search_params(self) -> Params:
        """The current default search parameters."""
        return {k: self.params[k] for k in self.SEARCH_DEFAULTS if k in self.params}

    def set_search_params(self, **params: Any) -> None:
        self.params.update(self._search_overrides(params))
        if self.is_built():
            self._apply_search_params()

    def _apply_search_params(self) -> None:
        """Push self.params' search values into the library object (subclasses)."""

    # ----------------------------------------------------------------- state
    def is_built(self) -> bool:
        raise NotImplementedError

    def needs_training(self) -> bool:
        """Whether `train` would learn anything (IVF/PQ) before vectors can be added."""
        return False

    def _require_built(self) -> None:
        if not self.is_built():
            raise IndexNotReady(f"{self.name} index is not built or loaded")

    def __len__(self) -> int:
        return self._count

    def _map_labels(self, L: NDArray[np.int64]) -> NDArray[np.int64]:
        if self._labels is None:
            return L
        return np.where(L >= 0, self._labels[L], -1)

    # ----------------------------------------------------------------- files
    def _write_meta(self, directory: Path, extra: Params | None = None) -> None:
        meta = {
            "backend": self.name,
            "dim": self.dim,
            "metric": self.metric,
            "params": self.params,
            "count": self._count,
            "index_file": self.INDEX_FILE,
            "labels": self._labels is not None,
            **(extra or {}),
        }
        if self._labels is not None:
            np.save(directory / LABELS_FILE, self._labels)
        (directory / BACKEND_FILE).write_text(json.dumps(meta, indent=1, sort_keys=True))

    @classmethod
    def _read_meta(cls: type[B], directory: Path) -> tuple[B, Params]:
        meta = read_backend_meta(directory)
        if meta["backend"] != cls.name:
            raise InvalidParameter(f"{directory} holds a {meta['backend']!r} index, not {cls.name!r}")
        obj = cls(meta["dim"], meta["metric"], **meta["params"])
        obj._count = int(meta["count"])
        if meta.get("labels"):
            obj._labels = np.load(directory / LABELS_FILE)
        return obj, meta


def read_backend_meta(directory: str | os.PathLike[str]) -> Params:
    """The backend.json of a saved backend."""
    path = Path(directory) / BACKEND_FILE
    try:
        meta: Params = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise IndexNotReady(f"no readable {BACKEND_FILE} in {directory}: {exc}") from exc
    return meta
