"""Search combining: concurrent single-query searches of one index run as one batched ANN call.

Each ShardedIndex.search call pays a fixed Python cost (checks, per-shard calls, the top-k merge) that is
larger than the ANN work of one query on a small index, and it holds the GIL while doing so. Under load,
requests that arrive while a search is running wait for it and then go together: the first of them becomes
the next "leader", runs one batched search for everyone queued, hands the results out, and passes the
leadership on. With no concurrency a request searches inline, with no thread hand-off and no added latency.
"""

from __future__ import annotations

import threading
from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

Result = tuple[NDArray[np.float32], list[str]]  # scores (kk,), ids (kk,) of one query


class Searchable(Protocol):
    def search(
        self, xq: NDArray[np.float32], k: int, params: dict[str, Any] | None = None
    ) -> tuple[NDArray[np.float32], list[list[str]]]: ...


class _Request:
    __slots__ = ("index", "xq", "k", "params", "key", "done", "lead", "result", "error", "event")

    def __init__(self, index: Searchable, xq: NDArray[np.float32], k: int, params: dict[str, Any] | None) -> None:
        self.index = index
        self.xq = xq  # (dim,)
        self.k = k
        self.params = params
        self.key: Hashable = (id(index), k, tuple(sorted((params or {}).items())))
        self.done = False
        self.lead = False
        self.result: Result | None = None
        self.error: BaseException | None = None
        self.event = threading.Event()


@dataclass(frozen=True)
class CombinerStats:
    searches: int  # batched index calls made
    queries: int  # queries answered
    max_batch_seen: int

    @property
    def mean_batch(self) -> float:
        return self.queries / self.searches if self.searches else 0.0


class SearchCombiner:
    """Runs `index.search` for one query at a time from many threads, batching those that overlap.

    Args:
        max_batch: most queries per index call.
    """

    def __init__(self, max_batch: int = 64) -> None:
        self.max_batch = max_batch
        self._lock = threading.Lock()
        self._pending: dict[Hashable, list[_Request]] = {}
        self._busy = False  # a leader is searching
        self._searches = 0
        self._queries = 0
        self._max_seen = 0

    def search(
        self, index: Searchable, xq: NDArray[np.float32], k: int, params: dict[str, Any] | None = None
    ) -> Result:
        """Top-k of one query vector `xq` (dim,) as (scores (kk,), ids)."""
        req = _Request(index, xq, k, params)
        with self._lock:
            self._pending.setdefault(req.key, []).append(req)
            lead = not self._busy
            self._busy = True
        if not lead:
            req.event.wait()
        if not req.done:  # first in, or handed the leadership
            self._lead(req)
        if req.error is not None:
            raise req.error
        if req.result is None:  # pragma: no cover - done implies a result or an error
            raise RuntimeError("search finished without a result")
        return req.result

    def _take(self, me: _Request) -> list[_Request]:
        """Up to max_batch queued requests sharing one key; my own group first."""
        key = me.key if me.key in self._pending else next(iter(self._pending))
        group = self._pending[key]
        batch, rest = group[: self.max_batch], group[self.max_batch :]
        if rest:
            self._pending[key] = rest
        else:
            del self._pending[key]
        return batch

    def _lead(self, me: _Request) -> None:
        while True:
            with self._lock:
                batch = self._take(me)
            self._run(batch)
            with self._lock:
                if me.done:
                    # Pass the leadership to the oldest waiting request, or stand down.
                    if self._pending:
                        nxt = next(iter(self._pending.values()))[0]
                        nxt.lead = True
                        nxt.event.set()
                    else:
                        self._busy = False
                    return

    def _run(self, batch: list[_Request]) -> None:
        first = batch[0]
        try:
            xq = np.stack([r.xq for r in batch])  # (b, dim)
            scores, ids = first.index.search(xq, first.k, first.params)
        except BaseException as err:  # every waiter gets the error, the leader continues
            for r in batch:
                r.error = err
                r.done = True
                r.event.set()
            return
        with self._lock:
            self._searches += 1
            self._queries += len(batch)
            self._max_seen = max(self._max_seen, len(batch))
        for i, r in enumerate(batch):
            r.result = (scores[i, : len(ids[i])], ids[i])
            r.done = True
            r.event.set()

    def stats(self) -> CombinerStats:
        with self._lock:
            return CombinerStats(self._searches, self._queries, self._max_seen)
