"""Prometheus metrics of one engine, in its own registry (several servers can live in one process)."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

log = logging.getLogger(__name__)

# Latency buckets in seconds: the interesting range is 0.2 ms (cache hit, vector query) to ~100 ms (a busy
# encoder queue).
LATENCY_BUCKETS = (0.0002, 0.0005, 0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1,
                   0.2, 0.5, 1.0, 2.5)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 24, 32, 48, 64, 128)


class EngineMetrics:
    """Requests, latencies per method and index, cache hits, encoder batch sizes, the active generation."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter(
            "omnisearch_requests", "RPCs answered, by method, index and status code",
            ["method", "index", "code"], registry=r,
        )
        self.latency = Histogram(
            "omnisearch_request_latency_seconds", "Server-side RPC latency by method and index",
            ["method", "index"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.stage = Histogram(
            "omnisearch_stage_latency_seconds", "Time per query-path stage (embed, search, hydrate)",
            ["stage"], buckets=LATENCY_BUCKETS, registry=r,
        )
        self.cache = Counter(
            "omnisearch_cache_lookups", "Query-embedding cache lookups by result (hit, miss)",
            ["result"], registry=r,
        )
        self.cache_hit_rate = Gauge(
            "omnisearch_cache_hit_rate", "Cache hits / lookups since start", registry=r,
        )
        self.batch_size = Histogram(
            "omnisearch_encoder_batch_size", "Texts per encoder call", buckets=BATCH_BUCKETS, registry=r,
        )
        self.queue_depth = Gauge("omnisearch_encoder_queue_depth", "Texts waiting for the encoder", registry=r)
        self.in_flight = Gauge("omnisearch_in_flight_requests", "Search/Embed calls being served", registry=r)
        self.active_generation = Gauge(
            "omnisearch_active_generation", "Generation being served (0 = none)", registry=r,
        )
        self.swaps = Counter("omnisearch_generation_swaps", "Generations swapped in", registry=r)
        self.load_failures = Counter(
            "omnisearch_generation_load_failures", "Generations that failed to load", registry=r,
        )
        # Child lookups (`labels(...)`) cost about 1 us each; the query path reuses these.
        self.cache_hit = self.cache.labels("hit")
        self.cache_miss = self.cache.labels("miss")
        self.stage_embed = self.stage.labels("embed")
        self.stage_search = self.stage.labels("search")
        self.stage_hydrate = self.stage.labels("hydrate")
        self._call_children: dict[tuple[str, str, str], tuple[Any, Any]] = {}
        self._http: Any = None
        self._http_thread: threading.Thread | None = None

    def observe_call(self, method: str, index: str, code: str, seconds: float) -> None:
        """Count one RPC and record its latency (children cached per label set)."""
        key = (method, index, code)
        children = self._call_children.get(key)
        if children is None:
            children = (self.requests.labels(method, index, code), self.latency.labels(method, index))
            self._call_children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def bind(self, cache_hit_rate: Callable[[], float], queue_depth: Callable[[], float]) -> None:
        """Compute the gauges that mirror engine state at scrape time."""
        self.cache_hit_rate.set_function(cache_hit_rate)
        self.queue_depth.set_function(queue_depth)

    def serve_http(self, port: int, host: str = "127.0.0.1") -> int:
        """Expose /metrics on `host:port` (0 picks a free port); returns the bound port."""
        server, thread = start_http_server(port, addr=host, registry=self.registry)
        self._http, self._http_thread = server, thread
        bound = int(server.server_address[1])
        log.info("metrics on http://%s:%d/metrics", host, bound)
        return bound

    def close(self) -> None:
        if self._http is not None:
            self._http.shutdown()
            self._http.server_close()
            self._http = None
