"""A live server over generations built from user vectors: search, errors, hydration, filters, swaps, failures."""

from __future__ import annotations

import os
import shutil
import threading
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest

from catalog import Home
from engine.affinity import request_cpu_set
from engine.errors import DeadlineExceeded
from engine.testing import (
    TINY_ENTITIES,
    loopback_config,
    running_server,
    unit_vectors,
    vector_generation,
    write_tiny_catalog,
)

DIM = 16


def _code(exc: pytest.ExceptionInfo[grpc.RpcError]) -> grpc.StatusCode:
    return exc.value.code()  # type: ignore[attr-defined, no-any-return]


@pytest.fixture()
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / "home").ensure()
    write_tiny_catalog(h)
    return h


def _catalog_generation(home: Home, seed: int = 0) -> tuple[list[str], np.ndarray]:
    ids = [e[0] for e in TINY_ENTITIES]
    x = unit_vectors(len(ids), DIM, seed)
    vector_generation(home, ids, x, index="items")
    return ids, x


def test_vector_search_matches_exact_and_reports_generation(home: Home) -> None:
    ids, x = _catalog_generation(home)
    with running_server(loopback_config(home, metrics_port=-1)) as (srv, client):
        assert client.health() == "SERVING"
        for q in range(len(ids)):
            res = client.search(index="items", k=3, vector=x[q])
            exact = np.argsort(-(x @ x[q]))[:3]
            assert [h.id for h in res.hits] == [ids[i] for i in exact]
            assert res.hits[0].score == pytest.approx(1.0, abs=1e-5)
            assert res.generation == 1 and res.checkpoint_id == ""
            assert res.timings.total_ms > 0 and res.timings.search_ms > 0 and not res.timings.cache_hit
        st = client.status()
        assert st.serving and st.generation == 1 and st.swaps == 1
        assert [(i.name, i.space, i.count, i.shards) for i in st.indices] == [("items", "vectors", len(ids), 2)]
        body = urllib.request.urlopen(f"http://127.0.0.1:{srv.metrics_port}/metrics", timeout=5).read().decode()
        assert f'omnisearch_requests_total{{code="OK",index="items",method="Search"}} {float(len(ids))}' in body
        assert "omnisearch_active_generation 1.0" in body


def test_hydration_and_filters(home: Home) -> None:
    ids, x = _catalog_generation(home)
    with running_server(loopback_config(home)) as (_, client):
        q = x[ids.index("p-de-1")]
        res = client.search(index="items", k=len(ids), vector=q, include_fields=True)
        top = res.hits[0]
        assert top.id == "p-de-1" and top.kind == "pin"
        assert top.fields["title"] == "Rote Laufschuhe auf einem Holzboden" and top.fields["lang"] == "de"
        assert res.timings.hydrate_ms > 0
        plain = client.search(index="items", k=3, vector=q)
        assert all(not h.fields for h in plain.hits)

        es = client.search(index="items", k=3, vector=q, languages=["es"])
        want = [i for i in (h.id for h in res.hits) if i.split("-")[1] == "es"][:3]
        assert [h.id for h in es.hits] == want
        products = client.search(index="items", k=10, vector=q, kinds=["product"])
        assert {h.kind for h in products.hits} == {"product"} and len(products.hits) == 4
        both = client.search(index="items", k=10, vector=q, kinds=["product"], languages=["es"])
        assert sorted(h.id for h in both.hits) == ["d-es-1", "d-es-2"]


def test_invalid_requests_get_invalid_argument(home: Home) -> None:
    _, x = _catalog_generation(home)
    cfg = loopback_config(home, max_k=50, max_text_chars=20)
    with running_server(cfg) as (_, client):
        cases = {
            "unknown index": dict(index="nope", k=3, vector=x[0]),
            "wrong dimension": dict(index="items", k=3, vector=x[0][:8]),
            "NaN": dict(index="items", k=3, vector=np.full(DIM, np.nan)),
            "k = 0": dict(index="items", k=0, vector=x[0]),
            "k < 0": dict(index="items", k=-2, vector=x[0]),
            "k above limit": dict(index="items", k=51, vector=x[0]),
            "empty text": dict(index="items", k=3, text="   "),
            "oversized text": dict(index="items", k=3, text="x" * 21),
            "unknown kind": dict(index="items", k=3, vector=x[0], kinds=["shoe"]),
            "unknown language": dict(index="items", k=3, vector=x[0], languages=["fr"]),
            "malformed language": dict(index="items", k=3, vector=x[0], languages=["?"]),
            "unknown search parameter": dict(index="items", k=3, vector=x[0], nprobe=4),
        }
        for name, kwargs in cases.items():
            with pytest.raises(grpc.RpcError) as exc:
                client.search(**kwargs)
            assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT, name
            assert exc.value.details(), name  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as exc:
            client.search_stub.Search(client.search_request("items", 3, vector=x[0]).__class__(index="items", k=3))
        assert _code(exc) == grpc.StatusCode.INVALID_ARGUMENT  # neither text nor vector
        # Text on a generation without an encoder: the request is fine, the server cannot do it.
        with pytest.raises(grpc.RpcError) as exc:
            client.search(index="items", k=3, text="red shoes")
        assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
        assert "user vectors" in exc.value.details()  # type: ignore[attr-defined]
        with pytest.raises(grpc.RpcError) as exc:
            client.embed(["red shoes"])
        assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION


