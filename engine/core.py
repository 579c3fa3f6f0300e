"""The query path, independent of gRPC: normalise -> cache -> micro-batched encoder -> shards -> filter -> hydrate.

Filters (entity kind, language) are applied after the ANN search: the indices hold no attributes, so the
engine over-fetches `k * overfetch` hits, drops those that do not match (or are not in the catalog), and keeps
the best k. A very selective filter can therefore return fewer than k hits.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import repeat
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np
import psutil
from numpy.typing import NDArray

from catalog.errors import DimensionMismatch, InvalidVector
from engine.batcher import BatcherStats, MicroBatcher
from engine.cache import CacheStats, EmbeddingCache
from engine.config import EngineConfig
from engine.errors import DeadlineExceeded, InvalidRequest, TextQueriesUnsupported
from engine.generations import GenerationManager, ReloadOutcome
from engine.metrics import EngineMetrics
from engine.serving import Serving
from engine.validate import check_filters, check_k, normalise_text, query_matrix

log = logging.getLogger(__name__)


NO_FIELDS: Mapping[str, str] = MappingProxyType({})  # shared by every hit without display fields
NO_FILTER: frozenset[str] = frozenset()


class Hit(NamedTuple):
    """One search result (a named tuple: the cheapest record to build ten of per call)."""

    id: str
    score: float  # as the index reports it: inner product (higher is better) or squared L2 (lower is better)
    kind: str = ""
    fields: Mapping[str, str] = NO_FIELDS  # display fields; read-only and shared unless hydrated


@dataclass
class Timings:
    embed_ms: float = 0.0
    search_ms: float = 0.0
    hydrate_ms: float = 0.0
    total_ms: float = 0.0
    cache_hit: bool = False
    batch_size: int = 0


@dataclass(frozen=True)
class SearchResult:
    hits: list[Hit]
    generation: int
    checkpoint_id: str
    index: str
    timings: Timings


@dataclass(frozen=True)
class EmbedResult:
    vectors: NDArray[np.float32]  # (n, dim)
    generation: int
    checkpoint_id: str
    timings: Timings


@dataclass(frozen=True)
class EngineStatus:
    serving: bool
    generation: int
    checkpoint_id: str
    checkpoint: str
    indices: list[dict[str, Any]]
    loaded_at: str
    manifest_generation: int
    last_error: str
    last_failed_generation: int
    last_error_at: str
    in_flight: int
    draining: int
    swaps: int
    cache: CacheStats
    batcher: BatcherStats
    uptime_s: float
    rss_bytes: int


def apply_thread_settings(config: EngineConfig) -> None:
    """Pin the thread pools of torch and faiss so the encoder, the ANN search and gRPC share 2 cores sanely."""
    try:
        import faiss

        faiss.omp_set_num_threads(config.faiss_threads)
    except ImportError:  # faiss is only needed by faiss-backed indices
        pass
    try:
        import torch

        torch.set_num_threads(config.torch_threads)
        try:
            torch.set_num_interop_threads(1)  # one encoder call at a time; inter-op parallelism only adds threads
        except RuntimeError:  # already set, or torch already ran parallel work in this process
            pass
    except ImportError:
        pass


def _remaining(deadline: float | None, step: str) -> None:
    if deadline is not None and time.monotonic() >= deadline:
        raise DeadlineExceeded(f"deadline passed before {step}")


def _ms(seconds: float) -> float:
    return seconds * 1000.0


class Engine:
    """Everything a Search/Embed/Admin call needs; the gRPC servicers are thin adapters over it."""

    def __init__(self, config: EngineConfig, metrics: EngineMetrics | None = None) -> None:
        self.config = config
        self.metrics = metrics or EngineMetrics()
        apply_thread_settings(config)
        self.cache = EmbeddingCache(config.cache_size, config.cache_ttl_s)
        self.batcher = MicroBatcher(
            max_batch=config.batch_max,
            max_wait_s=config.batch_max_wait_ms / 1000.0,
            max_queue=config.queue_max,
            on_batch=self.metrics.batch_size.observe,
        )
        self.generations = GenerationManager(config, self.batcher, self.metrics)
        self.metrics.bind(
            cache_hit_rate=lambda: self.cache.stats().hit_rate,
            queue_depth=lambda: float(self.batcher.stats().queue_depth),
        )
        self.started = time.monotonic()

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> Engine:
        """Start the encoder thread and the manifest follower (which loads the active generation)."""
        self.batcher.start()
        self.generations.start()
        return self

    def stop(self) -> None:
        self.generations.stop()
        self.batcher.stop()

    # ------------------------------------------------------------------ embedding
    def _embed(
        self, serving: Serving, space: str, texts: Sequence[str], deadline: float | None, t: Timings
    ) -> NDArray[np.float32]:
        """Normalised texts -> vectors (n, dim), cache first, misses through the batcher."""
        model = serving.model
        if model is None:
            raise TextQueriesUnsupported(
                f"generation {serving.generation} was built from user vectors without an encoder checkpoint; "
                "send a vector query instead of text"
            )
        if space not in serving.spaces:
            raise TextQueriesUnsupported(
                f"the encoder {model.checkpoint_id} has no query head for space {space!r}; "
                f"it has {sorted(serving.spaces)}"
            )
        t0 = time.perf_counter()
        keys = [(model.checkpoint_id, space, text) for text in texts]
        found = [self.cache.get(key) for key in keys]
        missing = [i for i, vec in enumerate(found) if vec is None]
        if len(missing) < len(texts):
            self.metrics.cache_hit.inc(len(texts) - len(missing))
        if missing:
            self.metrics.cache_miss.inc(len(missing))
            _remaining(deadline, "encoding")
            vecs, batch = self.batcher.embed(model, space, [texts[i] for i in missing], deadline)
            t.batch_size = batch
            for j, i in enumerate(missing):
                found[i] = vecs[j]
                self.cache.put(keys[i], vecs[j])
        t.cache_hit = not missing
        embed_s = time.perf_counter() - t0
        t.embed_ms = embed_s * 1000.0
        self.metrics.stage_embed.observe(embed_s)
        if len(found) == 1 and found[0] is not None:  # a Search: a (1, dim) view, no stacking
            return found[0].reshape(1, -1).astype(np.float32, copy=False)  # (1, dim)
        return np.stack([v for v in found if v is not None]).astype(np.float32, copy=False)  # (n, dim)

    def embed(self, texts: Sequence[str], space: str = "model", deadline: float | None = None) -> EmbedResult:
        """Query embeddings of `texts` in `space` with the served generation's encoder."""
        t0 = time.perf_counter()
        if not texts:
            raise InvalidRequest("no texts to embed")
        if len(texts) > self.config.max_embed_texts:
            raise InvalidRequest(f"{len(texts)} texts; the limit per call is {self.config.max_embed_texts}")
        norm = [normalise_text(text, self.config.max_text_chars) for text in texts]
        space = space or "model"
        t = Timings()
        with self.generations.acquire() as serving:
            if serving.model is not None and space not in serving.spaces:
                raise InvalidRequest(f"unknown space {space!r}; the encoder has {sorted(serving.spaces)}")
            vecs = self._embed(serving, space, norm, deadline, t)
            t.total_ms = _ms(time.perf_counter() - t0)
            return EmbedResult(vecs, serving.generation, serving.checkpoint_id, t)

    # ------------------------------------------------------------------ search
    def search(
        self,
        index: str,
        k: int,
        text: str | None = None,
        vector: Sequence[float] | NDArray[Any] | None = None,
        kinds: Sequence[str] = (),
        languages: Sequence[str] = (),
        ef: int = 0,
        nprobe: int = 0,
        include_fields: bool = False,
        deadline: float | None = None,
    ) -> SearchResult:
        """Top-k hits of `index` for a text or a vector, from the generation served at the time of the call.

        Raises:
            InvalidRequest, NotServing, TextQueriesUnsupported, Overloaded, DeadlineExceeded.
        """
        t0 = time.perf_counter()
        if (text is None) == (vector is None):
            raise InvalidRequest("give exactly one of text or vector")
        if not 0 < k <= self.config.max_k:
            check_k(k, self.config.max_k)  # raises with the message
        if ef < 0 or nprobe < 0:
            raise InvalidRequest("ef and nprobe must be >= 0 (0 keeps the index default)")
        norm = normalise_text(text, self.config.max_text_chars) if text is not None else None
        t = Timings()
        # hold/release rather than `with acquire()`: this is the hottest path of the server, and a generator
        # context manager costs more than the rest of the bookkeeping of a vector query together.
        serving = self.generations.hold()
        try:
            record = serving.record.indices.get(index)
            if record is None:
                raise InvalidRequest(f"unknown index {index!r}; this generation has {sorted(serving.indices)}")
            idx = serving.indices[index]
            index_kind = record.entity_kind or ("query" if index == "queries" else None)
            ks = ls = NO_FILTER
            if kinds or languages:
                hyd = serving.hydrator
                ks, ls = check_filters(
                    kinds, languages,
                    hyd.kinds if hyd else None, hyd.languages if hyd else None,
                    index_kind, index,
                )
            if norm is not None:
                xq = self._embed(serving, record.space, [norm], deadline, t)  # (1, dim)
            elif vector is not None:
                xq = query_matrix(vector, idx.dim, index)  # (1, dim); NaN/inf are refused by the index search
            else:  # unreachable after the check above; keeps the types narrow
                raise InvalidRequest("give exactly one of text or vector")
            if deadline is not None and time.monotonic() >= deadline:
                raise DeadlineExceeded("deadline passed before the index search")
            filtered = bool(ks or ls)
            fetch = k * self.config.overfetch if filtered else k
            params: dict[str, int] | None = None
            if ef or nprobe:
                params = {name: v for name, v in (("ef", ef), ("nprobe", nprobe)) if v}
            t1 = time.perf_counter()
            try:
                scores_nq, ids_nq = idx.search(xq, fetch, params)  # (1, kk), [kk ids]
            except (DimensionMismatch, InvalidVector) as err:
                raise InvalidRequest(str(err)) from err
            except Exception as err:
                if type(err).__name__ == "InvalidParameter":  # indexer.errors, imported lazily
                    raise InvalidRequest(f"index {index!r}: {err}") from err
                raise
            search_s = time.perf_counter() - t1
            t.search_ms = search_s * 1000.0
            self.metrics.stage_search.observe(search_s)
            ids = ids_nq[0]
            scores = scores_nq[0, : len(ids)].tolist()
            if filtered or (include_fields and serving.hydrator is not None):
                hits = self._finish(ids, scores, k, ks, ls, include_fields, index_kind, serving, deadline, t)
            else:  # the common case: no catalog lookups, hits straight from the index (at most k of them)
                hits = list(map(Hit._make, zip(ids, scores, repeat(index_kind or ""), repeat(NO_FIELDS))))
            t.total_ms = (time.perf_counter() - t0) * 1000.0
            return SearchResult(hits, serving.generation, serving.checkpoint_id if norm else "", index, t)
        finally:
            self.generations.release(serving)

    def _finish(
        self,
        ids: list[str],
        scores: list[float],
        k: int,
        ks: frozenset[str],
        ls: frozenset[str],
        include_fields: bool,
        index_kind: str | None,
        serving: Serving,
        deadline: float | None,
        t: Timings,
    ) -> list[Hit]:
        """Filter, cut to k and hydrate from the catalog (filters or display fields asked for)."""
        hydrator = serving.hydrator
        if hydrator is None:  # no catalog: only unfiltered hits without fields get here
            return [Hit(i, s, index_kind or "") for i, s in zip(ids[:k], scores[:k], strict=True)]
        _remaining(deadline, "the catalog lookup")
        t2 = time.perf_counter()
        rows = hydrator.lookup(list(ids), queries_first=index_kind == "query")
        hits: list[Hit] = []
        for i, s in zip(ids, scores, strict=True):
            row = rows.get(i)
            if ks or ls:
                if row is None:
                    continue  # not in the catalog: its kind and language are unknown
                if ks and row.get("kind") not in ks:
                    continue
                if ls and row.get("lang") not in ls:
                    continue
            kind = index_kind or (str(row.get("kind") or "") if row else "")
            fields = hydrator.display_fields(row) if include_fields and row else NO_FIELDS
            hits.append(Hit(i, s, kind, fields))
            if len(hits) == k:
                break
        t.hydrate_ms = _ms(time.perf_counter() - t2)
        self.metrics.stage_hydrate.observe(t.hydrate_ms / 1000.0)
        return hits

    # ------------------------------------------------------------------ admin
    def reload(self, force: bool = False) -> ReloadOutcome:
        return self.generations.check(force=force)

    def rollback(self) -> ReloadOutcome:
        return self.generations.rollback()

    def status(self) -> EngineStatus:
        g = self.generations
        cur = g.current
        indices: list[dict[str, Any]] = []
        if cur is not None:
            for name, rec in sorted(cur.record.indices.items()):
                idx = cur.indices.get(name)
                indices.append({
                    "name": name,
                    "space": rec.space,
                    "entity_kind": rec.entity_kind or "",
                    "dim": int(rec.dim),
                    "metric": rec.metric,
                    "backend": rec.backend,
                    "count": int(rec.count),
                    "shards": len(rec.shards),
                    "memory_bytes": int(idx.memory_bytes()) if idx is not None else 0,
                })
        return EngineStatus(
            serving=cur is not None,
            generation=cur.generation if cur else 0,
            checkpoint_id=cur.checkpoint_id if cur else "",
            checkpoint=str(cur.record.checkpoint or "") if cur else "",
            indices=indices,
            loaded_at=cur.loaded_at if cur else "",
            manifest_generation=g.manifest_generation,
            last_error=g.last_error,
            last_failed_generation=g.last_failed_generation,
            last_error_at=g.last_error_at,
            in_flight=g.in_flight(),
            draining=g.draining(),
            swaps=g.swaps,
            cache=self.cache.stats(),
            batcher=self.batcher.stats(),
            uptime_s=time.monotonic() - self.started,
            rss_bytes=int(psutil.Process(os.getpid()).memory_info().rss),
        )
