"""The server under load: QPS and latency per concurrency, beside the gRPC floor, optionally during swaps.

`serve_benchmark` loads a running engine with one request mix at each concurrency, then (unless told not to)
an echo server with the same reply bytes at the same concurrencies, and reports engine/floor ratios. With
`swap_every`, a child process publishes a new generation of the served index every few seconds
(`indexer.build.rebuild` with fresh vectors, against the engine's home) and asks the engine to reload; requests
are then split into windows: while a generation builds, while the engine swaps, and the rest.
"""

from __future__ import annotations

import asyncio
import logging
import multiprocessing as mp
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import numpy as np

from benchmarks.echo import EchoServer, sample_response
from benchmarks.errors import NotReady
from benchmarks.loadgen import CHANNEL_OPTIONS, LoadResult, Record, check_loopback, request_factory, run_load
from benchmarks.machine import OtherLoad, machine_info
from benchmarks.results import command_line, now_utc
from catalog import Home
from protos.omnisearch.v1 import omnisearch_pb2 as pb
from protos.omnisearch.v1 import omnisearch_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SWAP_MARGIN_S = 0.5  # after the first answer from a new generation, requests still count as "during swap"


@dataclass(frozen=True)
class Target:
    """What is being loaded: index name, its dimension and size, the generation being served."""

    index: str
    dim: int | None
    count: int | None
    generation: int | None
    admin_token: str | None


def discover(target: str, home: Home, index: str | None, dim: int | None) -> Target:
    """Ask the engine (Admin.Status with the home's token) which index to load, its dim and size.

    Explicit `index` and `dim` win; without a reachable Status they are required.
    """
    from engine.client import EngineClient, find_admin_token

    token = find_admin_token(home.root)
    status = None
    try:
        with EngineClient(target, admin_token=token, timeout=5.0) as client:
            status = client.status()
    except grpc.RpcError as err:
        log.info("no Status from %s (%s); using the given --index/--dim", target, err.code())  # type: ignore[attr-defined]
    if status is not None and status.indices:
        by_name = {ix.name: ix for ix in status.indices}
        chosen = index or sorted(by_name)[0]
        if chosen not in by_name:
            raise NotReady(f"{target} serves no index {chosen!r}; it serves {sorted(by_name)}")
        ix = by_name[chosen]
        return Target(chosen, dim or int(ix.dim), int(ix.count), int(status.generation), token)
    if index is None:
        raise NotReady(f"cannot ask {target} for its indices (Admin.Status failed); give --index (and --dim)")
    return Target(index, dim, None, None, token)


def catalog_texts(home: Home, limit: int = 256) -> list[str]:
    """Query texts of the home's catalog (the text mixes' pool), or none when there is no catalog."""
    if not home.catalog_db.exists():
        return []
    from catalog import Catalog

    out: list[str] = []
    for q in Catalog(home.catalog_db, read_only=True).queries():
        out.append(q["text"])
        if len(out) >= limit:
            break
    return out


