"""gRPC servicers: proto <-> Engine calls, domain errors -> status codes, per-call metrics, admin auth."""

from __future__ import annotations

import hmac
import logging
import time
from collections.abc import Callable
from typing import TypeVar

import grpc
import numpy as np
from numpy.typing import NDArray

from engine.core import Engine, EngineStatus, SearchResult, Timings
from engine.errors import (
    DeadlineExceeded,
    GenerationLoadFailed,
    InvalidRequest,
    ManifestUnavailable,
    NotServing,
    Overloaded,
    TextQueriesUnsupported,
)
from protos.omnisearch.v1 import omnisearch_pb2 as pb
from protos.omnisearch.v1 import omnisearch_pb2_grpc as pb_grpc

log = logging.getLogger(__name__)

SEARCH_SERVICE = "omnisearch.v1.SearchService"
ADMIN_SERVICE = "omnisearch.v1.AdminService"

# The one place domain errors become status codes.
STATUS_OF: dict[type[Exception], grpc.StatusCode] = {
    InvalidRequest: grpc.StatusCode.INVALID_ARGUMENT,
    NotServing: grpc.StatusCode.UNAVAILABLE,
    TextQueriesUnsupported: grpc.StatusCode.FAILED_PRECONDITION,
    Overloaded: grpc.StatusCode.RESOURCE_EXHAUSTED,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
    GenerationLoadFailed: grpc.StatusCode.FAILED_PRECONDITION,
    ManifestUnavailable: grpc.StatusCode.FAILED_PRECONDITION,
}

R = TypeVar("R")


def status_of(err: Exception) -> grpc.StatusCode:
    for cls in type(err).__mro__:
        code = STATUS_OF.get(cls)  # type: ignore[call-overload]
        if code is not None:
            return code
    return grpc.StatusCode.INTERNAL


# gRPC reports about 9.2e18 s left when the client set no deadline; waits that long overflow the platform's
# time_t (a text query would fail while waiting for the encoder), so anything beyond a year means none.
_NO_DEADLINE_S = 365 * 24 * 3600.0


def _deadline(context: grpc.ServicerContext) -> float | None:
    left = context.time_remaining()
    return None if left is None or left > _NO_DEADLINE_S else time.monotonic() + left


def timings_pb(t: Timings) -> pb.Timings:
    return pb.Timings(
        embed_ms=t.embed_ms, search_ms=t.search_ms, hydrate_ms=t.hydrate_ms, total_ms=t.total_ms,
        cache_hit=t.cache_hit, batch_size=t.batch_size,
    )


def search_response(res: SearchResult) -> pb.SearchResponse:
    # Hits are appended in place: half the cost of building pb.Hit objects and handing over a list; fields
    # left at their defaults are not passed at all.
    out = pb.SearchResponse(generation=res.generation, checkpoint_id=res.checkpoint_id, index=res.index)
    add = out.hits.add
    for h in res.hits:
        if h.fields:
            add(id=h.id, score=h.score, kind=h.kind, fields=h.fields)
        elif h.kind:
            add(id=h.id, score=h.score, kind=h.kind)
        else:
            add(id=h.id, score=h.score)
    t, ot = res.timings, out.timings
    ot.embed_ms, ot.search_ms, ot.hydrate_ms, ot.total_ms = t.embed_ms, t.search_ms, t.hydrate_ms, t.total_ms
    ot.cache_hit, ot.batch_size = t.cache_hit, t.batch_size
    return out


_PACKED_HEADERS: dict[int, bytes] = {}  # float count -> tag and length prefix of Vector.values, packed


def _packed_header(n: int) -> bytes:
    head = _PACKED_HEADERS.get(n)
    if head is None:
        size, varint = 4 * n, bytearray()
        while True:
            byte, size = size & 0x7F, size >> 7
            varint.append(byte | (0x80 if size else 0))
            if not size:
                break
        head = b"\x0a" + bytes(varint)  # field 1, wire type 2 (length-delimited)
        if len(_PACKED_HEADERS) < 64:  # a handful of dimensions in practice; bounded anyway
            _PACKED_HEADERS[n] = head
    return head


