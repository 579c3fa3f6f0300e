"""Server benchmark, one run: echo floor (sync vs aio), vector queries, text queries (cache hit / miss), batching.

    python -m engine.bench --out BENCHMARKS.md          # rewrites only the "## Server" section
    python -m engine.bench --in-process                 # only the per-call costs of the vector path (no servers)

Servers run in their own processes (`python -m engine.echo`, `python -m engine.cli serve`), the closed-loop
load generator (`engine.loadgen`) in this one; all share the machine's cores, as in PERF-FACTS.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from catalog import Home
from engine.client import EngineClient
from engine.loadgen import LoadResult, run_load
from protos.omnisearch.v1 import omnisearch_pb2 as pb

log = logging.getLogger(__name__)

METHOD = "/omnisearch.v1.SearchService/Search"
SECTION = "## Server"
WORDS = (
    "red blue green black white small large cheap best new wooden metal garden kitchen bathroom outdoor "
    "running shoes boots jacket dress shirt table chair lamp sofa bed drill saw hammer hose paint tile "
    "recipe cookie cake bread soup salad pasta chicken vegan easy quick healthy summer winter holiday "
    "wedding birthday party gift ideas diy craft decor living room bedroom office desk storage shelf "
    "cordless electric portable waterproof leather cotton wool silk vintage modern rustic minimalist "
    "women men kids baby dog cat travel camping hiking beach city mountain lake river tesla history "
    "science music art photo drawing painting design tattoo hair makeup nails skincare fitness yoga"
).split()


# Client connections of the several-clients rows (every other row sends all calls over one connection).
CONNECTIONS = 4

# Encoder settings compared on cache misses (1 and 32 in flight), beside the defaults.
VARIANTS: dict[str, dict[str, Any]] = {
    "text-miss-unbatched": {"batch_max": 1},
    "text-miss-torch2": {"torch_threads": 2},
    "text-miss-fp32": {"encoder_bf16": False},
    "text-miss-fp32-unbatched": {"encoder_bf16": False, "batch_max": 1},
}
VARIANT_LABELS = {
    "text-miss-unbatched": "one at a time (batch_max=1)",
    "text-miss-torch2": "batched, torch_threads=2",
    "text-miss-fp32": "batched, fp32",
    "text-miss-fp32-unbatched": "one at a time, fp32",
}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def unique_texts(n: int, seed: int = 0) -> list[str]:
    """`n` distinct 3-5 word queries (about 10 tokens each, like PERF-FACTS' encoder figures)."""
    rng = np.random.default_rng(seed)
    out: dict[str, None] = {}
    while len(out) < n:
        k = int(rng.integers(3, 6))
        out[" ".join(WORDS[i] for i in rng.choice(len(WORDS), size=k, replace=False))] = None
    return list(out)


# The vector indices measured: the same n vectors built with the indexer's defaults (hnswlib, shard count by
# size: one shard at the benchmark's 100k) and split into 2 shards (what a multi-shard index costs per query).
VECTOR_INDICES: dict[str, tuple[str, int | None]] = {
    "vector": ("vectors", None),
    "vector-2shards": ("vectors-2shards", 2),
}


def prepare_vectors(home: Home, n: int, dim: int = 256, backend: str = "hnswlib") -> dict[str, Any]:
    """Build the VECTOR_INDICES over n clustered vectors.

    Returns:
        Facts for the results: "vector-shards" (shard count by result key) and "vector-params" (the build-default
        index's resolved parameters).
    """
    from engine.testing import vector_generation
    from indexer.synthetic import clustered

    x = clustered(n, dim, seed=0)
    ids = [f"v{i:07d}" for i in range(n)]
    shards: dict[str, int] = {}
    params: dict[str, Any] = {}
    for key, (index, count) in VECTOR_INDICES.items():
        rec = vector_generation(home, ids, x, index=index, backend=backend, shards=count).indices[index]
        shards[key] = len(rec.shards)
        params = params or dict(rec.params)
    return {"vector-shards": shards, "vector-params": params}


def prepare_home(root: Path, n: int, dim: int = 256, backend: str = "hnswlib") -> tuple[Home, dict[str, Any]]:
    """A home with the tiny catalog, an untrained MiniLM checkpoint, and a generation holding the catalog
    indices (text queries) plus the VECTOR_INDICES (vector queries); also the facts `prepare_vectors` gives."""
    from engine.testing import model_generation, tiny_checkpoint, write_tiny_catalog

    home = Home(root).ensure()
    write_tiny_catalog(home)
    ckpt = tiny_checkpoint(home)
    model_generation(home, ckpt, backend="flat")
    return home, prepare_vectors(home, n, dim, backend)


@contextmanager
def echo_server(mode: str, cpus: int = 0) -> Iterator[tuple[int, int]]:
    """`engine.echo` in a subprocess; `cpus` > 0 runs it on that many CPUs (like the engine's gRPC threads)."""
    proc = subprocess.Popen([sys.executable, "-m", "engine.echo", "--mode", mode, "--cpus", str(cpus)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        m = re.match(r"PORT (\d+)", line)
        if not m:
            raise RuntimeError(f"echo server did not start: {line!r}")
        yield int(m.group(1)), proc.pid
    finally:
        if proc.stdin:
            proc.stdin.close()
        proc.wait(10)


@contextmanager
def engine_server(home: Home, **config: Any) -> Iterator[tuple[int, int]]:
    """`engine serve` in a subprocess with extra EngineConfig keys (written to a TOML file)."""
    port = _free_port()
    toml = home.root / f"bench-{port}.toml"
    lines = [f"{k} = {json.dumps(v)}" for k, v in {"poll_interval_s": 0.0, **config}.items()]
    toml.write_text("[engine]\n" + "\n".join(lines) + "\n")
    env = {**os.environ, "OMNISEARCH_HOME": str(home.root)}
    proc = subprocess.Popen([sys.executable, "-m", "engine.cli", "--log-level", "WARNING", "serve", "--config",
                             str(toml), "--port", str(port)], env=env)
    try:
        with EngineClient(f"127.0.0.1:{port}") as c:
            c.wait_until_serving(180)
        yield port, proc.pid
    finally:
        proc.terminate()
        proc.wait(30)


def _load(
    server: tuple[int, int], reqs: list[bytes], c: int, seconds: float, warmup: float, unique: bool = False,
    channels: int = 1,
) -> LoadResult:
    port, pid = server
    res = run_load(f"127.0.0.1:{port}", METHOD, reqs, c, duration_s=seconds, warmup_s=warmup, cpu_pids=[pid],
                   channels=channels)
    if unique and res.sent > len(reqs):
        log.warning("c=%d sent %d calls over %d distinct requests: some repeated", c, res.sent, len(reqs))
    log.info("c=%d %.0f/s p50 %.2f ms p99 %.2f ms, server CPU %.0f us/call, errors %s", c, res.qps, res.p50_ms,
             res.p99_ms, res.server_cpu_us, res.codes)
    return res


def run(n: int, seconds: float, warmup: float, work: Path) -> dict[str, Any]:
    """Every measurement of the section; returns the raw results."""
    from indexer.synthetic import clustered_with_queries

    t0 = time.time()
    home, facts = prepare_home(work / "home", n)
    setup_s = time.time() - t0
    _, xq = clustered_with_queries(n, 2000, 256, seed=0)
    vec_reqs = {key: [pb.SearchRequest(vector=pb.Vector(values=q.tolist()), index=index, k=10)
                      .SerializeToString() for q in xq] for key, (index, _) in VECTOR_INDICES.items()}
    hit_texts = unique_texts(64, seed=1)
    hit_reqs = [pb.SearchRequest(text=t, index="products", k=10).SerializeToString() for t in hit_texts]
    pool = iter(unique_texts(80_000, seed=2))

    def miss_reqs(count: int) -> list[bytes]:  # texts never sent before: every call misses the cache
        return [pb.SearchRequest(text=next(pool), index="products", k=10).SerializeToString() for _ in range(count)]

    out: dict[str, Any] = {"n": n, "seconds": seconds, "warmup": warmup, "setup_s": round(setup_s, 1), **facts}
    conc = (1, 8, 32)
    floor_reqs = vec_reqs["vector"]
    for mode in ("sync", "aio"):
        with echo_server(mode) as server:
            out[f"echo-{mode}"] = {c: _load(server, floor_reqs, c, seconds, warmup) for c in (1, 8, 16, 32)}
            if mode == "sync":
                out["echo-sync-conns"] = {c: _load(server, floor_reqs, c, seconds, warmup, channels=CONNECTIONS)
                                          for c in (8, 32)}
    with echo_server("sync", cpus=1) as server:  # the floor with the engine's own thread placement
        out["echo-sync-1cpu"] = {c: _load(server, floor_reqs, c, seconds, warmup) for c in conc}
    with engine_server(home) as server:
        for key, reqs in vec_reqs.items():
            out[key] = {c: _load(server, reqs, c, seconds, warmup) for c in conc}
        out["vector-conns"] = {c: _load(server, vec_reqs["vector"], c, seconds, warmup, channels=CONNECTIONS)
                               for c in (8, 32)}
        with EngineClient(f"127.0.0.1:{server[0]}") as client:  # fill the cache
            for r in hit_reqs:
                client.search_stub.Search(pb.SearchRequest.FromString(r), timeout=30)
        out["text-hit"] = {c: _load(server, hit_reqs, c, seconds, warmup) for c in conc}
        out["text-miss"] = {c: _load(server, miss_reqs(6_000), c, seconds, warmup, unique=True) for c in conc}
    for name, variant in VARIANTS.items():
        with engine_server(home, **variant) as server:
            out[name] = {c: _load(server, miss_reqs(6_000), c, seconds, warmup, unique=True) for c in (1, 32)}
    out["in-process"] = in_process_costs(home, xq, hit_texts, facts["vector-shards"])
    return out


class _DirectContext:
    """What the Search handler asks of a grpc.ServicerContext, for calling it without a server."""

    def time_remaining(self) -> float | None:
        return None

    def abort(self, code: Any, details: str) -> None:
        raise RuntimeError(f"{code}: {details}")


def _label(key: str, shards: dict[str, int]) -> str:
    """How a vector row is named: its shard count, and whether it is the index the build defaults give."""
    count = shards.get(key, 2 if key == "vector" else 1)  # results from before "vector-shards" was recorded
    default = key == "vector" and "vector-2shards" in shards
    return f"{count} shard{'' if count == 1 else 's'}" + (", the build default" if default else "")


def in_process_costs(
    home: Home, xq: np.ndarray, texts: list[str], shards: dict[str, int], reps: int = 2000, repeats: int = 3
) -> dict[str, float]:
    """Microseconds per call of the query path's parts, one thread, no gRPC: where a Search's CPU goes.

    Each figure is the median of `repeats` runs of `reps` calls (wall clock), after 200 warm-up calls.
    """
    import statistics

    from engine.config import EngineConfig
    from engine.core import Engine
    from engine.servicer import SearchServicer

    engine = Engine(EngineConfig(home=home, poll_interval_s=0.0)).start()
    try:
        deadline = time.monotonic() + 120
        while engine.generations.current is None and time.monotonic() < deadline:
            time.sleep(0.1)
        serving = engine.generations.current
        if serving is None:
            raise RuntimeError(f"no generation loaded: {engine.generations.last_error}")
        for t in texts:
            engine.search(index="products", k=10, text=t)  # fill the cache

        def per_call(fn: Any) -> float:
            for i in range(200):
                fn(i)
            runs = []
            for r in range(repeats):
                t0 = time.perf_counter()
                for i in range(r * reps, (r + 1) * reps):
                    fn(i)
                runs.append((time.perf_counter() - t0) / reps * 1e6)
            return float(statistics.median(runs))

        q = [np.ascontiguousarray(xq[i][None, :]) for i in range(len(xq))]
        servicer, ctx = SearchServicer(engine), _DirectContext()
        out: dict[str, float] = {}
        first = serving.indices[VECTOR_INDICES["vector"][0]].backends[0]
        hnsw = getattr(first, "index", None)
        if first.name == "hnswlib" and hnsw is not None and shards.get("vector") == 1:
            out["hnswlib knn_query alone"] = per_call(lambda i: hnsw.knn_query(q[i % len(q)], k=10, num_threads=1))
        for key, (index, _) in VECTOR_INDICES.items():
            idx = serving.indices[index]
            label = _label(key, shards)
            wire = [pb.SearchRequest(vector=pb.Vector(values=v[0].tolist()), index=index, k=10).SerializeToString()
                    for v in q]
            out[f"ann {label}"] = per_call(lambda i, idx=idx: idx.search(q[i % len(q)], 10))
            out[f"engine vector query, {label}"] = per_call(
                lambda i, index=index: engine.search(index=index, k=10, vector=q[i % len(q)][0]))
            out[f"Search handler (decode, search, encode), {label}"] = per_call(
                lambda i, wire=wire: servicer.Search(pb.SearchRequest.FromString(wire[i % len(wire)]), ctx)
                .SerializeToString())
        if texts:
            out["engine text query, cache hit"] = per_call(
                lambda i: engine.search(index="products", k=10, text=texts[i % len(texts)]))
        return out
    finally:
        engine.stop()


def run_in_process(n: int, work: Path) -> dict[str, Any]:
    """Only the vector indices and their in-process costs: no servers, no encoder (a couple of minutes)."""
    from indexer.synthetic import clustered_with_queries

    home = Home(work / "home").ensure()
    facts = prepare_vectors(home, n)
    _, xq = clustered_with_queries(n, 2000, 256, seed=0)
    return {"n": n, **facts, "in-process": in_process_costs(home, xq, [], facts["vector-shards"])}


def _row(name: str, r: LoadResult, floor: LoadResult | None = None) -> str:
    ratio = f"{r.qps / floor.qps:.2f}x" if floor is not None and floor.qps else ""
    errs = f"{r.errors}" + (f" ({', '.join(f'{k} {v}' for k, v in r.codes.items())})" if r.codes else "")
    return (f"| {name} | {r.concurrency} | {r.qps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{r.server_cpu_us:,.0f} | {ratio} | {errs} |")


def _machine() -> str:
    try:
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), platform.processor())
    except OSError:
        cpu = platform.processor()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    day = time.strftime("%Y-%m-%d", time.gmtime())
    return (f"{day}, {os.cpu_count()} x {cpu}, Python {platform.python_version()}, "
            f"load average {load:.2f} at start")


def render(res: dict[str, Any], command: str, machine: str) -> str:
    """The "## Server" section of BENCHMARKS.md."""
    e = res["echo-sync"]
    rows = _vector_rows(res)
    lines = [
        SECTION,
        "",
        f"Measured with `{command}` ({machine}; {res['seconds']:g} s per point after "
        f"{res['warmup']:g} s warm-up; client and servers share the cores). Requests are real `SearchRequest`s "
        "(a 256-d vector is 1 KB), replies 10 hits. QPS counts successful calls; latencies are client-side; "
        "server CPU is the server process's user + system time per call (it holds up when other processes "
        "share the machine, wall-clock rates do not).",
        "",
        "### gRPC floor: sync thread pool vs grpc.aio (bare echo of the same messages)",
        "",
        "| server | in flight | calls/s | p50 ms | p99 ms | server CPU us/call |",
        "|---|---|---|---|---|---|",
    ]
    floors = [("sync", "echo-sync"), ("aio", "echo-aio"), ("sync, on 1 CPU", "echo-sync-1cpu")]
    for mode, key in floors:
        for c, r in res.get(key, {}).items():
            lines.append(f"| {mode} | {c} | {r.qps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
                         f"{r.server_cpu_us:,.0f} |")
    best = {m: max(r.qps for r in res[f"echo-{m}"].values()) for m in ("sync", "aio")}
    cpu = {m: float(np.nanmean([r.server_cpu_us for r in res[f"echo-{m}"].values()])) for m in ("sync", "aio")}
    verdict = "faster" if best["sync"] >= best["aio"] else "within this run's noise of grpc.aio"
    lines += [
        "",
        f"The engine uses the **sync** server. Here it peaks at {best['sync']:,.0f} calls/s against "
        f"{best['aio']:,.0f} for grpc.aio ({verdict}) and spends {cpu['sync']:.0f} us of server CPU per call "
        f"against {cpu['aio']:.0f} (mean over the concurrencies). The query path blocks anyway (encoder thread, "
        "ANN libraries that release the GIL, SQLite), so an asyncio server would hand each call to an executor "
        "and pay for both models." + _pinned_note(res),
        "",
        "### Search",
        "",
        f"Vector queries: {res['n']:,} clustered 256-d vectors in hnswlib indices built with the indexer's "
        f"defaults{_params(res)}, as {' and as '.join(label for _, label in rows)} (shards are searched one "
        "after the other in the request thread); text queries: `products` of the tiny catalog "
        "embedded by an untrained MiniLM checkpoint (the encoder costs the same trained or not). Defaults: "
        "gRPC threads on 1 CPU (request_cpus 1), batch_max 32, no extra batch wait, torch_threads 1, bf16 "
        "autocast (this CPU has AVX-512 BF16). Cache-miss texts are never repeated. The ratios are to the bare "
        "echo (sync, placed by the OS), the floor the targets name.",
        "",
        "| workload | in flight | QPS | p50 ms | p99 ms | server CPU us/call | vs echo floor | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for c, r in e.items():
        if c in (1, 8, 32):
            lines.append(_row("echo floor (sync)", r))
    for key, label in rows:
        for c, r in res[key].items():
            lines.append(_row(f"vector query ({label})", r, e.get(c)))
    for c, r in res["text-hit"].items():
        lines.append(_row("text, cache hit", r, e.get(c)))
    for r in res["text-miss"].values():
        lines.append(_row("text, cache miss (batched, defaults)", r))
    for name, label in VARIANT_LABELS.items():
        for r in res[name].values():
            lines.append(_row(f"text, cache miss, {label}", r))
    ratios = {label: min(res[key][c].qps / e[c].qps for c in (8, 32)) for key, label in rows}
    hit_p50 = res["text-hit"][1].p50_ms
    batched = res["text-miss"][32].qps
    single = res["text-miss-unbatched"][32].qps
    single1 = res["text-miss"][1].qps
    ip = res.get("in-process", {})
    ok = {True: "met", False: "**missed**"}
    single = max(single, 1e-9)
    single1 = max(single1, 1e-9)
    lines += [
        "",
        "Targets:",
        "- vector-query throughput >= 0.7x the echo floor at 8 and 32 in flight: "
        + ", ".join(f"{v:.2f}x with {label} ({ok[v >= 0.7]})" for label, v in ratios.items()) + ".",
        f"- text query with a cache hit, p50 <= 2 ms: {hit_p50:.2f} ms at 1 in flight ({ok[hit_p50 <= 2.0]}).",
        f"- batched encoder throughput at 32 in flight >= 3x one at a time: {batched:,.0f} q/s vs "
        f"{single:,.0f} q/s with batch_max=1 at 32 in flight ({batched / single:.1f}x, "
        f"{ok[batched >= 3 * single]}) and {single1:,.0f} q/s at 1 in flight ({batched / single1:.1f}x).",
        "",
    ]
    lines += _connection_rows(res)
    if ip:
        floor_us = 1e6 / max(r.qps for r in e.values())
        why = ""
        if min(ratios.values(), default=1.0) < 0.7:
            why = (" A vector query costs the echo's work plus the Search handler's own (the ANN search and the "
                   "Python around it, the figures above), and every shard adds a whole search: where that "
                   "extra approaches the echo's cost per call, the client and the server sharing 2 cores cannot "
                   "reach 0.7x the floor.")
            peak = max(r.qps for r in e.values())
            if peak > 1.3 * 3000:
                why += (f" The floor ({peak:,.0f}/s) is also above PERF-FACTS' 3k/s: the load generator sends "
                        "pre-serialized requests through a raw method, which leaves more CPU to the server.")
        lines += [
            "Where a Search's time goes (one thread in the benchmark process, no gRPC, wall-clock microseconds "
            "per call, median of 3 runs of 2,000 calls): "
            + ", ".join(f"{k} {v:.0f}" for k, v in ip.items())
            + f". The sync echo floor costs about {floor_us:.0f} us of machine time per call at its best "
            "(client included)." + why,
            "",
        ]
    return "\n".join(lines)


def _connection_rows(res: dict[str, Any]) -> list[str]:
    """The vector query against the echo with calls spread over several connections, when the run measured it."""
    conns, echo, one = res.get("vector-conns"), res.get("echo-sync-conns"), res.get("echo-sync", {})
    if not conns or not echo:
        return []
    n = next(iter(echo.values())).channels
    label = _label("vector", res.get("vector-shards", {}))
    lines = [
        "### One connection or several",
        "",
        f"Every row above sends all calls over one connection (one busy client, its calls multiplexed as HTTP/2 "
        f"streams). The same workloads spread over {n} connections (several clients), ratios to the echo over "
        f"{n} connections:",
        "",
        "| workload | in flight | QPS | p50 ms | p99 ms | server CPU us/call | vs echo, same connections | errors |",
        "|---|---|---|---|---|---|---|---|",
    ]
    lines += [_row(f"echo floor (sync), {n} connections", r) for r in echo.values()]
    lines += [_row(f"vector query ({label}), {n} connections", r, echo.get(c)) for c, r in conns.items()]
    c = max(c for c in echo if c in conns)
    many, single = echo[c], one.get(c)
    if single is not None:
        lines += [
            "",
            f"At {c} in flight the echo answers {many.qps:,.0f} calls/s over {n} connections against "
            f"{single.qps:,.0f} over one ({many.server_cpu_us:,.0f} vs {single.server_cpu_us:,.0f} us of server "
            f"CPU per call); the engine's vector query answers {conns[c].qps:,.0f}: {conns[c].qps / many.qps:.2f}x "
            f"the echo here, {res['vector'][c].qps / single.qps:.2f}x over one connection.",
        ]
    return lines + [""]


def _pinned_note(res: dict[str, Any]) -> str:
    """What pinning does to the floor, when the run measured the echo on 1 CPU as well."""
    pinned, bare = res.get("echo-sync-1cpu"), res.get("echo-sync")
    if not pinned or not bare:
        return ""
    c = 8 if 8 in pinned and 8 in bare else max(pinned)
    return (f" The engine runs its gRPC threads on one CPU (`request_cpus`, engine/affinity.py): they take turns on "
            f"the GIL anyway, and handing it between cores (waking threads on the other, idle core) is what costs. "
            f"The echo placed the same way answers {pinned[c].qps:,.0f} calls/s at {c} in flight with "
            f"{pinned[c].server_cpu_us:,.0f} us of server CPU per call, against {bare[c].qps:,.0f} and "
            f"{bare[c].server_cpu_us:,.0f} when the OS places its threads.")


def _vector_rows(res: dict[str, Any]) -> list[tuple[str, str]]:
    """(result key, label) of the vector-query rows present in `res`, the build-default index first."""
    shards = res.get("vector-shards")
    if shards is None:  # results from before the shard count was recorded: "vector" had 2, "vector-1shard" 1
        return [(k, label) for k, label in (("vector", "2 shards"), ("vector-1shard", "1 shard")) if k in res]
    return [(key, _label(key, shards)) for key in VECTOR_INDICES if key in res]


def _params(res: dict[str, Any]) -> str:
    params = res.get("vector-params")
    return f" ({', '.join(f'{k} {v}' for k, v in sorted(params.items()))})" if params else ""


def write_section(path: Path, section: str) -> None:
    """Replace (or append) the "## Server" section, leaving every other section as it is."""
    text = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.S | re.M)
    if pattern.search(text):
        new = pattern.sub(lambda _: section.rstrip("\n") + "\n\n", text, count=1)
    else:
        new = text.rstrip("\n") + "\n\n" + section.rstrip("\n") + "\n"
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(new.rstrip("\n") + "\n")
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--n", type=int, default=100_000, help="vectors in the vector index")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per point")
    parser.add_argument("--warmup", type=float, default=1.0, help="warm-up seconds per point")
    parser.add_argument("--out", type=Path, default=None, help="BENCHMARKS.md to update (else print)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw results here")
    parser.add_argument("--from-json", type=Path, default=None,
                        help="render a section from the raw results of an earlier run instead of measuring")
    parser.add_argument("--in-process", action="store_true",
                        help="only build the vector indices and print the per-call costs of their query path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    command = "python -m engine.bench" + "".join(
        f" {a}" for a in (argv if argv is not None else sys.argv[1:]))
    machine = _machine()
    if args.in_process:
        with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
            res = run_in_process(args.n, Path(tmp))
        print(f"{command} ({machine}); microseconds per call, median of 3 runs of 2,000 calls:")
        for name, us in res["in-process"].items():
            print(f"  {name:68s} {us:8.1f}")
        if args.json:
            args.json.write_text(json.dumps(_jsonable(res), indent=1))
        return
    if args.from_json:
        res = _from_json(json.loads(args.from_json.read_text()))
        command, machine = res.get("command", command), res.get("machine", machine)
    else:
        with tempfile.TemporaryDirectory(prefix="engine-bench-") as tmp:
            res = run(args.n, args.seconds, args.warmup, Path(tmp))
        res["command"], res["machine"] = command, machine
    section = render(res, command, machine)
    if args.out:
        write_section(args.out, section)
    print(section)
    if args.json:
        args.json.write_text(json.dumps(_jsonable(res), indent=1))


def _from_json(raw: dict[str, Any]) -> dict[str, Any]:
    """Raw results back into LoadResults (keys of concurrency tables become ints again)."""
    out: dict[str, Any] = {}
    for key, value in raw.items():
        if isinstance(value, dict) and value and all(isinstance(v, dict) and "qps" in v for v in value.values()):
            out[key] = {int(c): LoadResult(**r) for c, r in value.items()}
        else:
            out[key] = value
    return out


def _jsonable(x: Any) -> Any:
    if isinstance(x, LoadResult):
        return asdict(x)
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    return x


if __name__ == "__main__":
    main()