# ------------------------------------------------------------------ swaps
def _publish_generation(home_root: str, index: str, dim: int, count: int, seed: int, backend: str,
                        shards: int) -> dict[str, Any]:
    """Child process: build and publish a generation of `index` from fresh seeded vectors (one build thread,
    the other core keeps serving)."""
    import json
    import shutil
    import tempfile

    import numpy as np

    from catalog import Home as _Home
    from indexer.build import rebuild
    from indexer.synthetic import clustered

    home = _Home.resolve(home_root)
    work = Path(tempfile.mkdtemp(prefix="swap-", dir=home.root))
    try:
        np.save(work / "vectors.npy", clustered(count, dim, seed=seed))
        (work / "ids.json").write_text(json.dumps([f"v{i}" for i in range(count)]))
        t0 = time.monotonic()
        gen = rebuild(home, indices=[index], vectors=work / "vectors.npy", ids=work / "ids.json", backend=backend,
                      shards=shards, publish=True, threads=1, metric="ip", progress=False)
        return {"generation": int(gen.id), "build_s": round(time.monotonic() - t0, 3)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


@dataclass
class Swap:
    generation: int = 0
    build_start: float = 0.0  # monotonic seconds
    published: float = 0.0
    build_s: float = 0.0
    reload_s: float | None = None
    served: float | None = None  # first answer from the new generation
    error: str | None = None


@dataclass
class Swapper:
    """Publishes a new generation every `every_s` seconds while a load runs."""

    home: Home
    target: str
    index: str
    dim: int
    count: int
    every_s: float
    admin_token: str | None
    backend: str = "hnswlib"
    shards: int = 2
    swaps: list[Swap] = field(default_factory=list)
    seed: int = 1000

    async def run(self, deadline: float, pool: ProcessPoolExecutor) -> None:
        """Start a build every `every_s` seconds (never two at once) while one can still finish before
        `deadline`; publish it, then ask the engine to reload (when an admin token is known)."""
        loop = asyncio.get_running_loop()
        channel = grpc.aio.insecure_channel(self.target, options=CHANNEL_OPTIONS)
        admin = pb_grpc.AdminServiceStub(channel)
        md = [("authorization", f"Bearer {self.admin_token}")] if self.admin_token else None
        next_start = time.monotonic() + self.every_s
        try:
            while True:
                last = self.swaps[-1] if self.swaps else None
                expected = (last.published - last.build_start) if last and last.published else 0.0
                if max(next_start, time.monotonic()) + expected + 1.0 > deadline:
                    return  # the swap would not finish while load is still running
                await asyncio.sleep(max(0.0, next_start - time.monotonic()))
                self.seed += 1
                swap = Swap(build_start=time.monotonic())
                next_start = swap.build_start + self.every_s
                self.swaps.append(swap)
                try:
                    done = await loop.run_in_executor(pool, _publish_generation, str(self.home.root), self.index,
                                                      self.dim, self.count, self.seed, self.backend, self.shards)
                except Exception as exc:  # a failed build is a result to report, not a crash of the benchmark
                    swap.error = f"{type(exc).__name__}: {exc}"
                    log.warning("swap build failed: %s", swap.error)
                    continue
                swap.published = time.monotonic()
                swap.generation, swap.build_s = done["generation"], done["build_s"]
                if md is not None:
                    try:
                        await admin.Reload(pb.ReloadRequest(), timeout=120.0, metadata=md)
                        swap.reload_s = round(time.monotonic() - swap.published, 3)
                    except grpc.aio.AioRpcError as err:
                        swap.error = f"Reload: {err.code().name} {err.details()}"
        finally:
            await channel.close()


def _warm_child() -> None:
    """Import the indexer in the swap process before the clock runs (the first swap is then like the others)."""
    import indexer.build  # noqa: F401


def swap_windows(result: LoadResult, swaps: list[Swap]) -> dict[str, Any]:
    """Requests split by what the server was doing: building a generation, swapping to it, or neither."""
    for s in swaps:
        if s.generation:
            first = [r.end for r in result.records if r.generation == s.generation]
            s.served = min(first) if first else None

    def overlaps(r: Record, a: float, b: float) -> bool:
        return r.start < b and r.end > a

    building = [(s.build_start, s.published or s.build_start) for s in swaps]
    swapping = [(s.published, (s.served or s.published) + SWAP_MARGIN_S) for s in swaps if s.published]
    in_build, in_swap, rest = [], [], []
    for r in result.records:
        if any(overlaps(r, a, b) for a, b in swapping):
            in_swap.append(r)
        elif any(overlaps(r, a, b) for a, b in building):
            in_build.append(r)
        else:
            rest.append(r)
    t0 = min((r.start for r in result.records), default=0.0)
    span_swap = sum(b - a for a, b in swapping)
    span_build = sum(b - a for a, b in building)
    return {
        "swaps": [
            {"generation": s.generation, "build_s": s.build_s, "reload_s": s.reload_s,
             "served_after_publish_s": round(s.served - s.published, 3) if s.served and s.published else None,
             "error": s.error}
            for s in swaps
        ],
        "generations_seen": sorted({r.generation for r in result.records if r.generation}),
        "during_swap": result.summary(in_swap, span_swap) if in_swap else None,
        "during_build": result.summary(in_build, span_build) if in_build else None,
        "steady": result.summary(rest, max(result.duration_s - span_swap - span_build, 1e-9)) if rest else None,
        "failed_requests": sum(1 for r in result.records if r.code != "OK"),
        # Seconds since the first measured request: when each build started, was published, was first served.
        "events": [{"generation": s.generation, "build_start": round(s.build_start - t0, 3),
                    "published": round(s.published - t0, 3) if s.published else None,
                    "served": round(s.served - t0, 3) if s.served else None} for s in swaps],
        "timeline": timeline(result.records, t0),
    }


def timeline(records: list[Record], t0: float, bin_s: float = 0.25) -> list[list[float]]:
    """[start of bin (s), requests, p50 ms, p99 ms, max ms, errors] per `bin_s` seconds of request starts."""
    bins: dict[int, list[Record]] = {}
    for r in records:
        bins.setdefault(int((r.start - t0) / bin_s), []).append(r)
    out = []
    for b in sorted(bins):
        rs = bins[b]
        lat = np.array([(r.end - r.start) * 1e3 for r in rs if r.code == "OK"])
        errors = sum(1 for r in rs if r.code != "OK")
        if len(lat):
            p50, p99, mx = (float(np.percentile(lat, 50)), float(np.percentile(lat, 99)), float(lat.max()))
        else:
            p50 = p99 = mx = float("nan")
        out.append([round(b * bin_s, 3), len(rs), round(p50, 3), round(p99, 3), round(mx, 3), errors])
    return out


# ------------------------------------------------------------------ the benchmark
async def _one_setting(target: str, make: Any, concurrency: int, duration_s: float, warmup_s: float,
                       warmup_requests: int, swapper: Swapper | None, pool: ProcessPoolExecutor | None
                       ) -> tuple[LoadResult, dict[str, Any] | None]:
    if swapper is None or pool is None:
        return await run_load(target, make, concurrency, duration_s, warmup_s, warmup_requests), None
    swapper.swaps = []
    load = asyncio.ensure_future(run_load(target, make, concurrency, duration_s, warmup_s, warmup_requests))
    # The load's own clock starts after its warm-up; swaps are planned against the end of the measurement.
    swaps = asyncio.ensure_future(swapper.run(time.monotonic() + warmup_s + duration_s, pool))
    result = await load
    await swaps
    return result, swap_windows(result, swapper.swaps)


def _capture_reply(target: str, make: Any) -> bytes | None:
    """One real Search reply's bytes (the echo floor answers with exactly these)."""
    with grpc.insecure_channel(target) as ch:
        try:
            res = pb_grpc.SearchServiceStub(ch).Search(make(0), timeout=30.0)
        except grpc.RpcError:
            return None
        return bytes(res.SerializeToString())


def serve_benchmark(
    target: str,
    home: Home,
    concurrency: list[int],
    duration_s: float,
    mix: str,
    index: str | None = None,
    dim: int | None = None,
    k: int = 10,
    swap_every: float | None = None,
    floor: bool = True,
    warmup_s: float = 1.0,
    swap_backend: str = "hnswlib",
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Load `target` at each concurrency with `mix`; return the JSON-able result (echo floor included)."""
    check_loopback(target)
    info = discover(target, home, index, dim)
    if mix == "vector" and not info.dim:
        raise NotReady("the vector mix needs the index dimension: give --dim")
    texts = catalog_texts(home) if mix != "vector" else []
    make = request_factory(mix, info.index, k=k, dim=info.dim, texts=texts)
    warm_requests = 256 if mix == "text-hit" else 0  # one round over the pool: later calls hit the cache
    reply = _capture_reply(target, make)
    machine = machine_info()
    load = OtherLoad().start()
    started = now_utc()
    runs: list[dict[str, Any]] = []
    swapper = None
    pool = None
    if swap_every:
        if not info.dim or not (info.count or 0):
            raise NotReady("swaps need the index dimension and size from Admin.Status (engine home token)")
        swapper = Swapper(home, target, info.index, int(info.dim), int(info.count or 0), swap_every,
                          info.admin_token, backend=swap_backend)
        pool = ProcessPoolExecutor(1, mp_context=mp.get_context("spawn"))
        pool.submit(_warm_child).result()
    try:
        for c in concurrency:
            res, windows = asyncio.run(_one_setting(target, make, c, duration_s, warmup_s, warm_requests,
                                                    swapper, pool))
            row = {"target": "engine", "concurrency": c, **res.summary()}
            if windows is not None:
                row["swap"] = windows
            runs.append(row)
            if progress:
                progress(_line(row))
    finally:
        if pool is not None:
            pool.shutdown()
    if floor:
        with EchoServer(reply or sample_response(k)) as echo:
            for c in concurrency:
                res = asyncio.run(run_load(echo.target, make, c, duration_s, warmup_s))
                row = {"target": "echo floor", "concurrency": c, **res.summary()}
                runs.append(row)
                if progress:
                    progress(_line(row))
    other = load.cores()
    return {
        "kind": "serve",
        "title": f"Search under load: mix {mix}, index {info.index}" + (f", swap every {swap_every:g} s"
                                                                         if swap_every else ""),
        "date": started,
        "command": command_line(),
        "target": target,
        "mix": mix,
        "index": info.index,
        "dim": info.dim,
        "k": k,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "swap_every_s": swap_every,
        "reply_bytes": len(reply) if reply else None,
        "machine": {**machine, "other_load_cores_incl_server": round(other, 2)},
        "runs": runs,
        "floor_ratio": floor_ratios(runs),
    }


def floor_ratios(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Engine / echo-floor QPS and p50 per concurrency."""
    floor = {r["concurrency"]: r for r in runs if r["target"] == "echo floor"}
    out = []
    for r in runs:
        f = floor.get(r["concurrency"])
        if r["target"] != "engine" or f is None or not f["qps"]:
            continue
        p50, fp50 = r["latency_ms"]["p50"], f["latency_ms"]["p50"]
        out.append({
            "concurrency": r["concurrency"],
            "engine_qps": r["qps"], "floor_qps": f["qps"], "qps_ratio": round(r["qps"] / f["qps"], 3),
            "engine_p50_ms": p50, "floor_p50_ms": fp50,
            "p50_ratio": round(p50 / fp50, 2) if p50 and fp50 else None,
        })
    return out


def echo_floor_benchmark(concurrency: list[int], duration_s: float, mix: str = "vector", dim: int = 256,
                         k: int = 10, warmup_s: float = 1.0, progress: Callable[[str], None] | None = None
                         ) -> dict[str, Any]:
    """Load only the echo server (a Search-sized reply) with the generator: the floor of any Python gRPC call."""
    make = request_factory(mix, "products", k=k, dim=dim)
    machine = machine_info()
    load = OtherLoad().start()
    started = now_utc()
    reply = sample_response(k)
    runs = []
    with EchoServer(reply) as echo:
        for c in concurrency:
            res = asyncio.run(run_load(echo.target, make, c, duration_s, warmup_s))
            row = {"target": "echo floor", "concurrency": c, **res.summary()}
            runs.append(row)
            if progress:
                progress(_line(row))
    return {
        "kind": "echo-floor",
        "title": f"gRPC floor: bare server, Search-sized messages ({mix} request, {len(reply)} B reply)",
        "date": started,
        "command": command_line(),
        "mix": mix,
        "dim": dim,
        "k": k,
        "duration_s": duration_s,
        "warmup_s": warmup_s,
        "reply_bytes": len(reply),
        "machine": {**machine, "other_load_cores": round(load.cores(), 2)},
        "runs": runs,
    }


def _line(row: dict[str, Any]) -> str:
    lat = row["latency_ms"]
    return (f"{row['target']:<10} c={row['concurrency']:<3} qps={row['qps']:>8.1f} p50={lat['p50']} ms "
            f"p95={lat['p95']} ms p99={lat['p99']} ms errors={row['errors']}")
