"""EngineConfig: every knob of the server in one frozen dataclass, from flags or a TOML file."""

from __future__ import annotations

import dataclasses
import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from catalog import Home
from engine.errors import EngineError

TOKEN_ENV = "OMNISEARCH_ADMIN_TOKEN"
TOKEN_FILE = "admin-token"  # inside the home folder, mode 0600, written when no token is configured


@dataclass(frozen=True)
class EngineConfig:
    """Server configuration. Paths come from `home`; everything else has a default sized for 2 cores."""

    home: Home  # deployment folder: manifest.db, generations/, catalog.db
    host: str = "127.0.0.1"  # listen address; 0.0.0.0 accepts remote clients
    port: int = 50051  # gRPC port; 0 picks a free one (create_server returns it)
    metrics_port: int | None = None  # Prometheus /metrics HTTP port; None or 0 turns it off, -1 picks a free one
    metrics_host: str = "127.0.0.1"  # address of the metrics HTTP server
    workers: int = 48  # gRPC handler threads; must exceed the concurrency that should share encoder batches
    max_concurrent_rpcs: int | None = 512  # more RPCs in flight than this are refused with RESOURCE_EXHAUSTED
    request_cpus: int = 1  # CPUs the gRPC threads (handlers and the poller) run on, the last ones the process
    # may use; 0 lets them run anywhere. They take turns on the GIL, and handing it between cores costs more
    # than the overlap buys (BENCHMARKS.md, Server); the encoder thread keeps every CPU
    torch_threads: int = 1  # intra-op threads of the encoder; 1 leaves a core to gRPC (BENCHMARKS.md, Server)
    faiss_threads: int = 1  # OpenMP threads of faiss; single-query searches lose time to thread wake-ups
    shard_threads: int = 0  # pool that searches an index's shards in parallel; 0 searches them in the request
    # thread (on 2 cores the gRPC workers already keep both busy, and a hand-off per shard costs more than it saves)
    encoder_bf16: bool | None = None  # bf16 autocast of the query backbone (cosine 0.99995 to fp32, ~2x batch
    # throughput here); None = on when the CPU computes bf16 natively (AVX-512 BF16 or AMX), else off
    max_k: int = 1000  # largest k a Search may ask for
    max_text_chars: int = 1000  # longer query texts are refused (the encoder reads 64 tokens anyway)
    max_embed_texts: int = 256  # texts per Embed call
    cache_size: int = 100_000  # query embeddings kept (about 1 KB each at 256 dims)
    cache_ttl_s: float = 600.0  # seconds a cached embedding stays valid
    batch_max: int = 32  # most queries per encoder call (batch 32 is ~4x the single-query rate on 2 cores)
    batch_max_wait_ms: float = 0.0  # extra wait for more queries once one arrives; 0 = take what is queued
    queue_max: int = 1024  # queued texts beyond this are shed with RESOURCE_EXHAUSTED
    overfetch: int = 4  # with filters, fetch k * overfetch hits, filter, then keep k
    poll_interval_s: float = 2.0  # manifest poll period; 0 turns polling off (Admin.Reload only)
    retry_failed_s: float = 60.0  # the poller retries a generation that failed to load after this long
    memory_headroom: float = 1.5  # a generation loads only if available memory >= its size * this
    memory_reserve_mb: int = 256  # ... plus this much left for everything else
    warmup_queries: int = 4  # searches (and embeddings) run on a new generation before it takes traffic
    verify_checksums: bool = True  # check shard sha256 against the manifest on load
    hydrate: bool = True  # open the catalog (read-only) for display fields and filters
    admin_token: str | None = None  # bearer token of Admin calls; else $OMNISEARCH_ADMIN_TOKEN, else a file
    tls_cert: Path | None = None  # PEM certificate chain; with tls_key turns on TLS
    tls_key: Path | None = None  # PEM private key
    grace_s: float = 5.0  # seconds in-flight calls get to finish on shutdown

    def __post_init__(self) -> None:
        if self.workers < 1 or self.batch_max < 1 or self.queue_max < 1 or self.max_k < 1:
            raise EngineError("workers, batch_max, queue_max and max_k must be >= 1")
        if self.cache_ttl_s < 0 or self.batch_max_wait_ms < 0 or self.poll_interval_s < 0:
            raise EngineError("cache_ttl_s, batch_max_wait_ms and poll_interval_s must be >= 0")
        if (self.tls_cert is None) != (self.tls_key is None):
            raise EngineError("TLS needs both tls_cert and tls_key")
        if self.shard_threads < 0 or self.request_cpus < 0:
            raise EngineError("shard_threads and request_cpus must be >= 0")
        if self.overfetch < 1:
            raise EngineError("overfetch must be >= 1")

    @classmethod
    def from_toml(cls, path: str | os.PathLike[str], home: Home, **overrides: Any) -> EngineConfig:
        """Read `[engine]` (or top-level) keys from a TOML file; `overrides` (not None) win."""
        data = tomllib.loads(Path(path).read_text())
        data = data.get("engine", data)
        known = {f.name for f in dataclasses.fields(cls)} - {"home"}
        unknown = set(data) - known
        if unknown:
            raise EngineError(f"unknown engine config keys in {path}: {sorted(unknown)}")
        for key in ("tls_cert", "tls_key"):
            if data.get(key):
                data[key] = Path(data[key])
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(home=home, **data)

    def token_path(self) -> Path:
        return self.home.root / TOKEN_FILE

    def resolve_admin_token(self, create: bool = True) -> str:
        """The admin token: config, else $OMNISEARCH_ADMIN_TOKEN, else the home's token file.

        When none exists and `create` is set, a random token is written to the home (mode 0600) so a local
        operator (and `engine status --home ...`) can use Admin without configuring anything.
        """
        if self.admin_token:
            return self.admin_token
        env = os.environ.get(TOKEN_ENV)
        if env:
            return env
        path = self.token_path()
        if path.exists():
            return path.read_text().strip()
        if not create:
            raise EngineError(f"no admin token: set {TOKEN_ENV} or start the server once with this home")
        token = secrets.token_urlsafe(24)
        self.home.ensure()
        tmp = path.with_name(path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(token + "\n")
        os.replace(tmp, path)
        return token
