"""faiss IVF-PQ: product-quantized codes in IVF cells, 4-bit fast-scan by default, with exact re-ranking.

`PQ{m}x4fs` packs two 4-bit codes per byte and scans them with SIMD lookups; IndexRefineFlat keeps the raw
vectors and re-scores the best `k_factor * k` candidates exactly, which is what lifts recall from ~0.8 to
~0.95 (PERF-FACTS). Without `refine` the index is only the codes (much smaller, lower recall).
"""

from __future__ import annotations

from typing import Any, ClassVar

import faiss

from indexer.backends.base import Params
from indexer.backends.faiss_common import FAISS_METRIC
from indexer.backends.faiss_ivf_flat import IvfBackend
from indexer.errors import InvalidParameter


def auto_m(dim: int) -> int:
    """Two dimensions per sub-quantizer (d/2), or one when d is odd."""
    return dim // 2 if dim % 2 == 0 else dim


class FaissIvfPqBackend(IvfBackend):
    """IVF{nlist},PQ{m}x{nbits}[fs][,RFlat] built through the faiss index factory."""

    name: ClassVar[str] = "faiss-ivfpq"
    BUILD_DEFAULTS: ClassVar[Params] = {
        "nlist": "auto",  # number of cells; auto = min(4 sqrt(n), n / 39)
        "m": "auto",  # sub-quantizers, must divide dim; auto = dim / 2
        "nbits": 4,  # bits per code; 4 enables fast-scan, 8 is the classic IVF-PQ
        "fast_scan": True,  # SIMD fast-scan layout (only with nbits=4)
        "refine": True,  # keep raw vectors and re-rank candidates exactly (IndexRefineFlat)
    }
    SEARCH_DEFAULTS: ClassVar[Params] = {
        "nprobe": "auto",  # cells scanned per query; auto = max(16, nlist / 16)
        "k_factor": 8,  # re-rank k_factor * k candidates exactly (only with refine); 4 misses 0.95 on dense blobs
    }

    @classmethod
    def resolve_params(cls, n: int, dim: int, params: Params) -> Params:
        out = super().resolve_params(n, dim, params)
        if out["m"] == "auto":
            out["m"] = auto_m(dim)
        if dim % int(out["m"]):
            raise InvalidParameter(f"faiss-ivfpq: m={out['m']} must divide the dimension {dim}")
        if int(out["nbits"]) != 4:
            out["fast_scan"] = False  # fast-scan exists only for 4-bit codes
        return out

    def factory_string(self) -> str:
        p = self.params
        fs = "fs" if p["fast_scan"] else ""
        refine = ",RFlat" if p["refine"] else ""
        return f"IVF{int(p['nlist'])},PQ{int(p['m'])}x{int(p['nbits'])}{fs}{refine}"

    def _new_index(self) -> Any:
        return faiss.index_factory(self.dim, self.factory_string(), FAISS_METRIC[self.metric])

    @classmethod
    def estimate_bytes(cls, n: int, dim: int, params: Params) -> int:
        p = cls.resolve_params(n, dim, params)
        codes = n * (int(p["m"]) * int(p["nbits"]) // 8 + 1 + 8)
        raw = 4 * n * dim if p["refine"] else 0
        return codes + raw + 4 * int(p["nlist"]) * dim
