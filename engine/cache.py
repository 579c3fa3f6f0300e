"""Query-embedding cache: a thread-safe LRU whose entries expire after a TTL."""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray


@dataclass(frozen=True)
class CacheStats:
    size: int
    capacity: int
    ttl_s: float
    hits: int
    misses: int
    expired: int

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0


class EmbeddingCache:
    """LRU of float32 vectors with a time-to-live.

    Keys are `(checkpoint_id, space, normalised text)`, so a new encoder never sees an old encoder's vectors
    and entries of an unchanged checkpoint survive a generation swap. Stored arrays are read-only copies.
    """

    def __init__(
        self,
        capacity: int,
        ttl_s: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.capacity = capacity
        self.ttl_s = ttl_s
        self._clock = clock
        self._data: OrderedDict[Hashable, tuple[float, NDArray[np.float32]]] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.expired = 0

    def get(self, key: Hashable) -> NDArray[np.float32] | None:
        """The cached vector, or None (a miss) when absent or expired."""
        now = self._clock()
        with self._lock:
            entry = self._data.get(key)
            if entry is None:
                self.misses += 1
                return None
            expires, vec = entry
            if expires <= now:
                del self._data[key]
                self.expired += 1
                self.misses += 1
                return None
            self._data.move_to_end(key)
            self.hits += 1
            return vec

    def put(self, key: Hashable, vec: NDArray[np.float32]) -> None:
        if self.capacity <= 0 or self.ttl_s <= 0:
            return
        stored = np.array(vec, dtype=np.float32, copy=True)
        stored.setflags(write=False)
        expires = self._clock() + self.ttl_s
        with self._lock:
            self._data[key] = (expires, stored)
            self._data.move_to_end(key)
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()

    def __len__(self) -> int:
        return len(self._data)

    def stats(self) -> CacheStats:
        with self._lock:
            return CacheStats(len(self._data), self.capacity, self.ttl_s, self.hits, self.misses, self.expired)
