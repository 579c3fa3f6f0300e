"""The gRPC floor: a bare server answering SearchService/Search with fixed bytes, in its own process.

It is the same kind of server as the engine (synchronous gRPC over a thread pool, same message limits), with a
generic handler that parses the request and answers with stored bytes: a pre-serialized SearchResponse of the
size a real Search call returns (the engine's own reply when `benchmarks serve` captured one). Loading it with
the same generator as the engine gives the part of the engine's latency that is gRPC and Python alone.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent import futures
from typing import Any

from protos.omnisearch.v1 import omnisearch_pb2 as pb

SERVICE = "omnisearch.v1.SearchService"
WORKERS = 48  # as the engine's default handler pool (engine.config.EngineConfig.workers)
MESSAGE_LIMIT = 16 * 1024 * 1024


def sample_response(k: int = 10, kind: str = "product", id_len: int = 14) -> bytes:
    """A serialized SearchResponse shaped like the engine's: k hits with ids, scores, kind, and timings."""
    hits = [pb.Hit(id=f"{kind}-{i:0{max(1, id_len - len(kind) - 1)}d}", score=0.9 - 0.01 * i, kind=kind)
            for i in range(k)]
    res = pb.SearchResponse(hits=hits, generation=1, checkpoint_id="0123456789ab", index=f"{kind}s",
                            timings=pb.Timings(embed_ms=0.1, search_ms=0.2, hydrate_ms=0.05, total_ms=0.4))
    return res.SerializeToString()


def _serve(reply: bytes, workers: int, host: str, port_q: Any, stop: Any) -> None:
    import grpc

    def search(request: pb.SearchRequest, context: Any) -> bytes:
        return reply

    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=workers),
        options=[("grpc.max_receive_message_length", MESSAGE_LIMIT),
                 ("grpc.max_send_message_length", MESSAGE_LIMIT)],
    )
    # The request is parsed as the engine parses it; the reply goes out as the stored bytes.
    method = grpc.unary_unary_rpc_method_handler(search, request_deserializer=pb.SearchRequest.FromString)
    handler = grpc.method_handlers_generic_handler(SERVICE, {"Search": method})
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port(f"{host}:0")
    server.start()
    port_q.put(port)
    stop.wait()
    server.stop(1.0).wait()


class EchoServer:
    """An echo SearchService in a child process; use as a context manager, `.target` is HOST:PORT.

    Example:
        >>> with EchoServer(sample_response()) as echo:
        ...     asyncio.run(run_load(echo.target, make, concurrency=8, duration_s=5))
    """

    def __init__(self, reply: bytes, workers: int = WORKERS, host: str = "127.0.0.1") -> None:
        self.reply, self.workers, self.host = reply, workers, host
        ctx = mp.get_context("spawn")  # a fresh interpreter: no grpc state inherited from the parent
        self._port_q = ctx.Queue()
        self._stop = ctx.Event()
        self._proc = ctx.Process(target=_serve, args=(reply, workers, host, self._port_q, self._stop), daemon=True)
        self.port = 0

    @property
    def target(self) -> str:
        return f"{self.host}:{self.port}"

    def start(self, timeout_s: float = 60.0) -> EchoServer:
        import queue
        import time

        self._proc.start()
        end = time.monotonic() + timeout_s
        while True:
            try:
                self.port = int(self._port_q.get(timeout=0.2))
                return self
            except queue.Empty:
                if not self._proc.is_alive():
                    raise RuntimeError(f"echo server exited with code {self._proc.exitcode} before binding") from None
                if time.monotonic() > end:
                    self.stop()
                    raise TimeoutError(f"echo server not bound after {timeout_s:.0f} s") from None

    def stop(self) -> None:
        self._stop.set()
        self._proc.join(10)
        if self._proc.is_alive():
            self._proc.terminate()
            self._proc.join(5)

    def __enter__(self) -> EchoServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
