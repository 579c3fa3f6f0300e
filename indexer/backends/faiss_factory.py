"""Any faiss index-factory string (e.g. "OPQ32,IVF1024,PQ32x4fs,RFlat" or "HNSW32,Flat")."""

from __future__ import annotations

from typing import Any, ClassVar

import faiss

from indexer.backends.base import Params
from indexer.backends.faiss_common import FAISS_METRIC, FaissBackend
from indexer.errors import InvalidParameter


class FaissFactoryBackend(FaissBackend):
    """A faiss index described by `factory`; search parameters apply to the parts that have them."""

    name: ClassVar[str] = "faiss-factory"
    BUILD_DEFAULTS: ClassVar[Params] = {
        "factory": "HNSW32,Flat",  # the index-factory description; any string faiss accepts
    }
    SEARCH_DEFAULTS: ClassVar[Params] = {
        "nprobe": 16,  # IVF parts: cells scanned per query
        "efSearch": 64,  # HNSW parts: search beam
        "k_factor": 4,  # refine parts (RFlat): candidates re-ranked per result
    }
    ALIASES: ClassVar[dict[str, str]] = {"ef": "efSearch", "index_factory": "factory"}

    def _new_index(self) -> Any:
        try:
            return faiss.index_factory(self.dim, str(self.params["factory"]), FAISS_METRIC[self.metric])
        except RuntimeError as exc:
            raise InvalidParameter(f"faiss cannot build {self.params['factory']!r}: {exc}") from exc

    @classmethod
    def estimate_bytes(cls, n: int, dim: int, params: Params) -> int:
        # The structure is arbitrary: assume full vectors plus graph links or ids, an upper bound for most.
        return n * (4 * dim + 4 * 64 + 8)
