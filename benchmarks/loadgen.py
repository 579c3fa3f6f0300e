"""A bounded async gRPC load generator: N requests in flight against a loopback SearchService for S seconds.

Every request is recorded (start, end, status, generation that answered) so that callers can cut the run into
windows, e.g. around generation swaps. The generator stops by itself: at the deadline, or after
`max_requests`, whichever comes first; a call never waits longer than `timeout_s`.
"""

from __future__ import annotations

import asyncio
import ipaddress
import itertools
import socket
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import grpc
import numpy as np
from numpy.typing import NDArray

from benchmarks.errors import NotLoopback
from protos.omnisearch.v1 import omnisearch_pb2 as pb
from protos.omnisearch.v1 import omnisearch_pb2_grpc as pb_grpc

MAX_REQUESTS = 1_000_000  # hard cap per setting, whatever the duration
WARMUP_LIMIT_S = 60.0  # a warm-up by request count never takes longer than this
CHANNEL_OPTIONS = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]


def split_target(target: str) -> tuple[str, int]:
    """("host", port) of "HOST:PORT" or "[v6]:PORT"."""
    host, sep, port = target.rpartition(":")
    if not sep or not port.isdigit():
        raise NotLoopback(f"target must be HOST:PORT, got {target!r}")
    return host.strip("[]"), int(port)


def check_loopback(target: str) -> str:
    """`target` unchanged when every address its host resolves to is a loopback address.

    Raises:
        NotLoopback: any other host; the benchmarks only ever load this machine.
    """
    host, port = split_target(target)
    try:
        infos = socket.getaddrinfo(host, port, proto=socket.IPPROTO_TCP)
    except socket.gaierror as exc:
        raise NotLoopback(f"cannot resolve {host!r}: {exc}") from None
    addresses = {str(info[4][0]) for info in infos}
    remote = sorted(a for a in addresses if not ipaddress.ip_address(a.split("%")[0]).is_loopback)
    if not addresses or remote:
        raise NotLoopback(
            f"refusing to load {target}: {host} resolves to non-loopback {remote or addresses}; "
            "the load generator only targets this machine (127.0.0.1, ::1, localhost)"
        )
    return target


@dataclass
class Record:
    """One request: times in seconds on the monotonic clock."""

    start: float
    end: float
    code: str  # "OK" or the gRPC status name
    generation: int  # generation that answered (0 when failed or unknown)


@dataclass
class LoadResult:
    """What one setting produced."""

    concurrency: int
    duration_s: float  # measured span, from the first start to the last end
    records: list[Record] = field(default_factory=list)

    def summary(self, records: list[Record] | None = None, span_s: float | None = None) -> dict[str, Any]:
        """Counts, QPS and latency percentiles (ms) of `records` (default: all of them)."""
        recs = self.records if records is None else records
        ok = [r for r in recs if r.code == "OK"]
        lat = np.array([(r.end - r.start) * 1e3 for r in ok], dtype=np.float64)
        span = self.duration_s if span_s is None else span_s
        errors = Counter(r.code for r in recs if r.code != "OK")

        def pct(q: float) -> float | None:
            return round(float(np.percentile(lat, q)), 3) if len(lat) else None

        return {
            "requests": len(recs),
            "ok": len(ok),
            "errors": sum(errors.values()),
            "error_codes": dict(errors),
            "qps": round(len(ok) / span, 1) if span > 0 else 0.0,
            "latency_ms": {
                "p50": pct(50), "p95": pct(95), "p99": pct(99),
                "mean": round(float(lat.mean()), 3) if len(lat) else None,
                "max": round(float(lat.max()), 3) if len(lat) else None,
            },
        }


RequestFactory = Callable[[int], pb.SearchRequest]


async def _worker(
    stub: Any, make: RequestFactory, seq: Iterator[int], budget: list[int], deadline: float, timeout_s: float,
    out: list[Record],
) -> None:
    clock = time.monotonic
    while budget[0] > 0 and clock() < deadline:
        budget[0] -= 1
        req = make(next(seq))  # numbers run on across warm-up and measurement: unique texts stay unique
        t0 = clock()
        try:
            res = await stub.Search(req, timeout=timeout_s)
            out.append(Record(t0, clock(), "OK", int(res.generation)))
        except grpc.aio.AioRpcError as err:
            out.append(Record(t0, clock(), err.code().name, 0))


