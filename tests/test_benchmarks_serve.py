"""The load generator, the echo floor and `benchmarks serve` against real loopback servers."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.cli import cli
from benchmarks.echo import EchoServer, sample_response
from benchmarks.errors import NotLoopback
from benchmarks.loadgen import check_loopback, request_factory, run_load
from benchmarks.serve import serve_benchmark
from catalog import Home
from protos.omnisearch.v1 import omnisearch_pb2 as pb


@pytest.mark.parametrize("target", ["127.0.0.1:50051", "localhost:1", "[::1]:8080", "127.0.0.5:9"])
def test_loopback_targets_accepted(target: str) -> None:
    assert check_loopback(target) == target


@pytest.mark.parametrize("target", ["10.1.2.3:50051", "0.0.0.0:50051", "8.8.8.8:53", "[2001:db8::1]:80"])
def test_other_hosts_rejected(target: str) -> None:
    with pytest.raises(NotLoopback, match="only targets this machine"):
        check_loopback(target)


def test_malformed_target_rejected() -> None:
    with pytest.raises(NotLoopback, match="HOST:PORT"):
        check_loopback("127.0.0.1")


def test_cli_refuses_remote_target(home: Home) -> None:
    res = CliRunner().invoke(cli, ["serve", "--home", str(home.root), "--target", "192.0.2.7:50051",
                                   "--index", "x", "--dim", "8", "--duration", "1"])
    assert res.exit_code == 1 and "refusing to load 192.0.2.7:50051" in res.output


def test_request_mixes() -> None:
    vec = request_factory("vector", "pins", k=5, dim=8)
    assert len(vec(0).vector.values) == 8 and vec(0).k == 5 and vec(0).index == "pins"
    hit = request_factory("text-hit", "pins", texts=["a", "b"], pool=2)
    assert [hit(i).text for i in range(4)] == ["a", "b", "a", "b"]
    miss = request_factory("text-miss", "pins", texts=["a"], pool=1)
    assert len({miss(i).text for i in range(50)}) == 50  # every text is new to the server's cache


def test_generator_against_echo_floor_stops_by_itself() -> None:
    reply = sample_response(k=10)
    assert len(pb.SearchResponse.FromString(reply).hits) == 10
    make = request_factory("vector", "products", dim=64)
    with EchoServer(reply, workers=8) as echo:
        t0 = time.monotonic()
        res = asyncio.run(run_load(echo.target, make, concurrency=4, duration_s=1.0, warmup_s=0.2))
        elapsed = time.monotonic() - t0
        capped = asyncio.run(run_load(echo.target, make, concurrency=4, duration_s=30.0, warmup_s=0.0,
                                      max_requests=25))
    assert elapsed < 10.0
    s = res.summary()
    assert s["ok"] > 20 and s["errors"] == 0 and s["qps"] > 20
    assert 0 < s["latency_ms"]["p50"] <= s["latency_ms"]["p95"] <= s["latency_ms"]["p99"]
    assert 0.8 <= res.duration_s < 3.0
    assert len(capped.records) == 25  # the request cap ends a run long before its duration


def test_errors_are_counted_not_raised() -> None:
    make = request_factory("vector", "products", dim=4)
    with EchoServer(sample_response(), workers=2) as echo:
        target = echo.target
    # The server is gone: every call fails with UNAVAILABLE, and the run still ends on time.
    res = asyncio.run(run_load(target, make, concurrency=2, duration_s=0.5, warmup_s=0.0, timeout_s=0.2))
    s = res.summary()
    assert s["ok"] == 0 and s["errors"] == len(res.records) > 0
    assert set(s["error_codes"]) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED"}


def test_serve_benchmark_reports_floor_ratio(home: Home, tmp_path: Path) -> None:
    # An echo server stands in for the engine (no Status: index and dim are given), so the ratio is near 1.
    with EchoServer(sample_response(), workers=8) as fake_engine:
        result = serve_benchmark(fake_engine.target, home, [2], 0.6, "vector", index="pins", dim=16,
                                 warmup_s=0.1)
    assert [r["target"] for r in result["runs"]] == ["engine", "echo floor"]
    (ratio,) = result["floor_ratio"]
    assert ratio["concurrency"] == 2 and ratio["qps_ratio"] > 0
    assert result["reply_bytes"] == len(sample_response())


@pytest.mark.slow
def test_serve_against_engine_with_swaps(home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from engine.testing import loopback_config, running_server, vector_generation
    from indexer.synthetic import clustered

    monkeypatch.setenv("OMNISEARCH_ADMIN_TOKEN", "test-token")
    n, dim = 2000, 16
    first = vector_generation(home, [f"v{i}" for i in range(n)], clustered(n, dim, seed=1), backend="hnswlib")
    with running_server(loopback_config(home, poll_interval_s=0.2)) as (server, _client):
        target = f"127.0.0.1:{server.port}"
        result = serve_benchmark(target, home, [4], 6.0, "vector", swap_every=1.0, floor=False, warmup_s=0.2)
    (row,) = result["runs"]
    swap = row["swap"]
    built = [s for s in swap["swaps"] if s["generation"]]
    assert built and all(s["error"] is None for s in swap["swaps"])
    assert all(s["generation"] > first.id for s in built)
    assert len(swap["generations_seen"]) >= 2  # answers came from the first generation and a swapped-in one
    assert swap["failed_requests"] == row["errors"] == 0
    assert row["ok"] > 50 and result["dim"] == dim and result["index"] == "vectors"
    out = tmp_path / "serve.json"
    out.write_text(json.dumps(result))
    assert json.loads(out.read_text())["runs"][0]["swap"]["failed_requests"] == 0
    assert np.isfinite(row["latency_ms"]["p99"])
