"""Exact search (faiss IndexFlatIP / IndexFlatL2): the reference every ANN backend is measured against."""

from __future__ import annotations

from typing import Any, ClassVar

import faiss

from indexer.backends.base import Params
from indexer.backends.faiss_common import FaissBackend


class FlatBackend(FaissBackend):
    """Brute force over all vectors; recall 1.0 by construction, no parameters."""

    name: ClassVar[str] = "flat"

    def _new_index(self) -> Any:
        return faiss.IndexFlatIP(self.dim) if self.metric == "ip" else faiss.IndexFlatL2(self.dim)

    @classmethod
    def estimate_bytes(cls, n: int, dim: int, params: Params) -> int:
        return 4 * n * dim
