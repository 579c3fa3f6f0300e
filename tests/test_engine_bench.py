"""The benchmark's parts: the load generator against the real echo server, and the BENCHMARKS.md section."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from engine.bench import SECTION, echo_server, render, unique_texts, write_section
from engine.loadgen import LoadResult, run_load
from protos.omnisearch.v1 import omnisearch_pb2 as pb


def test_load_generator_against_the_echo_floor() -> None:
    x = np.random.default_rng(0).standard_normal((4, 256)).astype(np.float32)
    reqs = [pb.SearchRequest(vector=pb.Vector(values=v.tolist()), index="v", k=10).SerializeToString() for v in x]
    with echo_server("sync") as (port, pid):
        res = run_load(f"127.0.0.1:{port}", "/omnisearch.v1.SearchService/Search", reqs, 4, duration_s=0.5,
                       warmup_s=0.2, cpu_pids=[pid])
        bad = run_load(f"127.0.0.1:{port}", "/omnisearch.v1.SearchService/Nope", reqs, 2, duration_s=0.2,
                       warmup_s=0.0)
    assert res.calls > 20 and res.errors == 0 and res.qps > 0
    assert 0 < res.p50_ms <= res.p99_ms
    assert res.server_cpu_us > 0 and not math.isnan(res.client_cpu_us)
    assert res.sent >= res.calls
    assert bad.errors == bad.calls > 0 and set(bad.codes) == {"UNIMPLEMENTED"}


def _fake(c: int, qps: float, p50: float = 1.0) -> LoadResult:
    return LoadResult(c, 100, 0, 1.0, qps, p50, 2 * p50, p50, {}, 100, 150.0, 50.0)


def _fake_results(**extra: Any) -> dict[str, Any]:
    """Raw results of every workload `render` reads, plus `extra` ones."""
    conc = (1, 8, 32)
    return {
        "n": 1000, "seconds": 1.0, "warmup": 0.5,
        "echo-sync": {c: _fake(c, 3000) for c in (1, 8, 16, 32)},
        "echo-aio": {c: _fake(c, 2500) for c in (1, 8, 16, 32)},
        "vector": {c: _fake(c, 2400) for c in conc},
        "text-hit": {c: _fake(c, 2000, 0.9) for c in conc},
        "text-miss": {c: _fake(c, 100 * c) for c in conc},
        "text-miss-unbatched": {c: _fake(c, 100) for c in (1, 32)},
        "text-miss-torch2": {c: _fake(c, 90) for c in (1, 32)},
        "text-miss-fp32": {c: _fake(c, 80) for c in (1, 32)},
        "text-miss-fp32-unbatched": {c: _fake(c, 70) for c in (1, 32)},
        **extra,
    }


def test_section_is_rendered_and_replaced_in_place(tmp_path: Path) -> None:
    conc = (1, 8, 32)
    res = _fake_results(**{"vector-1shard": {c: _fake(c, 2000) for c in conc},
                           "in-process": {"ann 2 shards": 120.0}})
    section = render(res, "python -m engine.bench", "test machine")
    assert section.startswith(SECTION)
    assert "0.80x with 2 shards (met)" in section
    assert "0.90 ms at 1 in flight (met)" in section
    assert "32.0x, met" in section
    assert "ann 2 shards 120" in section
    doc = tmp_path / "BENCHMARKS.md"
    doc.write_text("# Benchmarks\n\n## Model quality\n\nkeep me\n\n## Server\n\nNot measured yet.\n\n"
                   "## Load harness\n\nme too\n")
    write_section(doc, section)
    text = doc.read_text()
    assert "keep me" in text and "me too" in text and "Not measured yet" not in text
    assert text.index("## Model quality") < text.index(SECTION) < text.index("## Load harness")
    write_section(doc, section)
    assert doc.read_text() == text  # idempotent


def test_section_names_the_build_default_and_the_sharded_vector_index() -> None:
    res = _fake_results(**{
        "vector-shards": {"vector": 1, "vector-2shards": 2}, "vector-params": {"M": 16, "ef": 32},
        "vector-2shards": {c: _fake(c, 1500) for c in (1, 8, 32)},
        "in-process": {"ann 1 shard, the build default": 80.0},
    })
    section = render(res, "python -m engine.bench", "test machine")
    assert "0.80x with 1 shard, the build default (met), 0.50x with 2 shards (**missed**)" in section
    assert "| vector query (1 shard, the build default) | 8 | 2,400 |" in section
    assert "| vector query (2 shards) | 32 | 1,500 |" in section
    assert "(M 16, ef 32)" in section and "ann 1 shard, the build default 80" in section
    assert "every shard adds a whole search" in section  # the 2-shard miss is explained


def test_echo_on_one_cpu_is_pinned_and_rendered_beside_the_bare_floor() -> None:
    import os

    from engine.affinity import request_cpu_set

    cpus = request_cpu_set(1)
    with echo_server("sync", cpus=1) as (port, pid):
        assert os.sched_getaffinity(pid) == (cpus or os.sched_getaffinity(0))
        x = np.ones((1, 8), np.float32)
        reqs = [pb.SearchRequest(vector=pb.Vector(values=x[0].tolist()), index="v", k=1).SerializeToString()]
        ok = run_load(f"127.0.0.1:{port}", "/omnisearch.v1.SearchService/Search", reqs, 2, duration_s=0.2,
                      warmup_s=0.0)
    assert ok.calls > 0 and ok.errors == 0
    res = _fake_results(**{"echo-sync-1cpu": {c: _fake(c, 5000) for c in (1, 8, 32)}})
    section = render(res, "python -m engine.bench", "test machine")
    assert "| sync, on 1 CPU | 8 | 5,000 |" in section
    assert "answers 5,000 calls/s at 8 in flight" in section and "against 3,000" in section
    assert "0.80x with" in section  # ratios stay against the bare floor


def test_miss_texts_are_distinct() -> None:
    texts = unique_texts(5000, seed=3)
    assert len(set(texts)) == 5000 and all(3 <= len(t.split()) <= 5 for t in texts)


def test_raw_results_round_trip_through_json(tmp_path: Path) -> None:
    import json

    from engine.bench import _from_json, _jsonable

    res = {"n": 5, "vector": {1: _fake(1, 10.0), 32: _fake(32, 20.0)}, "in-process": {"ann": 1.5}}
    back = _from_json(json.loads(json.dumps(_jsonable(res))))
    assert back == res


def test_calls_spread_over_the_requested_connections() -> None:
    from concurrent import futures

    import grpc

    peers: set[str] = set()

    def echo(request: bytes, context: grpc.ServicerContext) -> bytes:
        peers.add(context.peer())  # "ipv4:127.0.0.1:<client port>": one per connection
        return request

    handler = grpc.unary_unary_rpc_method_handler(echo)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("t.Echo", {"Call": handler}),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        one = run_load(f"127.0.0.1:{port}", "/t.Echo/Call", [b"x"], 3, duration_s=0.2, warmup_s=0.0)
        seen_one, peers_one = one.channels, set(peers)
        peers.clear()
        three = run_load(f"127.0.0.1:{port}", "/t.Echo/Call", [b"x"], 3, duration_s=0.2, warmup_s=0.0, channels=3)
    finally:
        server.stop(0)
    assert seen_one == 1 and len(peers_one) == 1
    assert three.channels == 3 and three.errors == 0 and len(peers) == 3


def test_connection_rows_compare_with_the_echo_over_as_many_connections() -> None:
    from dataclasses import replace

    res = _fake_results(**{
        "vector-shards": {"vector": 1},
        "echo-sync-conns": {c: replace(_fake(c, 2000), channels=4) for c in (8, 32)},
        "vector-conns": {c: replace(_fake(c, 1800), channels=4) for c in (8, 32)},
    })
    section = render(res, "python -m engine.bench", "test machine")
    assert "### One connection or several" in section
    assert "| vector query (1 shard), 4 connections | 32 | 1,800 |" in section and "| 0.90x |" in section
    assert "answers 2,000 calls/s over 4 connections against 3,000 over one" in section
    assert "answers 1,800: 0.90x the echo here, 0.80x over one connection" in section
    assert "### One connection" not in render(_fake_results(), "python -m engine.bench", "test machine")
