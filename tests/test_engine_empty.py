"""A real server on a loopback port before any generation exists: health, UNAVAILABLE, admin auth, reflection."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from catalog import Home
from engine.client import EngineClient
from engine.config import EngineConfig
from engine.server import EngineServer, create_server

TOKEN = "s3cret-token-for-tests"


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[EngineServer, int]]:
    cfg = EngineConfig(home=Home(tmp_path / "home"), port=0, metrics_port=-1, admin_token=TOKEN,
                       poll_interval_s=0.2, workers=4)
    srv, port = create_server(cfg)
    srv.start()
    yield srv, port
    srv.stop(0).wait(10)


def _code(err: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return err.value.code()  # type: ignore[attr-defined, no-any-return]


def test_no_generation_means_not_serving_and_unavailable(server: tuple[EngineServer, int]) -> None:
    srv, port = server
    with EngineClient(f"127.0.0.1:{port}", admin_token=TOKEN) as c:
        assert c.health() == "NOT_SERVING"
        assert c.health("omnisearch.v1.SearchService") == "NOT_SERVING"
        assert c.health("omnisearch.v1.AdminService") == "SERVING"
        with pytest.raises(grpc.RpcError) as err:
            c.search(index="pins", k=3, vector=[0.1] * 8)
        assert _code(err) == grpc.StatusCode.UNAVAILABLE
        assert "no index generation" in err.value.details()  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as err:
            c.embed(["hello"])
        assert _code(err) == grpc.StatusCode.UNAVAILABLE
        st = c.status()
        assert not st.serving and st.generation == 0
        assert "no manifest" in st.last_error
        # Request validation that needs no generation still answers INVALID_ARGUMENT first.
        with pytest.raises(grpc.RpcError) as err:
            c.search(index="pins", k=0, vector=[0.1] * 8)
        assert _code(err) == grpc.StatusCode.INVALID_ARGUMENT


def test_admin_calls_need_the_bearer_token(server: tuple[EngineServer, int]) -> None:
    _, port = server
    target = f"127.0.0.1:{port}"
    calls = ("status", "list_generations", "reload", "rollback")
    with EngineClient(target) as anonymous, EngineClient(target, admin_token="wrong") as wrong:
        for name in calls:
            with pytest.raises(grpc.RpcError) as err:
                getattr(anonymous, name)()
            assert _code(err) == grpc.StatusCode.UNAUTHENTICATED, name
            with pytest.raises(grpc.RpcError) as err:
                getattr(wrong, name)()
            assert _code(err) == grpc.StatusCode.PERMISSION_DENIED, name
        stub = anonymous.admin_stub
        from protos.omnisearch.v1 import omnisearch_pb2 as pb

        with pytest.raises(grpc.RpcError) as err:
            stub.Status(pb.StatusRequest(), metadata=[("authorization", f"Basic {TOKEN}")])
        assert _code(err) == grpc.StatusCode.UNAUTHENTICATED
    with EngineClient(target, admin_token=TOKEN) as ok:
        assert ok.status().serving is False
        with pytest.raises(grpc.RpcError) as err:
            ok.reload()  # authorised, but there is no manifest to load from
        assert _code(err) == grpc.StatusCode.FAILED_PRECONDITION


def test_reflection_lists_services_and_metrics_are_exposed(server: tuple[EngineServer, int]) -> None:
    srv, port = server
    with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = reflection_pb2_grpc.ServerReflectionStub(ch)
        req = reflection_pb2.ServerReflectionRequest(list_services="")
        resp = next(iter(stub.ServerReflectionInfo(iter([req]))))
        names = {s.name for s in resp.list_services_response.service}
    assert {"omnisearch.v1.SearchService", "omnisearch.v1.AdminService", "grpc.health.v1.Health"} <= names
    assert srv.metrics_port
    with EngineClient(f"127.0.0.1:{port}") as c, pytest.raises(grpc.RpcError):
        c.search(index="pins", k=1, vector=[0.0] * 4)
    body = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5).read().decode()
    assert 'omnisearch_requests_total{code="UNAVAILABLE",index="-",method="Search"} 1.0' in body.replace(
        'index="unknown"', 'index="-"')
    assert "omnisearch_active_generation 0.0" in body
    assert "omnisearch_encoder_batch_size_bucket" in body


def test_a_taken_port_is_a_clear_error(server: tuple[EngineServer, int], tmp_path: Path) -> None:
    _, port = server
    cfg = EngineConfig(home=Home(tmp_path / "other"), port=port, admin_token=TOKEN)
    with pytest.raises(OSError, match=f"cannot listen on 127.0.0.1:{port}"):
        create_server(cfg)