def test_deadline_is_checked_before_the_search(home: Home) -> None:
    _, x = _catalog_generation(home)
    with running_server(loopback_config(home)) as (srv, _):
        with pytest.raises(DeadlineExceeded, match="before the index search"):
            srv.engine.search(index="items", k=3, vector=x[0], deadline=time.monotonic() - 0.001)
        assert srv.engine.search(index="items", k=3, vector=x[0], deadline=time.monotonic() + 5).hits


def test_grpc_threads_share_the_request_cpus_and_the_rest_keep_every_cpu(home: Home) -> None:
    every = set(os.sched_getaffinity(0))
    if request_cpu_set(1) is None:
        pytest.skip("one CPU: nothing to pin")
    _, x = _catalog_generation(home)
    with running_server(loopback_config(home, workers=4)) as (srv, client):
        with ThreadPoolExecutor(4) as pool:  # concurrent calls: the pool starts several handler threads
            assert all(r.hits for r in pool.map(lambda q: client.search(index="items", k=3, vector=q), x))
        assert srv.request_cpus == {max(every)}
        threads = {t.name: t for t in threading.enumerate()}
        workers = [t for name, t in threads.items() if name.startswith("grpc-worker")]
        assert workers
        for t in workers + [t for name, t in threads.items() if name.endswith("(_serve)")]:
            assert os.sched_getaffinity(t.native_id) == srv.request_cpus, t.name
        assert os.sched_getaffinity(threads["encoder-batcher"].native_id) == every
        assert os.sched_getaffinity(0) == every  # the thread that started the server is left alone
    earlier = set(threading.enumerate())
    with running_server(loopback_config(home, request_cpus=0)) as (srv, client):
        assert client.search(index="items", k=3, vector=x[0]).hits and srv.request_cpus is None
        workers = [t for t in threading.enumerate() if t.name.startswith("grpc-worker") and t not in earlier]
        assert workers and all(os.sched_getaffinity(t.native_id) == every for t in workers)


def test_hot_swap_under_load_never_fails_and_never_mixes(home: Home) -> None:
    """Clients search non-stop while 5 generations are published; every answer is one generation's."""
    n = 64
    x = unit_vectors(n, DIM, seed=1)
    tag_of: dict[int, str] = {}
    first = vector_generation(home, [f"b0-{i}" for i in range(n)], x)
    tag_of[first.id] = "b0"
    responses: list[tuple[int, list[str]]] = []
    errors: list[str] = []
    stop = threading.Event()
    with running_server(loopback_config(home, poll_interval_s=0.05)) as (srv, client):

        def hammer(seed: int) -> None:
            rng = np.random.default_rng(seed)
            while not stop.is_set():
                q = x[rng.integers(n)]
                try:
                    res = client.search(index="vectors", k=5, vector=q)
                    responses.append((res.generation, [h.id for h in res.hits]))
                except grpc.RpcError as err:
                    errors.append(f"{err.code().name}: {err.details()}")  # type: ignore[attr-defined]

        threads = [threading.Thread(target=hammer, args=(s,)) for s in range(4)]
        for t in threads:
            t.start()
        try:
            for b in range(1, 6):
                time.sleep(0.3)
                rec = vector_generation(home, [f"b{b}-{i}" for i in range(n)], x)
                tag_of[rec.id] = f"b{b}"
            deadline = time.monotonic() + 20
            while srv.engine.status().generation != max(tag_of) and time.monotonic() < deadline:
                time.sleep(0.05)
            time.sleep(0.3)
        finally:
            stop.set()
            for t in threads:
                t.join()
        st = srv.engine.status()
        assert st.generation == max(tag_of) and st.swaps == 6
        drain_deadline = time.monotonic() + 5
        while srv.engine.status().draining and time.monotonic() < drain_deadline:
            time.sleep(0.05)
        assert srv.engine.status().draining == 0  # every old generation was freed once idle

    assert errors == []
    assert len(responses) > 100
    seen = {g for g, _ in responses}
    assert len(seen) >= 4, f"expected answers from most of the 6 generations, saw {sorted(seen)}"
    for gen, hit_ids in responses:
        assert len(hit_ids) == 5
        assert all(h.startswith(tag_of[gen] + "-") for h in hit_ids), (gen, hit_ids)


