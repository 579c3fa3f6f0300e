"""Sharded ANN index builds, the SQLite manifest of generations and atomic publishing."""

from __future__ import annotations

import os

# Spinning OpenMP workers (libgomp's default) burn the cores that torch, gRPC and the other shard's threads
# need; on a busy 2-core machine that made faiss k-means 10-100x slower. Sleeping workers cost a few
# microseconds per parallel region. Must be set before faiss loads libgomp; an explicit setting wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
