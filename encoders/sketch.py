"""Count-min sketch: streaming frequency estimates of item keys for the loss's logQ correction."""

from __future__ import annotations

import zlib
from collections.abc import Iterable

import numpy as np
import torch
from torch import nn

_PRIME = (1 << 31) - 1


def key_of(value: str) -> int:
    """A stable int64 key of a string id (crc32; Python's `hash` is salted per process)."""
    return zlib.crc32(value.encode("utf-8"))


def keys_of(values: Iterable[str]) -> torch.Tensor:
    return torch.tensor([key_of(v) for v in values], dtype=torch.int64)


class CountMinSketch(nn.Module):
    """depth x width counters; an estimate is the minimum over rows, never below the true count.

    Counters and the total are buffers, so a resumed run continues the same estimates.
    """

    def __init__(self, width: int = 1 << 16, depth: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.width, self.depth = width, depth
        rng = np.random.default_rng(seed)
        self.register_buffer("hash_a", torch.from_numpy(rng.integers(1, _PRIME, depth, dtype=np.int64)))
        self.register_buffer("hash_b", torch.from_numpy(rng.integers(0, _PRIME, depth, dtype=np.int64)))
        self.register_buffer("counts", torch.zeros(depth, width, dtype=torch.float64))
        self.register_buffer("total", torch.zeros((), dtype=torch.float64))

    def _cols(self, keys: torch.Tensor) -> torch.Tensor:
        """(n,) int64 keys -> (depth, n) counter columns, ((a*x + b) mod p) mod width."""
        a: torch.Tensor = self.hash_a  # type: ignore[assignment]
        b: torch.Tensor = self.hash_b  # type: ignore[assignment]
        x = keys.remainder(_PRIME)  # (n,) below 2^31 so a*x + b fits in int64
        return (a[:, None] * x[None, :] + b[:, None]) % _PRIME % self.width

    @torch.no_grad()
    def add(self, keys: torch.Tensor) -> None:
        """Count each key once per occurrence."""
        cols = self._cols(keys)  # (depth, n)
        counts: torch.Tensor = self.counts  # type: ignore[assignment]
        for row in range(self.depth):
            counts[row].index_add_(0, cols[row], torch.ones(keys.numel(), dtype=torch.float64))
        total: torch.Tensor = self.total  # type: ignore[assignment]
        total.add_(keys.numel())

    @torch.no_grad()
    def estimate(self, keys: torch.Tensor) -> torch.Tensor:
        """(n,) keys -> (n,) float64 estimated counts (min over rows)."""
        cols = self._cols(keys)  # (depth, n)
        counts: torch.Tensor = self.counts  # type: ignore[assignment]
        rows = torch.arange(self.depth)[:, None].expand_as(cols)
        return counts[rows, cols].min(dim=0).values

    @torch.no_grad()
    def log_prob(self, keys: torch.Tensor) -> torch.Tensor:
        """(n,) keys -> (n,) float32 log of the estimated share of the stream (counts floored at 1)."""
        seen: torch.Tensor = self.total  # type: ignore[assignment]
        total = float(seen.item()) or 1.0
        return (self.estimate(keys).clamp(min=1.0) / total).log().float()