def test_corrupt_generation_keeps_the_old_one_serving(home: Home) -> None:
    ids, x = _catalog_generation(home)
    with running_server(loopback_config(home, poll_interval_s=0.0)) as (srv, client):
        bad = vector_generation(home, ids, x, index="items", publish=False)
        shard = Path(bad.indices["items"].shards[0].path)
        victim = next(p for p in sorted(shard.iterdir()) if p.name != "ids.json" and p.is_file())
        victim.write_bytes(victim.read_bytes()[::-1])  # same size, other bytes: only the checksum can tell
        from indexer.manifest import Manifest

        with Manifest(home.manifest_db) as m:
            m.publish(bad.id)
        with pytest.raises(grpc.RpcError) as exc:
            client.reload()
        assert _code(exc) == grpc.StatusCode.FAILED_PRECONDITION
        st = client.status()
        assert st.serving and st.generation == 1
        assert st.last_failed_generation == bad.id and "ShardCorrupt" in st.last_error
        res = client.search(index="items", k=1, vector=x[0])
        assert res.generation == 1 and res.hits[0].id == ids[0]

        # Rollback: the manifest goes back to generation 1, which is already served.
        out = client.rollback()
        assert out.generation == 1
        gens = client.list_generations()
        assert gens.serving_generation == 1
        assert {g.id: g.state for g in gens.generations}[1] == "active"


def test_admin_reload_and_rollback_switch_generations(home: Home) -> None:
    ids, x = _catalog_generation(home)
    with running_server(loopback_config(home, poll_interval_s=0.0)) as (srv, client):
        second = vector_generation(home, [f"new-{i}" for i in ids], x, index="items")
        assert client.search(index="items", k=1, vector=x[0]).generation == 1  # no polling: not yet
        out = client.reload()
        assert out.changed and out.generation == second.id
        res = client.search(index="items", k=1, vector=x[0])
        assert res.generation == second.id and res.hits[0].id == f"new-{ids[0]}"
        again = client.reload()
        assert not again.changed
        back = client.rollback()
        assert back.changed and back.generation == 1
        assert client.search(index="items", k=1, vector=x[0]).hits[0].id == ids[0]


def test_missing_shard_files_fail_the_load(home: Home) -> None:
    ids, x = _catalog_generation(home)
    with running_server(loopback_config(home, poll_interval_s=0.05)) as (srv, client):
        bad = vector_generation(home, ids, x, index="items", publish=False)
        shutil.rmtree(bad.indices["items"].shards[1].path)
        from indexer.manifest import Manifest

        with Manifest(home.manifest_db) as m:
            m.publish(bad.id)
        deadline = time.monotonic() + 10
        while client.status().last_failed_generation != bad.id and time.monotonic() < deadline:
            time.sleep(0.05)
        st = client.status()
        assert st.last_failed_generation == bad.id and st.generation == 1 and st.manifest_generation == bad.id
        assert client.search(index="items", k=1, vector=x[0]).generation == 1


def test_no_memory_headroom_refuses_the_generation(home: Home) -> None:
    _catalog_generation(home)
    cfg = loopback_config(home, memory_reserve_mb=10**9)  # needs a petabyte: never fits
    with running_server(cfg, wait_serving=False) as (srv, client):
        deadline = time.monotonic() + 10
        while not client.status().last_error and time.monotonic() < deadline:
            time.sleep(0.05)
        st = client.status()
        assert not st.serving and st.last_failed_generation == 1
        assert "available" in st.last_error and "MB" in st.last_error
        assert client.health() == "NOT_SERVING"


def test_tls(home: Home, tmp_path: Path) -> None:
    import subprocess

    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.skip("openssl is not installed")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run([openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "1", "-subj", "/CN=localhost", "-addext",
                    "subjectAltName=IP:127.0.0.1,DNS:localhost"], check=True, capture_output=True)
    ids, x = _catalog_generation(home)
    from engine.client import EngineClient
    from engine.server import create_server

    srv, port = create_server(loopback_config(home, tls_cert=cert, tls_key=key))
    srv.start()
    try:
        with EngineClient(f"127.0.0.1:{port}", root_certificates=cert.read_bytes()) as secure:
            secure.wait_until_serving(30)
            assert secure.search(index="items", k=1, vector=x[2]).hits[0].id == ids[2]
        with EngineClient(f"127.0.0.1:{port}", timeout=2) as plain, pytest.raises(grpc.RpcError) as exc:
            plain.search(index="items", k=1, vector=x[2])
        assert _code(exc) == grpc.StatusCode.UNAVAILABLE
    finally:
        srv.stop(0).wait(10)
