"""The build gate: recall@10 of a freshly built (sharded) index against exact search over all its vectors.

Queries are real query embeddings when a checkpoint embedded the catalog; otherwise indexed vectors perturbed
by Gaussian noise (queries near, not on, the data, as real queries are). A found id counts as a hit when it is
in the exact top-k or ties the exact k-th score (duplicate vectors are common in catalogs; which of two equal
items is returned is not an error).
"""

from __future__ import annotations

from collections.abc import Sequence

import faiss
import numpy as np
from numpy.typing import NDArray

from indexer.sharded import ShardedIndex

GATE_K = 10
GATE_SEED = 4321  # the query sample and the noise are drawn with this seed, so a gate result is repeatable
NOISE = 0.25  # noise norm relative to the data's RMS distance from its mean
TIE_EPS = 1e-5  # relative tolerance when comparing a found score with the exact k-th score


def perturbed_queries(
    xb: NDArray[np.float32], nq: int, metric: str, seed: int = GATE_SEED
) -> NDArray[np.float32]:
    """nq indexed vectors plus Gaussian noise (nq, d); re-normalised when the data is unit-norm."""
    n, d = xb.shape
    rng = np.random.default_rng(seed)
    rows = np.sort(rng.choice(n, size=min(nq, n), replace=False))
    sample = np.asarray(xb[rows], dtype=np.float32)  # (nq, d)
    probe = np.asarray(xb[rng.choice(n, size=min(n, 10_000), replace=False)], dtype=np.float32)
    spread = float(np.sqrt(((probe - probe.mean(axis=0)) ** 2).sum(axis=1).mean()))
    noise = rng.standard_normal(sample.shape).astype(np.float32) * (NOISE * spread / np.sqrt(d))
    xq = sample + noise  # (nq, d)
    norms = np.linalg.norm(probe, axis=1)
    if metric == "ip" and np.allclose(norms, 1.0, atol=1e-3):
        xq /= np.linalg.norm(xq, axis=1, keepdims=True)
    return np.ascontiguousarray(xq, dtype=np.float32)


def exact_knn(
    xq: NDArray[np.float32], xb: NDArray[np.float32], k: int, metric: str
) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
    """Brute-force top-k rows of xb for each query (faiss.knn: no index, no copy of xb)."""
    m = faiss.METRIC_INNER_PRODUCT if metric == "ip" else faiss.METRIC_L2
    D, L = faiss.knn(np.ascontiguousarray(xq), np.ascontiguousarray(xb), k, metric=m)
    return D, L


def recall_against_exact(
    index: ShardedIndex,
    xb: NDArray[np.float32],
    ids: Sequence[str],
    xq: NDArray[np.float32],
    k: int = GATE_K,
    params: dict[str, object] | None = None,
) -> float:
    """Mean recall@k of `index` (built from xb, ids) on queries xq, ties with the k-th exact score counted."""
    kk = min(k, len(ids))
    if kk == 0 or len(xq) == 0:
        return 1.0
    D_true, _ = exact_knn(xq, xb, kk, index.metric)  # (nq, kk)
    _, found = index.search(xq, kk, params)
    row_of = {entity: i for i, entity in enumerate(ids)}
    hits = 0
    for q, (kth, got) in enumerate(zip(D_true[:, -1], found, strict=True)):
        rows = np.fromiter((row_of[g] for g in got), dtype=np.int64, count=len(got))
        if len(rows) == 0:
            continue
        cand = xb[rows]  # (found, d)
        if index.metric == "ip":
            score = cand @ xq[q]
            ok = score >= kth - TIE_EPS * max(1.0, abs(float(kth)))
        else:
            score = ((cand - xq[q]) ** 2).sum(axis=1)
            ok = score <= kth + TIE_EPS * max(1.0, abs(float(kth)))
        hits += min(int(ok.sum()), kk)
    return hits / (kk * len(xq))
