"""Python client of the engine: search, embed, status, reload, rollback, health."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc
from numpy.typing import NDArray

from engine.config import TOKEN_ENV, TOKEN_FILE
from protos.omnisearch.v1 import omnisearch_pb2 as pb
from protos.omnisearch.v1 import omnisearch_pb2_grpc as pb_grpc


def find_admin_token(home_root: Path | None = None) -> str | None:
    """$OMNISEARCH_ADMIN_TOKEN, else the token file a local server wrote into its home."""
    env = os.environ.get(TOKEN_ENV)
    if env:
        return env
    if home_root is not None and (home_root / TOKEN_FILE).exists():
        return (home_root / TOKEN_FILE).read_text().strip()
    return None


class EngineClient:
    """A channel to one engine.

    Example:
        >>> with EngineClient("127.0.0.1:50051") as c:
        ...     res = c.search(text="red running shoes", index="products", k=5)
        ...     [(h.id, h.score) for h in res.hits]

    Errors surface as `grpc.RpcError` with the server's status code and message.
    """

    def __init__(
        self,
        target: str,
        admin_token: str | None = None,
        timeout: float | None = 10.0,
        root_certificates: bytes | None = None,
        channel: grpc.Channel | None = None,
    ) -> None:
        self.target = target
        self.admin_token = admin_token
        self.timeout = timeout
        if channel is not None:
            self.channel = channel
        elif root_certificates is not None:
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(root_certificates))
        else:
            self.channel = grpc.insecure_channel(target)
        self.search_stub = pb_grpc.SearchServiceStub(self.channel)
        self.admin_stub = pb_grpc.AdminServiceStub(self.channel)
        self.health_stub = health_pb2_grpc.HealthStub(self.channel)

    def close(self) -> None:
        self.channel.close()

    def __enter__(self) -> EngineClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _timeout(self, timeout: float | None) -> float | None:
        return self.timeout if timeout is None else timeout

    def _admin_md(self) -> list[tuple[str, str]]:
        return [("authorization", f"Bearer {self.admin_token}")] if self.admin_token else []

    # ------------------------------------------------------------------ search
    @staticmethod
    def search_request(
        index: str,
        k: int = 10,
        text: str | None = None,
        vector: Sequence[float] | NDArray[Any] | None = None,
        kinds: Sequence[str] = (),
        languages: Sequence[str] = (),
        ef: int = 0,
        nprobe: int = 0,
        include_fields: bool = False,
    ) -> pb.SearchRequest:
        """The SearchRequest message (text or vector, not both)."""
        if (text is None) == (vector is None):
            raise ValueError("give exactly one of text or vector")
        req = pb.SearchRequest(
            index=index,
            k=k,
            filters=pb.Filters(kinds=list(kinds), languages=list(languages)),
            params=pb.SearchParams(ef=ef, nprobe=nprobe),
            include_fields=include_fields,
        )
        if text is not None:
            req.text = text
        else:
            req.vector.values.extend(np.asarray(vector, dtype=np.float32).ravel().tolist())
        return req

    def search(
        self,
        index: str,
        k: int = 10,
        text: str | None = None,
        vector: Sequence[float] | NDArray[Any] | None = None,
        kinds: Sequence[str] = (),
        languages: Sequence[str] = (),
        ef: int = 0,
        nprobe: int = 0,
        include_fields: bool = False,
        timeout: float | None = None,
    ) -> pb.SearchResponse:
        """Top-k hits of `index` for a text or a vector."""
        req = self.search_request(index, k, text, vector, kinds, languages, ef, nprobe, include_fields)
        return self.search_stub.Search(req, timeout=self._timeout(timeout))

    def embed(
        self, texts: Sequence[str], space: str = "model", timeout: float | None = None
    ) -> NDArray[np.float32]:
        """Query embeddings (n, dim) of `texts` in `space`."""
        res = self.search_stub.Embed(pb.EmbedRequest(texts=list(texts), space=space), timeout=self._timeout(timeout))
        return np.array([list(v.values) for v in res.vectors], dtype=np.float32).reshape(len(res.vectors), res.dim)

    # ------------------------------------------------------------------ admin
    def status(self, timeout: float | None = None) -> pb.StatusResponse:
        return self.admin_stub.Status(pb.StatusRequest(), timeout=self._timeout(timeout), metadata=self._admin_md())

    def reload(self, force: bool = False, timeout: float | None = 120.0) -> pb.ReloadResponse:
        return self.admin_stub.Reload(pb.ReloadRequest(force=force), timeout=timeout, metadata=self._admin_md())

    def rollback(self, timeout: float | None = 120.0) -> pb.RollbackResponse:
        return self.admin_stub.Rollback(pb.RollbackRequest(), timeout=timeout, metadata=self._admin_md())

    def list_generations(self, timeout: float | None = None) -> pb.ListGenerationsResponse:
        return self.admin_stub.ListGenerations(
            pb.ListGenerationsRequest(), timeout=self._timeout(timeout), metadata=self._admin_md()
        )

    # ------------------------------------------------------------------ health
    def health(self, service: str = "", timeout: float | None = None) -> str:
        """"SERVING", "NOT_SERVING", ... of the standard grpc.health.v1 service."""
        res = self.health_stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=self._timeout(timeout))
        return str(health_pb2.HealthCheckResponse.ServingStatus.Name(res.status))

    def wait_until_serving(self, timeout: float = 60.0, poll_s: float = 0.05) -> None:
        """Block until health says SERVING.

        Raises:
            TimeoutError: not serving within `timeout` seconds.
        """
        import time

        end = time.monotonic() + timeout
        last = "UNKNOWN"
        while time.monotonic() < end:
            try:
                last = self.health(timeout=min(2.0, max(0.1, end - time.monotonic())))
                if last == "SERVING":
                    return
            except grpc.RpcError as err:
                last = f"{err.code().name}"  # type: ignore[attr-defined]
            time.sleep(poll_s)
        raise TimeoutError(f"{self.target} not SERVING after {timeout:.0f} s (last: {last})")
