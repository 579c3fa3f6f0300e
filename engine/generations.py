"""Hot swap: follow the manifest, load the next generation beside the served one, swap, drain, free."""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from engine.affinity import pin_thread
from engine.batcher import MicroBatcher
from engine.config import EngineConfig
from engine.errors import DeadlineExceeded, GenerationLoadFailed, ManifestUnavailable, NotServing, Overloaded
from engine.metrics import EngineMetrics
from engine.serving import Serving, load_serving, warm_vectors

if TYPE_CHECKING:
    from indexer.manifest import GenerationRecord, Manifest

log = logging.getLogger(__name__)

WARM_TEXTS = ("warm up", "red shoes", "how does it work", "chaise longue")


@dataclass(frozen=True)
class ReloadOutcome:
    changed: bool
    generation: int  # the generation served after the call (0 = none)
    message: str


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class GenerationManager:
    """Owns the reference to the served generation and every change to it.

    Reads are `with manager.acquire() as serving:` (or `hold` and `release`); the reference and its refcount
    change under one short lock, so a generation is closed only after the last request that picked it up has
    finished.
    """

    def __init__(
        self,
        config: EngineConfig,
        batcher: MicroBatcher,
        metrics: EngineMetrics,
        on_change: Callable[[Serving | None], None] | None = None,
    ) -> None:
        self.config = config
        self.batcher = batcher
        self.metrics = metrics
        self._on_change = on_change
        self._current: Serving | None = None
        self._lock = threading.Lock()  # guards _current, refcounts, _draining
        self._load_lock = threading.Lock()  # one load at a time (poller, Reload, Rollback)
        self._draining: list[Serving] = []
        # generation -> time.monotonic() of its failure; the poller retries it only after retry_failed_s
        self._failed: dict[int, float] = {}
        self.last_error = ""
        self.last_error_at = ""
        self.last_failed_generation = 0
        self.manifest_generation = 0
        self.swaps = 0
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        # Shard searches run outside the GIL: their pool keeps every CPU this process may use, even though the
        # gRPC threads that start its threads are pinned (engine.affinity).
        every_cpu = frozenset(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
        self._shard_pool = (
            ThreadPoolExecutor(config.shard_threads, thread_name_prefix="shard-search", initializer=pin_thread,
                               initargs=(every_cpu,))
            if config.shard_threads > 0 else None
        )

    # ------------------------------------------------------------------ request side
    def hold(self) -> Serving:
        """The served generation with one more reference; give it back with `release` (try/finally).

        Raises:
            NotServing: nothing is loaded yet.
        """
        with self._lock:
            serving = self._current
            if serving is None:
                raise NotServing("no index generation is loaded yet; publish one with `indexer rebuild`")
            serving.refs += 1
        return serving

    def release(self, serving: Serving) -> None:
        """Drop a reference taken by `hold`; the last one out closes a retired generation."""
        with self._lock:
            serving.refs -= 1
            done = serving.retired and serving.refs == 0
            if done:
                self._draining.remove(serving)
        if done:
            serving.close()

    @contextlib.contextmanager
    def acquire(self) -> Iterator[Serving]:
        """The served generation, held for the duration of the block (`hold` and `release` around it).

        Raises:
            NotServing: nothing is loaded yet.
        """
        serving = self.hold()
        try:
            yield serving
        finally:
            self.release(serving)

    def set_listener(self, on_change: Callable[[Serving | None], None] | None) -> None:
        """Called after every swap with the new generation (the server flips its health status)."""
        self._on_change = on_change

    @property
    def current(self) -> Serving | None:
        return self._current

    def in_flight(self) -> int:
        with self._lock:
            return sum(s.refs for s in ([self._current] if self._current else []) + self._draining)

    def draining(self) -> int:
        with self._lock:
            return len(self._draining)

    # ------------------------------------------------------------------ manifest side
    def _open_manifest(self, read_only: bool = True) -> Manifest:
        path = self.config.home.manifest_db
        if not path.exists():
            raise ManifestUnavailable(f"no manifest at {path}; build and publish a generation first")
        from indexer.manifest import Manifest

        try:
            return Manifest(path, read_only=read_only)
        except Exception as err:
            raise ManifestUnavailable(f"cannot open manifest {path}: {err}") from err

    def _active_record(self) -> GenerationRecord | None:
        manifest = self._open_manifest()
        try:
            record = manifest.active_generation()
        finally:
            _close(manifest)
        self.manifest_generation = int(record.id) if record is not None else 0
        return record

    def list_generations(self) -> list[GenerationRecord]:
        manifest = self._open_manifest()
        try:
            return list(manifest.list_generations())
        finally:
            _close(manifest)

    def check(self, force: bool = False, retry_failed: bool = True) -> ReloadOutcome:
        """Serve the manifest's active generation if it is not the one being served.

        Args:
            force: reload even when the active generation is already served.
            retry_failed: also retry a generation that failed less than `retry_failed_s` ago (the poller
                passes False; Admin.Reload retries at once).

        Raises:
            GenerationLoadFailed: the new generation could not be loaded; the old one keeps serving.
            ManifestUnavailable: the manifest cannot be read.
        """
        with self._load_lock:
            record = self._active_record()
            served = self._current
            served_id = served.generation if served is not None else 0
            if record is None:
                return ReloadOutcome(False, served_id, "the manifest has no active generation")
            gen = int(record.id)
            if gen == served_id and not force:
                return ReloadOutcome(False, served_id, f"generation {gen} is already served")
            failed_at = self._failed.get(gen)
            recent = failed_at is not None and time.monotonic() - failed_at < self.config.retry_failed_s
            if recent and not retry_failed:
                return ReloadOutcome(False, served_id, f"generation {gen} failed before: {self.last_error}")
            try:
                self._load_and_swap(record)
            except GenerationLoadFailed as err:
                self._failed[gen] = time.monotonic()
                self.last_error = str(err)
                self.last_error_at = _now()
                self.last_failed_generation = gen
                self.metrics.load_failures.inc()
                log.error("generation %d not loaded, still serving %s: %s", gen, served_id or "nothing", err)
                raise
            self._failed.pop(gen, None)
            self.last_error = ""  # the failure being reported is over: a newer generation serves
            return ReloadOutcome(True, gen, f"now serving generation {gen} (was {served_id or 'none'})")

    def rollback(self) -> ReloadOutcome:
        """Make the previous ready generation active in the manifest, then serve it."""
        manifest = self._open_manifest(read_only=False)
        try:
            record = manifest.rollback()
        except Exception as err:
            raise GenerationLoadFailed(f"rollback refused: {err}") from err
        finally:
            _close(manifest)
        log.info("manifest rolled back to generation %s", record.id)
        return self.check(force=False)

    def _load_and_swap(self, record: GenerationRecord) -> None:
        served = self._current
        log.info("loading generation %s", record.id)
        new = load_serving(record, self.config, served.model if served else None, self._shard_pool)
        try:
            self._warm(new)
        except Exception as err:
            new.close()
            raise GenerationLoadFailed(f"generation {record.id} failed its warm-up: {err}") from err
        with self._lock:
            old, self._current = self._current, new  # the swap: one reference assignment
            if old is not None:
                old.retired = True
                self._draining.append(old)
                close_now = old.refs == 0
                if close_now:
                    self._draining.remove(old)
            else:
                close_now = False
        self.swaps += 1
        self.metrics.swaps.inc()
        self.metrics.active_generation.set(new.generation)
        log.info("serving generation %s (checkpoint %s)", new.generation, new.checkpoint_id or "none")
        if self._on_change is not None:
            self._on_change(new)
        if old is not None and close_now:
            old.close()

    def _warm(self, serving: Serving) -> None:
        n = self.config.warmup_queries
        warm_vectors(serving, n)
        if serving.model is None or n <= 0:
            return
        spaces = {ix.space for ix in serving.record.indices.values() if ix.space in serving.model.spaces}
        for space in sorted(spaces | ({"model"} & set(serving.model.spaces))):
            # Through the batcher: the encoder thread is the only one that touches the model.
            try:
                self.batcher.embed(serving.model, space, list(WARM_TEXTS[: max(1, n)]), time.monotonic() + 60)
            except (Overloaded, DeadlineExceeded):
                # A busy encoder proves nothing against the new model; do not hold the swap back for it.
                log.warning("encoder busy: skipped the warm-up embeddings of space %s", space)

    # ------------------------------------------------------------------ polling
    def poll_once(self) -> None:
        """One poll: load a newly published generation; errors are recorded, never raised."""
        try:
            self.check(force=False, retry_failed=False)
        except GenerationLoadFailed:
            pass  # recorded in last_error; the served generation stays
        except ManifestUnavailable as err:
            if str(err) != self.last_error:
                log.warning("%s", err)
            self.last_error = str(err)
            self.last_error_at = _now()
        except Exception as err:  # the poller must survive anything (e.g. a manifest mid-migration)
            log.exception("manifest poll failed")
            self.last_error = f"poll failed: {type(err).__name__}: {err}"
            self.last_error_at = _now()

    def start(self) -> None:
        """Load the active generation in the background, then poll every `poll_interval_s` (if > 0)."""
        if self._poller is not None:
            return
        self._poller = threading.Thread(target=self._poll_loop, name="manifest-poller", daemon=True)
        self._poller.start()

    def _poll_loop(self) -> None:
        self.poll_once()
        interval = self.config.poll_interval_s
        while interval > 0 and not self._stop.wait(interval):
            self.poll_once()
        # Without polling, keep trying until a first generation is loaded (the manifest may appear later).
        while interval <= 0 and self._current is None and not self._stop.wait(1.0):
            self.poll_once()

    def stop(self) -> None:
        """Stop polling and free every generation (call after the server stopped taking requests)."""
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=10)
        with self._lock:
            current, self._current = self._current, None
            draining, self._draining = self._draining, []
        for s in ([current] if current else []) + draining:
            s.close()
        if self._shard_pool is not None:
            self._shard_pool.shutdown(wait=False)


def _close(obj: Any) -> None:
    close = getattr(obj, "close", None)
    if callable(close):
        close()