async def run_load(
    target: str,
    make: RequestFactory,
    concurrency: int,
    duration_s: float,
    warmup_s: float = 0.5,
    warmup_requests: int = 0,
    max_requests: int = MAX_REQUESTS,
    timeout_s: float = 10.0,
    channel: grpc.aio.Channel | None = None,
) -> LoadResult:
    """Keep `concurrency` Search calls in flight for `duration_s` seconds after `warmup_s` of unrecorded calls.

    Args:
        target: HOST:PORT on the loopback interface (checked).
        make: request number -> SearchRequest.
        warmup_requests: unrecorded calls to make first (e.g. the text pool of the cache-hit mix), then
            `warmup_s` more seconds of unrecorded calls.
    """
    check_loopback(target)
    if concurrency < 1 or duration_s <= 0:
        raise ValueError("concurrency must be >= 1 and duration_s > 0")
    own = channel is None
    ch = channel or grpc.aio.insecure_channel(target, options=CHANNEL_OPTIONS)
    seq = itertools.count()
    try:
        stub = pb_grpc.SearchServiceStub(ch)
        scratch: list[Record] = []  # warm-up calls are not recorded

        async def phase(budget: int, seconds: float, out: list[Record]) -> None:
            left, end = [budget], time.monotonic() + seconds
            await asyncio.gather(*(_worker(stub, make, seq, left, end, timeout_s, out) for _ in range(concurrency)))

        if warmup_requests > 0:  # e.g. one round over the text pool of the cache-hit mix
            await phase(warmup_requests, WARMUP_LIMIT_S, scratch)
        if warmup_s > 0:
            await phase(max_requests, warmup_s, scratch)
        records: list[Record] = []
        await phase(max_requests, duration_s, records)
    finally:
        if own:
            await ch.close()
    span = (max(r.end for r in records) - min(r.start for r in records)) if records else duration_s
    return LoadResult(concurrency, span, records)


# ------------------------------------------------------------------ request mixes
MIXES = ("vector", "text-hit", "text-miss")
WORDS = (
    "red running shoes linen dress oak table garden hose lamp wool scarf leather bag ceramic mug bike helmet "
    "blue sofa cotton towel wall art kitchen knife desk chair winter coat silver ring yoga mat coffee grinder "
    "wooden toy phone case rain boots floor tile paint brush cat bed camping tent"
).split()


def random_vectors(n: int, dim: int, seed: int = 0) -> NDArray[np.float32]:
    """`n` seeded random unit vectors (n, dim)."""
    x = np.random.default_rng(seed).standard_normal((n, dim)).astype(np.float32)  # (n, dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def request_factory(mix: str, index: str, k: int = 10, dim: int | None = None, texts: list[str] | None = None,
                    pool: int = 256, seed: int = 0) -> RequestFactory:
    """Request number -> SearchRequest for a mix.

    vector: a pool of random unit vectors of `dim` (no encoder, no cache);
    text-hit: a pool of `pool` texts, repeated (the query-embedding cache answers after the first round);
    text-miss: every text unique (number suffix), so every call runs the encoder.
    """
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {MIXES}, got {mix!r}")
    if mix == "vector":
        if not dim:
            raise ValueError("the vector mix needs the index dimension")
        reqs = [pb.SearchRequest(index=index, k=k, vector=pb.Vector(values=v.tolist()))
                for v in random_vectors(pool, dim, seed)]
        return lambda i: reqs[i % len(reqs)]
    rng = np.random.default_rng(seed)
    base = list(texts or [])
    while len(base) < pool:
        base.append(" ".join(rng.choice(WORDS, size=3)))
    base = base[:pool]
    if mix == "text-hit":
        hit = [pb.SearchRequest(index=index, k=k, text=t) for t in base]
        return lambda i: hit[i % len(hit)]
    tag = f"{seed}{int(time.time() * 1000) % 10**9}"  # differs per run, so a rerun misses the cache too
    return lambda i: pb.SearchRequest(index=index, k=k, text=f"{base[i % len(base)]} {tag}-{i}")
