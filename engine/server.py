"""The gRPC server: `create_server(config) -> (server, port)` for tests and embedding, `serve()` for the CLI.

The server is the synchronous gRPC server over a thread pool. Measured on the 2-core target (BENCHMARKS.md,
"Server"), it answers more calls per second than `grpc.aio` at the same concurrency, and the query path is
thread-based anyway: the encoder runs in its own thread, the ANN libraries release the GIL, and SQLite
lookups block, so an asyncio server would hand every call to an executor and pay for both models. Its gRPC
threads run on one CPU by default (`request_cpus`, engine/affinity.py explains why).
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Sequence
from concurrent import futures
from types import FrameType
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from engine.affinity import pin_thread, request_cpu_set
from engine.config import EngineConfig
from engine.core import Engine
from engine.servicer import ADMIN_SERVICE, SEARCH_SERVICE, AdminAuth, AdminServicer, SearchServicer
from engine.serving import Serving
from protos.omnisearch.v1 import omnisearch_pb2 as pb
from protos.omnisearch.v1 import omnisearch_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
# Large enough for Embed replies of max_embed_texts x 512-dim vectors.
MESSAGE_LIMIT = 16 * 1024 * 1024


class EngineServer(grpc.Server):
    """A grpc.Server that also starts and stops the engine behind it (encoder thread, manifest poller, metrics).

    `engine`, `health`, `port` and `metrics_port` are exposed for tests and operators.
    """

    def __init__(
        self,
        inner: grpc.Server,
        engine: Engine,
        health_servicer: health.HealthServicer,
        port: int,
        request_cpus: frozenset[int] | None = None,
        pool: futures.ThreadPoolExecutor | None = None,
    ) -> None:
        self._inner = inner
        self._pool = pool  # the handler threads, ended once the server has stopped
        self.engine = engine
        self.health = health_servicer
        self.port = port
        self.request_cpus = request_cpus  # CPUs of the gRPC threads (None: not pinned)
        self.metrics_port: int | None = None
        self._stopped = threading.Event()
        self._stopping = False

    # Delegation of the grpc.Server interface.
    def add_generic_rpc_handlers(self, generic_rpc_handlers: Sequence[grpc.GenericRpcHandler]) -> None:
        self._inner.add_generic_rpc_handlers(generic_rpc_handlers)

    def add_registered_method_handlers(self, service_name: str, method_handlers: Any) -> None:
        self._inner.add_registered_method_handlers(service_name, method_handlers)

    def add_insecure_port(self, address: str) -> int:
        return self._inner.add_insecure_port(address)

    def add_secure_port(self, address: str, server_credentials: grpc.ServerCredentials) -> int:
        return self._inner.add_secure_port(address, server_credentials)

    def start(self) -> None:
        cfg = self.engine.config
        if cfg.metrics_port:
            self.metrics_port = self.engine.metrics.serve_http(max(cfg.metrics_port, 0), cfg.metrics_host)
        before = {t.ident for t in threading.enumerate()}
        self._inner.start()
        # grpc starts its poller thread here (the handler threads pin themselves as the pool creates them).
        for t in threading.enumerate():
            if t.ident not in before and t.native_id is not None:
                pin_thread(self.request_cpus, t.native_id)
        self.engine.start()
        log.info("engine listening on %s:%d", cfg.host, self.port)

    def set_serving(self, serving: bool) -> None:
        status = SERVING if serving else NOT_SERVING
        self.health.set("", status)
        self.health.set(SEARCH_SERVICE, status)

    def stop(self, grace: float | None) -> threading.Event:
        """NOT_SERVING first (load balancers drain), then stop taking calls, let in-flight ones finish, free."""
        if self._stopping:
            return self._stopped
        self._stopping = True
        self.set_serving(False)
        done = self._inner.stop(grace)

        def finish() -> None:
            done.wait()
            if self._pool is not None:
                self._pool.shutdown(wait=False)
            self.engine.stop()
            self.engine.metrics.close()
            self._stopped.set()

        threading.Thread(target=finish, name="engine-stop", daemon=True).start()
        return self._stopped

    def wait_for_termination(self, timeout: float | None = None) -> bool:
        return self._inner.wait_for_termination(timeout)


def _credentials(config: EngineConfig) -> grpc.ServerCredentials | None:
    if config.tls_cert is None or config.tls_key is None:
        return None
    return grpc.ssl_server_credentials([(config.tls_key.read_bytes(), config.tls_cert.read_bytes())])


def create_server(config: EngineConfig) -> tuple[EngineServer, int]:
    """Build the server (not started) and bind its port.

    Returns:
        (server, port): `server.start()` starts serving and loading the manifest's active generation;
        `port` is the bound port (useful with `config.port = 0`).
    """
    engine = Engine(config)
    token = config.resolve_admin_token(create=True)
    cpus = request_cpu_set(config.request_cpus)
    pool = futures.ThreadPoolExecutor(
        max_workers=config.workers, thread_name_prefix="grpc-worker", initializer=pin_thread, initargs=(cpus,)
    )
    inner = grpc.server(
        pool,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
        options=[
            ("grpc.max_receive_message_length", MESSAGE_LIMIT),
            ("grpc.max_send_message_length", MESSAGE_LIMIT),
            ("grpc.so_reuseport", 0),  # a second server on a taken port must fail, not share it
        ],
    )
    health_servicer = health.HealthServicer(
        experimental_non_blocking=True,
        experimental_thread_pool=futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="health"),
    )
    pb_grpc.add_SearchServiceServicer_to_server(SearchServicer(engine), inner)
    pb_grpc.add_AdminServiceServicer_to_server(AdminServicer(engine, AdminAuth(token)), inner)
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, inner)
    names = (
        pb.DESCRIPTOR.services_by_name["SearchService"].full_name,
        pb.DESCRIPTOR.services_by_name["AdminService"].full_name,
        health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
        reflection.SERVICE_NAME,
    )
    reflection.enable_server_reflection(names, inner)

    address = f"{config.host}:{config.port}"
    reason = "bind failed"
    creds = _credentials(config)
    try:
        port = inner.add_secure_port(address, creds) if creds else inner.add_insecure_port(address)
    except RuntimeError as err:  # grpc raises RuntimeError("Failed to bind ...")
        port = 0
        reason = str(err)
    if port == 0:
        engine.batcher.stop()
        raise OSError(f"cannot listen on {address} (in use, or not an address of this machine): {reason}")
    server = EngineServer(inner, engine, health_servicer, port, cpus, pool)
    server.set_serving(False)
    health_servicer.set(ADMIN_SERVICE, SERVING)  # Admin answers (e.g. Status) before anything is loaded

    def on_change(serving: Serving | None) -> None:
        server.set_serving(serving is not None)

    engine.generations.set_listener(on_change)
    return server, port


def serve(config: EngineConfig, ready: threading.Event | None = None) -> None:
    """Run the server until SIGTERM/SIGINT; then NOT_SERVING, `stop(grace_s)`, free everything."""
    server, port = create_server(config)
    server.start()
    stop_requested = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        log.info("signal %d: draining for up to %.1f s", signum, config.grace_s)
        stop_requested.set()

    previous = {s: signal.signal(s, on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        if ready is not None:
            ready.set()
        while not stop_requested.wait(0.5):
            pass
    finally:
        server.stop(config.grace_s).wait(config.grace_s + 10)
        for s, handler in previous.items():
            signal.signal(s, handler)
    log.info("engine on port %d stopped", port)
