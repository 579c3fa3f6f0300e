"""Dynamic micro-batching: concurrent requests' texts share encoder calls made by one dedicated thread.

The encoder's cost per query falls about 4x from batch 1 to batch 32 on 2 cores, so while one batch is being
encoded the next requests queue up and go together. With `max_wait_s = 0` nothing waits on purpose: a lone
request is encoded at once, and batches grow only when the encoder is busy (i.e. exactly under load). One
thread owns every encoder call, which also keeps the (not thread-safe) Hugging Face tokenizers on one thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from engine.errors import DeadlineExceeded, NotServing, Overloaded

log = logging.getLogger(__name__)


class QueryEncoder(Protocol):
    """The part of `encoders.OmniSearchSage` the engine uses."""

    checkpoint_id: str

    @property
    def spaces(self) -> dict[str, int]:
        """Space name -> dimension: "model" and "legacy-<name>"."""

    def embed_queries(
        self, texts: list[str], space: str = "model", batch_size: int = 64
    ) -> NDArray[np.float32]: ...


@dataclass(frozen=True)
class BatcherStats:
    batches: int
    items: int
    max_batch_size_seen: int
    queue_depth: int
    rejected: int
    expired: int
    max_batch: int
    max_wait_ms: float

    @property
    def mean_batch_size(self) -> float:
        return self.items / self.batches if self.batches else 0.0


class _Item:
    __slots__ = ("model", "space", "text", "deadline", "future")

    def __init__(self, model: QueryEncoder, space: str, text: str, deadline: float | None) -> None:
        self.model = model
        self.space = space
        self.text = text
        self.deadline = deadline  # time.monotonic() value, or None for no deadline
        self.future: Future[tuple[NDArray[np.float32], int]] = Future()


class MicroBatcher:
    """Queue of texts to embed, drained by one thread in batches of at most `max_batch`.

    Args:
        max_batch: most texts per encoder call.
        max_wait_s: once a text is queued, how long to wait for more before encoding a partial batch.
        max_queue: texts allowed to wait; more are refused with `Overloaded` (load shedding).
        on_batch: called with each batch size (metrics).
    """

    def __init__(
        self,
        max_batch: int = 32,
        max_wait_s: float = 0.0,
        max_queue: int = 1024,
        on_batch: Callable[[int], None] | None = None,
    ) -> None:
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.max_queue = max_queue
        self._on_batch = on_batch
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._batches = 0
        self._items = 0
        self._max_seen = 0
        self._rejected = 0
        self._expired = 0

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> MicroBatcher:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="encoder-batcher", daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """Encode what is queued, then end the thread; later submissions raise NotServing."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)

    # ------------------------------------------------------------------ callers
    def submit(
        self, model: QueryEncoder, space: str, texts: Sequence[str], deadline: float | None = None
    ) -> list[Future[tuple[NDArray[np.float32], int]]]:
        """Queue texts; each future resolves to (vector (dim,), size of the batch it was encoded in)."""
        items = [_Item(model, space, t, deadline) for t in texts]
        with self._cond:
            if self._stopping:
                raise NotServing("the encoder is shutting down")
            if len(self._queue) + len(items) > self.max_queue:
                self._rejected += len(items)
                raise Overloaded(
                    f"encoder queue full ({len(self._queue)} waiting, limit {self.max_queue}); retry later"
                )
            self._queue.extend(items)
            self._cond.notify()
        return [it.future for it in items]

    def embed(
        self, model: QueryEncoder, space: str, texts: Sequence[str], deadline: float | None = None
    ) -> tuple[NDArray[np.float32], int]:
        """Embed texts through the batch queue; returns (vectors (n, dim), largest batch they rode in).

        Raises:
            Overloaded: the queue is full.
            DeadlineExceeded: `deadline` (a time.monotonic() value) passed first.
        """
        futures = self.submit(model, space, texts, deadline)
        rows: list[NDArray[np.float32]] = []
        batch = 0
        try:
            for fut in futures:
                timeout = None if deadline is None else max(0.0, deadline - time.monotonic())
                vec, size = fut.result(timeout)
                rows.append(vec)
                batch = max(batch, size)
        except FutureTimeout as err:
            for fut in futures:
                fut.cancel()  # not yet picked up: the batcher skips it
            raise DeadlineExceeded("deadline passed while waiting for the encoder") from err
        return np.stack(rows), batch

    def stats(self) -> BatcherStats:
        with self._cond:
            return BatcherStats(
                self._batches,
                self._items,
                self._max_seen,
                len(self._queue),
                self._rejected,
                self._expired,
                self.max_batch,
                self.max_wait_s * 1000.0,
            )

    # ------------------------------------------------------------------ the encoder thread
    def _take(self) -> list[_Item] | None:
        with self._cond:
            while not self._queue and not self._stopping:
                self._cond.wait()
            if not self._queue:
                return None
            if self.max_wait_s > 0:
                until = time.monotonic() + self.max_wait_s
                while len(self._queue) < self.max_batch and not self._stopping:
                    left = until - time.monotonic()
                    if left <= 0:
                        break
                    self._cond.wait(left)
            n = min(self.max_batch, len(self._queue))
            return [self._queue.popleft() for _ in range(n)]

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._encode(batch)
            except Exception:  # never let the encoder thread die; callers get the error via futures
                log.exception("encoder batch failed")

    def _encode(self, batch: list[_Item]) -> None:
        now = time.monotonic()
        live: list[_Item] = []
        for it in batch:
            if not it.future.set_running_or_notify_cancel():
                continue  # the caller gave up (deadline) before we got to it
            if it.deadline is not None and it.deadline <= now:
                self._expired += 1
                it.future.set_exception(DeadlineExceeded("deadline passed while queued for the encoder"))
                continue
            live.append(it)
        # Requests of one batch may target different spaces (or, around a swap, different models).
        groups: dict[tuple[int, str], list[_Item]] = {}
        for it in live:
            groups.setdefault((id(it.model), it.space), []).append(it)
        for (_, space), items in groups.items():
            uniq = list(dict.fromkeys(it.text for it in items))  # identical concurrent misses encode once
            try:
                vecs = items[0].model.embed_queries(uniq, space=space, batch_size=len(uniq))  # (u, dim)
            except Exception as err:
                for it in items:
                    it.future.set_exception(err)
                continue
            row = {t: vecs[i] for i, t in enumerate(uniq)}
            size = len(uniq)
            with self._cond:
                self._batches += 1
                self._items += size
                self._max_seen = max(self._max_seen, size)
            if self._on_batch is not None:
                self._on_batch(size)
            for it in items:
                it.future.set_result((row[it.text], size))
