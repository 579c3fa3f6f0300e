"""Exact neighbours of a data set's queries (the flat backend), computed once and cached, and recall against them.

Recall follows ann-benchmarks' `knn` metric: a returned neighbour counts when its distance to the query is within
the true k-th distance plus `epsilon` (1e-3), so ties at the k-th distance are not punished. Distances are
recomputed from the returned ids, never taken from the index: "ip" distance is the negative inner product
(on unit vectors that is angular distance minus 1), "l2" the Euclidean distance.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from benchmarks.datasets import Dataset

log = logging.getLogger(__name__)

EPSILON = 1e-3  # ann-benchmarks' tolerance on the k-th distance
GT_K = 100  # neighbours kept per query, enough for any k the harness is asked for


@dataclass(frozen=True)
class GroundTruth:
    """True neighbours: `ids` (nq, K) int64 and `dist` (nq, K) float32 distances, ascending."""

    ids: NDArray[np.int64]
    dist: NDArray[np.float32]
    path: Path | None  # the cache file
    cached: bool  # read from the cache rather than computed


def distances(xq: NDArray[np.float32], xb: NDArray[np.float32], ids: NDArray[np.int64], metric: str) -> NDArray:
    """Distances (nq, k) between each query and the database rows `ids` (nq, k); -1 ids get +inf."""
    safe = np.where(ids >= 0, ids, 0)
    rows = xb[safe]  # (nq, k, d)
    if metric == "ip":
        d = -np.einsum("qkd,qd->qk", rows, xq)  # (nq, k)
    else:
        d = np.sqrt(np.maximum(((rows - xq[:, None, :]) ** 2).sum(-1), 0.0))  # (nq, k)
    return np.where(ids >= 0, d, np.inf).astype(np.float32)


def compute(ds: Dataset, k: int = GT_K) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
    """Exact top-k with the project's flat backend (faiss IndexFlat), as distances ascending."""
    from indexer.backends import get_backend

    flat = get_backend("flat", ds.dim, ds.metric)
    flat.build(ds.xb)
    k = min(k, len(ds.xb))
    D, ids = flat.search(ds.xq, k)
    dist = -D if ds.metric == "ip" else np.sqrt(np.maximum(D, 0.0))
    return ids, dist.astype(np.float32)


def ground_truth(ds: Dataset, cache: Path | None, k: int = GT_K) -> GroundTruth:
    """The cached exact neighbours of `ds`, computing and caching them when absent.

    The cache file is keyed by a digest of the vectors, so a changed data set never reuses stale truth.
    """
    path = None
    if cache is not None:
        slug = ds.name.replace(":", "-").replace("/", "-")
        path = cache / f"gt-{slug}-{ds.fingerprint()}-k{k}.npz"
        if path.exists():
            with np.load(path) as f:
                return GroundTruth(f["ids"], f["dist"], path, True)
    log.info("computing exact ground truth of %s (%d x %d queries)", ds.name, len(ds.xq), k)
    ids, dist = compute(ds, k)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(tmp, ids=ids, dist=dist)
        os.replace(tmp, path)
    return GroundTruth(ids, dist, path, False)


def recall(ds: Dataset, gt: GroundTruth, found: NDArray[np.int64], k: int = 10, epsilon: float = EPSILON) -> float:
    """Mean over queries of (returned neighbours within the true k-th distance + epsilon) / k."""
    if found.shape[0] != len(ds.xq):
        raise ValueError(f"found has {found.shape[0]} rows for {len(ds.xq)} queries")
    k = min(k, gt.dist.shape[1])
    threshold = gt.dist[:, k - 1] + epsilon  # (nq,)
    hits = 0
    for s in range(0, len(ds.xq), 2048):  # chunks bound the (chunk, k, d) gather
        d = distances(ds.xq[s : s + 2048], ds.xb, found[s : s + 2048, :k], ds.metric)  # (chunk, k)
        hits += int((d <= threshold[s : s + 2048, None]).sum())
    return hits / (len(ds.xq) * k)
