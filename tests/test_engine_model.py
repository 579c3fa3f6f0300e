"""A live server over generations embedded with a real (untrained, MiniLM) checkpoint: text queries, spaces,
Embed, the cache and its TTL, micro-batching, load shedding, deadlines, and encoder + generation swaps."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from catalog import Catalog, Home
from engine.testing import (
    loopback_config,
    model_generation,
    running_server,
    tiny_checkpoint,
    write_tiny_catalog,
)

LEGACY_DIM = 8


@dataclass
class Deployment:
    home: Home
    checkpoint: str
    generation: int
    model: Any  # encoders.OmniSearchSage loaded from the checkpoint


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    import encoders

    home = Home(tmp_path_factory.mktemp("model") / "home").ensure()
    write_tiny_catalog(home, legacy_dim=LEGACY_DIM)
    ckpt = tiny_checkpoint(home, legacy={"pinsage": LEGACY_DIM})
    rec = model_generation(home, ckpt)
    yield Deployment(home, ckpt, rec.id, encoders.load(ckpt))


def _code(exc: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return exc.value.code()  # type: ignore[attr-defined, no-any-return]


def test_text_queries_search_each_index_in_its_own_space(deployment: Deployment) -> None:
    d = deployment
    with Catalog(d.home.catalog_db, read_only=True) as cat:
        pins = list(cat.entities("pin"))
        _, legacy_x = cat.legacy_vectors("pinsage")
        legacy_ids, _ = cat.legacy_vectors("pinsage")
    with running_server(loopback_config(d.home)) as (_, client):
        st = client.status()
        assert {i.name: i.space for i in st.indices} == {
            "docs": "model", "pins": "model", "products": "model", "queries": "model",
            "legacy-pinsage": "legacy-pinsage",
        }
        assert st.checkpoint_id == d.model.checkpoint_id

        text = "red running shoes"
        res = client.search(index="pins", k=3, text=text)
        assert res.generation == d.generation and res.checkpoint_id == d.model.checkpoint_id
        xq = d.model.embed_queries([text])[0]
        xb = d.model.embed_entities(pins)
        exact = [pins[i]["id"] for i in np.argsort(-(xb @ xq))[:3]]
        assert [h.id for h in res.hits] == exact
        assert all(h.kind == "pin" for h in res.hits)

        leg = client.search(index="legacy-pinsage", k=3, text=text)
        lq = d.model.embed_queries([text], space="legacy-pinsage")[0]
        assert [h.id for h in leg.hits] == [legacy_ids[i] for i in np.argsort(-(legacy_x @ lq))[:3]]

        rel = client.search(index="queries", k=2, text="red shoes", include_fields=True)
        assert rel.hits[0].id == "q-1" and rel.hits[0].kind == "query"
        assert rel.hits[0].fields["text"] == "red shoes"


def test_embed_matches_the_checkpoint(deployment: Deployment) -> None:
    d = deployment
    with running_server(loopback_config(d.home)) as (_, client):
        texts = ["red shoes", "zapatos rojos", "Rezept für Kekse"]
        got = client.embed(texts)
        np.testing.assert_allclose(got, d.model.embed_queries(texts), atol=1e-5)
        leg = client.embed(texts, space="legacy-pinsage")
        assert leg.shape == (3, LEGACY_DIM)
        np.testing.assert_allclose(leg, d.model.embed_queries(texts, space="legacy-pinsage"), atol=1e-5)
        with pytest.raises(grpc.RpcError) as exc:
            client.embed(texts, space="legacy-nope")
        assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT
        with pytest.raises(grpc.RpcError) as exc:
            client.embed([])
        assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT
    with running_server(loopback_config(d.home, encoder_bf16=True)) as (_, client):
        fast = client.embed(texts)
        exact = d.model.embed_queries(texts)
        cosine = (fast * exact).sum(axis=1) / np.linalg.norm(fast, axis=1) / np.linalg.norm(exact, axis=1)
        assert cosine.min() > 0.999  # bf16 autocast serves (nearly) the same space


def test_cache_hits_normalised_text_and_expires_after_ttl(deployment: Deployment) -> None:
    with running_server(loopback_config(deployment.home, cache_ttl_s=0.6)) as (srv, client):
        first = client.search(index="products", k=2, text="cordless drill")
        second = client.search(index="products", k=2, text="  cordless \t drill ")
        assert not first.timings.cache_hit and first.timings.batch_size >= 1
        assert second.timings.cache_hit and second.timings.batch_size == 0
        assert [h.id for h in second.hits] == [h.id for h in first.hits]
        assert second.timings.embed_ms < first.timings.embed_ms
        time.sleep(0.8)
        third = client.search(index="products", k=2, text="cordless drill")
        assert not third.timings.cache_hit
        c = client.status().cache
        assert c.expired == 1 and c.hits == 1 and c.ttl_s == pytest.approx(0.6)
        # The same text in another space is another key.
        leg = client.search(index="legacy-pinsage", k=2, text="cordless drill")
        assert not leg.timings.cache_hit


def test_concurrent_misses_share_encoder_batches(deployment: Deployment) -> None:
    cfg = loopback_config(deployment.home, batch_max=16, batch_max_wait_ms=50.0, metrics_port=-1)
    with running_server(cfg) as (srv, client):
        before = client.status().batcher
        texts = [f"garden tools number {i}" for i in range(16)]
        with ThreadPoolExecutor(16) as pool:
            results = list(pool.map(lambda t: client.search(index="products", k=1, text=t), texts))
        sizes = [r.timings.batch_size for r in results]
        assert max(sizes) > 1, sizes
        after = client.status().batcher
        assert after.items - before.items == 16
        assert after.batches - before.batches < 16  # fewer encoder calls than queries
        assert after.max_batch_size_seen > 1
        import urllib.request

        body = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5).read().decode()
        le1 = [line for line in body.splitlines() if line.startswith('omnisearch_encoder_batch_size_bucket{le="1.0"}')]
        count = [line for line in body.splitlines() if line.startswith("omnisearch_encoder_batch_size_count")]
        assert float(count[0].split()[-1]) > float(le1[0].split()[-1])  # some batches were larger than 1


def test_full_queue_sheds_load_with_resource_exhausted(deployment: Deployment) -> None:
    cfg = loopback_config(deployment.home, batch_max=1, queue_max=2, workers=32)
    with running_server(cfg) as (_, client):
        codes: list[str] = []

        def one(i: int) -> None:
            try:
                client.search(index="pins", k=1, text=f"unique query {i}")
                codes.append("OK")
            except grpc.RpcError as err:
                codes.append(err.code().name)  # type: ignore[attr-defined]

        threads = [threading.Thread(target=one, args=(i,)) for i in range(24)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert "RESOURCE_EXHAUSTED" in codes and "OK" in codes
        assert set(codes) <= {"OK", "RESOURCE_EXHAUSTED"}
        assert client.status().batcher.rejected == codes.count("RESOURCE_EXHAUSTED")


def test_deadline_exceeded_while_waiting_for_the_encoder(deployment: Deployment) -> None:
    # A batcher that waits 1 s to fill a batch: a 0.2 s deadline passes while queued.
    cfg = loopback_config(deployment.home, batch_max=64, batch_max_wait_ms=1000.0, metrics_port=-1)
    with running_server(cfg) as (srv, client):
        before = client.status().batcher.items
        with pytest.raises(grpc.RpcError) as exc:
            client.search(index="pins", k=1, text="never encoded", timeout=0.2)
        assert _code(exc) == grpc.StatusCode.DEADLINE_EXCEEDED
        time.sleep(1.2)  # let the batch window close
        assert client.status().batcher.items == before  # the server dropped it instead of encoding it
        ok = client.search(index="pins", k=1, text="encoded in time", timeout=5)
        assert ok.hits


def test_a_text_miss_without_a_client_deadline_is_answered(deployment: Deployment) -> None:
    # A client that sets no deadline (grpcurl, a bare stub) still waits for the encoder, not an error.
    from protos.omnisearch.v1 import omnisearch_pb2 as pb

    with running_server(loopback_config(deployment.home)) as (_, client):
        res = client.search_stub.Search(pb.SearchRequest(text="a text no one sent before", index="pins", k=2))
        assert len(res.hits) == 2 and not res.timings.cache_hit and res.timings.batch_size >= 1


def test_generation_and_encoder_swap_together(deployment: Deployment, tmp_path: Path) -> None:
    d = deployment
    # A private copy of the home, so the module's deployment stays as it is for other tests.
    import shutil

    home = Home(tmp_path / "home")
    shutil.copytree(d.home.root, home.root)
    with running_server(loopback_config(home, poll_interval_s=0.0)) as (_, client):
        a = client.search(index="pins", k=3, text="chocolate cookies")
        assert a.checkpoint_id == d.model.checkpoint_id
        ckpt_b = tiny_checkpoint(home, name="tiny-b", seed=1, legacy={"pinsage": LEGACY_DIM})
        rec_b = model_generation(home, ckpt_b)
        out = client.reload()
        assert out.changed and out.generation == rec_b.id
        b = client.search(index="pins", k=3, text="chocolate cookies")
        assert b.generation == rec_b.id and b.checkpoint_id not in ("", a.checkpoint_id)
        assert not b.timings.cache_hit  # the old encoder's cached vector is not reused
        import encoders

        model_b = encoders.load(ckpt_b)
        assert b.checkpoint_id == model_b.checkpoint_id
        np.testing.assert_allclose(client.embed(["chocolate cookies"])[0],
                                   model_b.embed_queries(["chocolate cookies"])[0], atol=1e-5)
        assert client.rollback().generation == a.generation
        back = client.search(index="pins", k=3, text="chocolate cookies")
        assert back.checkpoint_id == a.checkpoint_id and back.timings.cache_hit  # A's entry is still valid
        assert [h.id for h in back.hits] == [h.id for h in a.hits]


def test_graceful_stop_finishes_in_flight_calls(deployment: Deployment) -> None:
    from grpc_health.v1 import health_pb2

    from engine.client import EngineClient
    from engine.server import create_server

    # The batcher holds a lone text for 0.6 s, so the call is surely in flight when stop() starts.
    cfg = loopback_config(deployment.home, batch_max=64, batch_max_wait_ms=600.0)
    srv, port = create_server(cfg)
    srv.start()
    with EngineClient(f"127.0.0.1:{port}") as client:
        client.wait_until_serving(60)
        req = client.search_request("pins", 2, text="in flight during shutdown")
        fut = client.search_stub.Search.future(req, timeout=10)
        time.sleep(0.15)
        stopped = srv.stop(5.0)
        state = srv.health.Check(health_pb2.HealthCheckRequest(service=""), None).status
        assert state == health_pb2.HealthCheckResponse.NOT_SERVING
        res = fut.result()
        assert len(res.hits) == 2 and res.timings.batch_size == 1
        assert stopped.wait(15)
        with pytest.raises(grpc.RpcError) as exc:
            client.search(index="pins", k=1, text="after the stop", timeout=2)
        assert _code(exc) == grpc.StatusCode.UNAVAILABLE
