"""A bare gRPC echo of the Search method (the floor): parse the SearchRequest, return a canned SearchResponse.

`python -m engine.echo --mode sync|aio [--port 0] [--hits 10] [--cpus N]` prints `PORT <n>` and serves until
stdin closes or SIGTERM. Same message types and sizes as the engine, none of its work. `--cpus N` runs the
whole process on the last N CPUs, as the engine runs its gRPC threads (engine.affinity).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import sys
import threading
from concurrent import futures

import grpc

from engine.affinity import pin_thread, request_cpu_set
from protos.omnisearch.v1 import omnisearch_pb2 as pb

METHOD = "/omnisearch.v1.SearchService/Search"


def canned_response(hits: int) -> pb.SearchResponse:
    """A reply shaped like a real one: `hits` ids like catalog ids, scores, kinds, timings."""
    return pb.SearchResponse(
        hits=[pb.Hit(id=f"B0{i:08d}-en", score=0.5 - i * 0.01, kind="product") for i in range(hits)],
        generation=7,
        checkpoint_id="0123456789abcdef",
        timings=pb.Timings(embed_ms=0.1, search_ms=0.2, total_ms=0.4, cache_hit=True, batch_size=1),
        index="products",
    )


def _handlers(reply: bytes) -> grpc.GenericRpcHandler:
    def search(request: pb.SearchRequest, context: object) -> bytes:
        return reply

    handler = grpc.unary_unary_rpc_method_handler(
        search, request_deserializer=pb.SearchRequest.FromString, response_serializer=lambda b: b
    )
    return grpc.method_handlers_generic_handler("omnisearch.v1.SearchService", {"Search": handler})


def run_sync(port: int, reply: bytes, workers: int) -> None:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=workers))
    server.add_generic_rpc_handlers((_handlers(reply),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    server.start()
    print(f"PORT {bound}", flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())

    def wait_stdin() -> None:
        sys.stdin.read()  # returns when the parent closes our stdin (or exits)
        stop.set()

    threading.Thread(target=wait_stdin, daemon=True).start()
    stop.wait()
    server.stop(0)


async def _run_aio(port: int, reply: bytes) -> None:
    server = grpc.aio.server()
    server.add_generic_rpc_handlers((_handlers(reply),))
    bound = server.add_insecure_port(f"127.0.0.1:{port}")
    await server.start()
    print(f"PORT {bound}", flush=True)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_reader(sys.stdin.fileno(), lambda: None if os.read(sys.stdin.fileno(), 1 << 16) else stop.set())
    await stop.wait()
    await server.stop(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mode", choices=("sync", "aio"), default="sync")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--hits", type=int, default=10)
    parser.add_argument("--workers", type=int, default=48)
    parser.add_argument("--cpus", type=int, default=0, help="run on the last N CPUs (0: anywhere)")
    args = parser.parse_args(argv)
    pin_thread(request_cpu_set(args.cpus))  # before any thread starts: they all inherit it
    reply = canned_response(args.hits).SerializeToString()
    if args.mode == "sync":
        run_sync(args.port, reply, args.workers)
    else:
        asyncio.run(_run_aio(args.port, reply))


if __name__ == "__main__":
    main()
