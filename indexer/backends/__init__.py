"""One ANN backend per module behind the AnnBackend protocol, looked up in a registry.

Add a backend by writing a module with a class that follows `AnnBackend` (usually by subclassing
`BackendBase` or `FaissBackend`) and adding it to `REGISTRY`; the tests parametrize over the registry.
"""

from __future__ import annotations

import os
from typing import Any

from indexer.backends.base import AnnBackend, read_backend_meta
from indexer.backends.faiss_factory import FaissFactoryBackend
from indexer.backends.faiss_hnsw import FaissHnswBackend
from indexer.backends.faiss_ivf_flat import FaissIvfFlatBackend
from indexer.backends.faiss_ivfpq import FaissIvfPqBackend
from indexer.backends.flat import FlatBackend
from indexer.backends.hnswlib_index import HnswlibBackend
from indexer.errors import UnknownBackend

REGISTRY: dict[str, type[Any]] = {
    cls.name: cls
    for cls in (
        FlatBackend,
        HnswlibBackend,
        FaissHnswBackend,
        FaissIvfFlatBackend,
        FaissIvfPqBackend,
        FaissFactoryBackend,
    )
}


def backend_class(name: str) -> type[Any]:
    """The class registered under `name`."""
    try:
        return REGISTRY[name]
    except KeyError:
        raise UnknownBackend(f"unknown backend {name!r}; known: {sorted(REGISTRY)}") from None


def get_backend(
    name: str, dim: int, metric: str = "ip", threads: int = -1, **build_params: Any
) -> AnnBackend:
    """A new, empty backend: `get_backend("hnswlib", 256, "ip", M=32, ef=100)`."""
    backend: AnnBackend = backend_class(name)(dim, metric, threads, **build_params)
    return backend


def load_backend(directory: str | os.PathLike[str]) -> AnnBackend:
    """Load whatever backend saved itself into `directory` (named in its backend.json)."""
    meta = read_backend_meta(directory)
    backend: AnnBackend = backend_class(meta["backend"]).load(directory)
    return backend


__all__ = ["REGISTRY", "AnnBackend", "backend_class", "get_backend", "load_backend"]
