"""A closed-loop gRPC load generator: keep N calls in flight, record per-call latency; no engine imports.

Requests are pre-serialized bytes sent through a raw unary method, so the client spends its CPU on gRPC only
(client and server share the machine's 2 cores; a leaner client leaves more for the server).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
import psutil


@dataclass(frozen=True)
class LoadResult:
    concurrency: int
    calls: int  # measured calls (after warm-up)
    errors: int
    seconds: float
    qps: float
    p50_ms: float
    p99_ms: float
    mean_ms: float
    codes: dict[str, int] = field(default_factory=dict)
    sent: int = 0  # calls issued in total (warm-up included); above len(requests) means requests repeated
    server_cpu_us: float = float("nan")  # CPU time (user + system) of `cpu_pids` per measured call
    client_cpu_us: float = float("nan")  # CPU time of this process per measured call
    channels: int = 1  # client connections the calls were spread over


def run_load(
    target: str,
    method: str,
    requests: Sequence[bytes],
    concurrency: int,
    duration_s: float = 5.0,
    max_calls: int = 1_000_000,
    warmup_s: float = 1.0,
    timeout_s: float = 10.0,
    metadata: Sequence[tuple[str, str]] | None = None,
    cpu_pids: Sequence[int] = (),
    channels: int = 1,
) -> LoadResult:
    """Send `requests` round-robin (each used once if there are enough) with `concurrency` calls in flight.

    Args:
        target: host:port.
        method: full method path, e.g. "/omnisearch.v1.SearchService/Search".
        requests: serialized request messages.
        concurrency: calls kept in flight.
        duration_s: measured period after `warmup_s`; the run also stops after `max_calls` measured calls.
        cpu_pids: server processes whose CPU time per call to report (CPU time holds up on a busy machine,
            where wall-clock rates depend on what else runs).
        channels: client connections; calls go to them in turn. One connection carries every call as HTTP/2
            streams (one busy client); several stand for several clients.
    """
    if not requests or concurrency < 1:
        raise ValueError("need requests and concurrency >= 1")
    if channels < 1:
        raise ValueError("need channels >= 1")
    # One TCP connection per channel (no shared subchannel pool): calls spread over `channels` connections,
    # as many clients would spread them, and servers sharing a port (SO_REUSEPORT) each get some.
    opts = [("grpc.use_local_subchannel_pool", 1)]
    chans = [grpc.insecure_channel(target, options=opts) for _ in range(channels)]
    stubs = [ch.unary_unary(method) for ch in chans]  # bytes in, bytes out
    lock = threading.Lock()
    finished = threading.Event()
    lat: list[float] = []
    codes: Counter[str] = Counter()
    state = {"next": 0, "open": concurrency, "measured": 0}
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s

    def issue() -> None:
        with lock:
            i = state["next"]
            state["next"] += 1
        t0 = time.perf_counter()
        fut = stubs[i % len(stubs)].future(requests[i % len(requests)], timeout=timeout_s, metadata=metadata)
        fut.add_done_callback(lambda f: done(f, t0))

    def done(f: grpc.Future, t0: float) -> None:
        now = time.perf_counter()
        err = f.exception()
        with lock:
            if t0 >= t_measure and now <= t_end:
                lat.append(now - t0)
                state["measured"] += 1
                if err is not None:
                    codes[err.code().name] += 1  # type: ignore[attr-defined]
            stop = now >= t_end or state["measured"] >= max_calls
            if stop:
                state["open"] -= 1
                if state["open"] == 0:
                    finished.set()
        if not stop:
            issue()

    procs = [psutil.Process(pid) for pid in cpu_pids]
    me = psutil.Process()
    cpu: dict[str, float] = {}

    def cpu_now() -> tuple[float, float]:
        server = sum(sum(p.cpu_times()[:2]) for p in procs)
        return server, sum(me.cpu_times()[:2])

    def sample(tag: str, at: float) -> None:
        time.sleep(max(0.0, at - time.perf_counter()))
        cpu[tag + "_server"], cpu[tag + "_client"] = cpu_now()

    def sample_window() -> None:
        sample("start", t_measure)
        sample("end", t_end)

    sampler = threading.Thread(target=sample_window, daemon=True)
    sampler.start()
    for _ in range(concurrency):
        issue()
    finished.wait(warmup_s + duration_s + timeout_s + 30)
    sampler.join(timeout_s)
    elapsed = min(time.perf_counter(), t_end) - t_measure
    for ch in chans:
        ch.close()
    arr = np.array(lat) * 1000.0
    n = len(arr)
    errors = sum(codes.values())
    return LoadResult(
        concurrency=concurrency,
        calls=n,
        errors=errors,
        seconds=elapsed,
        qps=(n - errors) / elapsed if elapsed > 0 else 0.0,
        p50_ms=float(np.percentile(arr, 50)) if n else float("nan"),
        p99_ms=float(np.percentile(arr, 99)) if n else float("nan"),
        mean_ms=float(arr.mean()) if n else float("nan"),
        codes=dict(codes),
        sent=state["next"],
        server_cpu_us=_per_call(cpu, "server", n) if procs else float("nan"),
        client_cpu_us=_per_call(cpu, "client", n),
        channels=channels,
    )


def _per_call(cpu: dict[str, float], who: str, calls: int) -> float:
    if f"end_{who}" not in cpu or not calls:
        return float("nan")
    return (cpu[f"end_{who}"] - cpu[f"start_{who}"]) / calls * 1e6
