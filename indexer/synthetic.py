"""Seeded clustered vectors for tests, the build gate's stand-in queries and overhead measurements.

Uniform noise makes every ANN index look alike; real embeddings are clustered, so these are too: Gaussian
blobs around random centres, L2-normalised (inner product on unit vectors, like the model's spaces).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray


def clustered(
    n: int,
    dim: int,
    clusters: int | None = None,
    spread: float = 1.0,
    seed: int = 0,
    normalize: bool = True,
) -> NDArray[np.float32]:
    """n vectors (n, dim) in `clusters` Gaussian blobs (default n / 50) of relative width `spread`."""
    rng = np.random.default_rng(seed)
    c = clusters or max(1, n // 50)
    centres = rng.standard_normal((c, dim)).astype(np.float32)  # (c, dim)
    which = rng.integers(0, c, size=n)
    x = centres[which] + spread * rng.standard_normal((n, dim)).astype(np.float32)  # (n, dim)
    if normalize:
        x /= np.linalg.norm(x, axis=1, keepdims=True)
    return np.ascontiguousarray(x, dtype=np.float32)


def clustered_with_queries(
    n: int, nq: int, dim: int, clusters: int | None = None, spread: float = 1.0, seed: int = 0
) -> tuple[NDArray[np.float32], NDArray[np.float32]]:
    """Database (n, dim) and held-out queries (nq, dim) drawn from the same blobs."""
    x = clustered(n + nq, dim, clusters or max(1, n // 50), spread, seed)
    return x[:n].copy(), x[n:].copy()


def recall_at_k(found: NDArray[np.int64], truth: NDArray[np.int64], k: int = 10) -> float:
    """Mean fraction of the true top-k labels found in the returned top-k (-1 entries never match)."""
    hits = 0
    total = 0
    for f, t in zip(found[:, :k], truth[:, :k], strict=True):
        t_valid = t[t >= 0]
        hits += len(np.intersect1d(f[f >= 0], t_valid))
        total += len(t_valid)
    return hits / total if total else 1.0