def vector_array(vector: pb.Vector) -> NDArray[np.float32]:
    """The values of a `Vector` as float32 (n,), read from its packed encoding in one copy.

    Iterating the repeated field costs ~7 us for 256 floats, the packed bytes ~1 us. proto3 serializes
    `repeated float` packed: the bytes are the tag and length of field 1 followed by the little-endian floats.
    Anything else (unknown fields a newer client added, say) takes the slow, general path.
    """
    n = len(vector.values)
    raw = vector.SerializeToString()
    head = _packed_header(n) if n else b""
    if len(raw) == len(head) + 4 * n and raw.startswith(head):
        return np.frombuffer(raw, dtype="<f4", count=n, offset=len(head)).astype(np.float32)  # a writable copy
    return np.asarray(vector.values, dtype=np.float32)


class _Calls:
    """Runs one RPC body: metrics, error translation, in-flight gauge."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.metrics = engine.metrics

    def label(self, index: str) -> str:
        # Bounded label values: names a client made up all count as "unknown".
        cur = self.engine.generations.current
        if cur is not None and (index in cur.indices or index in cur.spaces):
            return index
        return "unknown" if index else "-"

    def abort(self, method: str, context: grpc.ServicerContext, err: Exception) -> grpc.StatusCode:
        """Abort the call with the status code of `err` (never returns: `context.abort` raises)."""
        code = status_of(err)
        if code is grpc.StatusCode.INTERNAL:
            log.exception("%s failed", method)
            message = f"internal error: {type(err).__name__}: {err}"
        else:
            message = str(err)
        context.abort(code, message)
        return code  # unreachable with a real context

    def run(self, method: str, index: str, context: grpc.ServicerContext, body: Callable[[], R]) -> R:
        t0 = time.perf_counter()
        code = grpc.StatusCode.OK
        self.metrics.in_flight.inc()
        try:
            return body()
        except Exception as err:
            code = status_of(err)
            self.abort(method, context, err)
            raise  # unreachable: abort raises
        finally:
            self.metrics.in_flight.dec()
            self.metrics.observe_call(method, self.label(index), code.name, time.perf_counter() - t0)


class SearchServicer(pb_grpc.SearchServiceServicer):
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.calls = _Calls(engine)

    def Search(self, request: pb.SearchRequest, context: grpc.ServicerContext) -> pb.SearchResponse:
        # The body of `_Calls.run`, inlined: Search is the call that runs thousands of times a second, and the
        # server holds the GIL for every line of Python here.
        t0 = time.perf_counter()
        calls = self.calls
        metrics = calls.metrics
        code = grpc.StatusCode.OK
        metrics.in_flight.inc()
        try:
            which = request.WhichOneof("query")
            if which is None:
                raise InvalidRequest("set either text or vector")
            kinds: list[str] = []
            languages: list[str] = []
            if request.HasField("filters"):
                kinds, languages = list(request.filters.kinds), list(request.filters.languages)
            ef = nprobe = 0
            if request.HasField("params"):
                ef, nprobe = request.params.ef, request.params.nprobe
            res = self.engine.search(
                index=request.index,
                k=request.k,
                text=request.text if which == "text" else None,
                vector=vector_array(request.vector) if which == "vector" else None,
                kinds=kinds,
                languages=languages,
                ef=ef,
                nprobe=nprobe,
                include_fields=request.include_fields,
                deadline=_deadline(context),
            )
            out = search_response(res)
            out.timings.total_ms = (time.perf_counter() - t0) * 1000.0
            return out
        except Exception as err:
            code = status_of(err)
            calls.abort("Search", context, err)
            raise  # unreachable: abort raises
        finally:
            metrics.in_flight.dec()
            metrics.observe_call("Search", calls.label(request.index), code.name, time.perf_counter() - t0)

    def Embed(self, request: pb.EmbedRequest, context: grpc.ServicerContext) -> pb.EmbedResponse:
        def body() -> pb.EmbedResponse:
            res = self.engine.embed(list(request.texts), request.space or "model", _deadline(context))
            return pb.EmbedResponse(
                vectors=[pb.Vector(values=v.tolist()) for v in res.vectors],
                dim=int(res.vectors.shape[1]),
                generation=res.generation,
                checkpoint_id=res.checkpoint_id,
                timings=timings_pb(res.timings),
            )

        return self.calls.run("Embed", request.space or "model", context, body)


def status_response(st: EngineStatus) -> pb.StatusResponse:
    c, b = st.cache, st.batcher
    return pb.StatusResponse(
        serving=st.serving,
        generation=st.generation,
        checkpoint_id=st.checkpoint_id,
        checkpoint=st.checkpoint,
        indices=[pb.IndexStatus(**ix) for ix in st.indices],
        loaded_at=st.loaded_at,
        manifest_generation=st.manifest_generation,
        last_error=st.last_error,
        last_failed_generation=st.last_failed_generation,
        last_error_at=st.last_error_at,
        in_flight=st.in_flight,
        draining=st.draining,
        swaps=st.swaps,
        cache=pb.CacheStats(
            size=c.size, capacity=c.capacity, ttl_s=c.ttl_s, hits=c.hits, misses=c.misses,
            expired=c.expired, hit_rate=c.hit_rate,
        ),
        batcher=pb.BatcherStats(
            batches=b.batches, items=b.items, mean_batch_size=b.mean_batch_size,
            max_batch_size_seen=b.max_batch_size_seen, queue_depth=b.queue_depth, rejected=b.rejected,
            expired=b.expired, max_batch=b.max_batch, max_wait_ms=b.max_wait_ms,
        ),
        uptime_s=st.uptime_s,
        rss_bytes=st.rss_bytes,
    )


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Status, Reload, Rollback and ListGenerations, each behind the bearer-token check."""

    def __init__(self, engine: Engine, auth: AdminAuth) -> None:
        self.engine = engine
        self.calls = _Calls(engine)
        self.auth = auth

    def _run(self, method: str, context: grpc.ServicerContext, body: Callable[[], R]) -> R:
        self.auth.check(context)  # aborts unauthorised calls before they count as answered
        return self.calls.run(method, "", context, body)

    def Status(self, request: pb.StatusRequest, context: grpc.ServicerContext) -> pb.StatusResponse:
        return self._run("Status", context, lambda: status_response(self.engine.status()))

    def Reload(self, request: pb.ReloadRequest, context: grpc.ServicerContext) -> pb.ReloadResponse:
        def body() -> pb.ReloadResponse:
            out = self.engine.reload(force=request.force)
            return pb.ReloadResponse(changed=out.changed, generation=out.generation, message=out.message)

        return self._run("Reload", context, body)

    def Rollback(self, request: pb.RollbackRequest, context: grpc.ServicerContext) -> pb.RollbackResponse:
        def body() -> pb.RollbackResponse:
            out = self.engine.rollback()
            return pb.RollbackResponse(changed=out.changed, generation=out.generation, message=out.message)

        return self._run("Rollback", context, body)

    def ListGenerations(
        self, request: pb.ListGenerationsRequest, context: grpc.ServicerContext
    ) -> pb.ListGenerationsResponse:
        def body() -> pb.ListGenerationsResponse:
            gens = sorted(self.engine.generations.list_generations(), key=lambda g: -int(g.id))
            cur = self.engine.generations.current
            return pb.ListGenerationsResponse(
                generations=[
                    pb.GenerationInfo(
                        id=int(g.id), state=g.state, created_at=g.created_at or "",
                        published_at=g.published_at or "", checkpoint=str(g.checkpoint or ""),
                        checkpoint_id=g.checkpoint_id or "", message=g.message or "",
                        indices=sorted(g.indices),
                    )
                    for g in gens
                ],
                serving_generation=cur.generation if cur else 0,
            )

        return self._run("ListGenerations", context, body)


class AdminAuth:
    """Admin calls need `authorization: Bearer <token>`: missing -> UNAUTHENTICATED, wrong -> PERMISSION_DENIED.

    The Admin servicer checks it itself instead of a server interceptor: gRPC runs interceptors on every call,
    Search included, where one cost ~10 us of server CPU per call (a minimal sync server on this machine, 135 vs
    150 us per call), for a check that only Admin calls need.
    """

    def __init__(self, token: str) -> None:
        if not token:
            raise ValueError("the admin token must not be empty")
        self._token = token.encode()

    def check(self, context: grpc.ServicerContext) -> None:
        """Return if the call carries the token; otherwise abort it with the status code above."""
        auth = ""
        for key, value in context.invocation_metadata() or ():
            if key == "authorization":
                auth = value if isinstance(value, str) else value.decode()
        scheme, _, token = auth.partition(" ")
        if not auth or scheme.lower() != "bearer" or not token.strip():
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "admin calls need 'authorization: Bearer <token>'")
        if not hmac.compare_digest(token.strip().encode(), self._token):
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "the admin token is not valid")
