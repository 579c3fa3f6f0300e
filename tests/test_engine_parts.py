"""Engine building blocks on their own: cache TTL and LRU, request validation, the micro-batcher, config."""

from __future__ import annotations

import os
import struct
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray

from catalog import Home
from engine.affinity import request_cpu_set
from engine.batcher import MicroBatcher
from engine.cache import EmbeddingCache
from engine.config import TOKEN_ENV, EngineConfig
from engine.errors import DeadlineExceeded, EngineError, InvalidRequest, NotServing, Overloaded
from engine.servicer import vector_array
from engine.validate import check_filters, check_k, check_vector, normalise_text
from protos.omnisearch.v1 import omnisearch_pb2 as pb


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_cache_hit_then_expiry_after_ttl() -> None:
    clock = Clock()
    cache = EmbeddingCache(capacity=10, ttl_s=5.0, clock=clock)
    key = ("ckpt", "model", "red shoes")
    assert cache.get(key) is None
    cache.put(key, np.arange(4, dtype=np.float32))
    clock.t += 4.9
    got = cache.get(key)
    assert got is not None and np.array_equal(got, np.arange(4, dtype=np.float32))
    assert not got.flags.writeable  # callers cannot corrupt a shared entry
    clock.t += 0.2
    assert cache.get(key) is None
    st = cache.stats()
    assert (st.hits, st.misses, st.expired, st.size) == (1, 2, 1, 0)
    assert st.hit_rate == pytest.approx(1 / 3)


def test_cache_evicts_least_recently_used_and_keys_by_checkpoint() -> None:
    cache = EmbeddingCache(capacity=2, ttl_s=60.0)
    v = np.ones(2, np.float32)
    cache.put(("a", "model", "x"), v)
    cache.put(("a", "model", "y"), v)
    assert cache.get(("a", "model", "x")) is not None  # x is now most recent
    cache.put(("a", "model", "z"), v)
    assert cache.get(("a", "model", "y")) is None
    assert cache.get(("a", "model", "x")) is not None
    assert cache.get(("b", "model", "x")) is None  # another checkpoint never sees a's vectors


def test_vector_values_decode_from_every_wire_form() -> None:
    rng = np.random.default_rng(0)
    for n in (0, 1, 31, 32, 256, 5000):  # length prefixes of 1, 2 and 3 varint bytes
        values = rng.standard_normal(n).astype(np.float32)
        wire = pb.Vector(values=values.tolist()).SerializeToString()
        got = vector_array(pb.Vector.FromString(wire))
        assert got.dtype == np.float32 and got.shape == (n,) and got.flags.writeable
        np.testing.assert_array_equal(got, values)
    values = np.array([1.5, -2.25, 3.0, float("nan")], np.float32)
    unpacked = b"".join(b"\x0d" + struct.pack("<f", v) for v in values)  # one tag per value: also legal
    np.testing.assert_array_equal(vector_array(pb.Vector.FromString(unpacked)), values)
    # a field this version does not know (a newer client) is kept by the parser and re-serialized after
    # the values, so the packed shortcut must not apply
    newer = pb.Vector(values=values.tolist()).SerializeToString() + b"\x10\x07"
    np.testing.assert_array_equal(vector_array(pb.Vector.FromString(newer)), values)


def test_normalise_text_and_limits() -> None:
    assert normalise_text("  Red\u00a0 Shoes\n", 100) == "Red Shoes"  # NFKC + whitespace, case kept
    assert normalise_text("ｆｕｌｌ width", 100) == "full width"
    for bad in ("", "   \t"):
        with pytest.raises(InvalidRequest, match="empty"):
            normalise_text(bad, 100)
    with pytest.raises(InvalidRequest, match="limit"):
        normalise_text("x" * 101, 100)
    with pytest.raises(InvalidRequest):
        check_k(0, 10)
    with pytest.raises(InvalidRequest):
        check_k(11, 10)
    assert check_k(10, 10) == 10
    with pytest.raises(InvalidRequest, match="dimension 4"):
        check_vector([1.0, 2.0], 4, "pins")
    with pytest.raises(InvalidRequest, match="NaN"):
        check_vector([1.0, float("nan"), 0, 0], 4, "pins")
    assert check_vector([1, 2, 3, 4], 4, "pins").shape == (1, 4)


def test_filters_are_validated() -> None:
    kinds, langs = frozenset({"pin", "product", "query"}), frozenset({"en", "de"})
    assert check_filters(["pin"], ["de"], kinds, langs, "pin", "pins") == ({"pin"}, {"de"})
    assert check_filters([], [], None, None, None, "x") == (frozenset(), frozenset())
    with pytest.raises(InvalidRequest, match="unknown kind"):
        check_filters(["shoe"], [], kinds, langs, None, "x")
    with pytest.raises(InvalidRequest, match="unknown language"):
        check_filters([], ["fr"], kinds, langs, None, "x")
    with pytest.raises(InvalidRequest, match="malformed"):
        check_filters([], ["e n!"], kinds, langs, None, "x")
    with pytest.raises(InvalidRequest, match="holds only kind"):
        check_filters(["product"], [], kinds, langs, "pin", "pins")
    with pytest.raises(InvalidRequest, match="catalog"):
        check_filters(["pin"], [], None, None, None, "x")


class SlowEncoder:
    """A real (if simple) encoder: character histograms, with a fixed cost per call like a transformer."""

    checkpoint_id = "hist-v1"
    spaces = {"model": 8, "legacy-x": 4}

    def __init__(self, cost_s: float = 0.02) -> None:
        self.cost_s = cost_s
        self.calls: list[tuple[str, int]] = []
        self.threads: set[str] = set()

    def embed_queries(self, texts: list[str], space: str = "model", batch_size: int = 64) -> NDArray[np.float32]:
        self.calls.append((space, len(texts)))
        self.threads.add(threading.current_thread().name)
        time.sleep(self.cost_s)
        dim = self.spaces[space]
        out = np.zeros((len(texts), dim), np.float32)
        for i, t in enumerate(texts):
            for ch in t:
                out[i, ord(ch) % dim] += 1.0
        return out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)


def test_batcher_groups_concurrent_requests_and_matches_direct_calls() -> None:
    enc = SlowEncoder()
    batcher = MicroBatcher(max_batch=16, max_wait_s=0.0, max_queue=100).start()
    texts = [f"query number {i}" for i in range(24)]
    results: dict[str, NDArray[np.float32]] = {}
    sizes: list[int] = []

    def one(t: str) -> None:
        vec, size = batcher.embed(enc, "model", [t])
        results[t] = vec[0]
        sizes.append(size)

    threads = [threading.Thread(target=one, args=(t,)) for t in texts]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    batcher.stop()
    direct = SlowEncoder(0).embed_queries(texts)
    for i, t in enumerate(texts):
        np.testing.assert_allclose(results[t], direct[i], rtol=1e-6)
    assert max(sizes) > 1, "concurrent requests should share encoder calls"
    assert all(n <= 16 for _, n in enc.calls)
    assert len(enc.calls) < len(texts)
    assert enc.threads == {"encoder-batcher"}  # only the batcher thread touches the model
    st = batcher.stats()
    assert st.items == len(texts) and st.batches == len(enc.calls)


def test_batcher_separates_spaces_and_dedups_identical_texts() -> None:
    enc = SlowEncoder(cost_s=0.05)
    batcher = MicroBatcher(max_batch=32, max_wait_s=0.03, max_queue=100).start()
    futs = batcher.submit(enc, "model", ["same", "same", "other"])
    futs += batcher.submit(enc, "legacy-x", ["same"])
    vecs = [f.result(5)[0] for f in futs]
    batcher.stop()
    assert sorted(enc.calls) == [("legacy-x", 1), ("model", 2)]
    assert vecs[0].shape == (8,) and vecs[3].shape == (4,)
    np.testing.assert_array_equal(vecs[0], vecs[1])


def test_batcher_sheds_load_when_queue_is_full() -> None:
    enc = SlowEncoder(cost_s=0.3)
    batcher = MicroBatcher(max_batch=1, max_wait_s=0.0, max_queue=3).start()
    batcher.submit(enc, "model", ["a"])
    time.sleep(0.05)  # the encoder thread is now busy with "a"
    batcher.submit(enc, "model", ["b", "c", "d"])
    with pytest.raises(Overloaded, match="queue full"):
        batcher.submit(enc, "model", ["e"])
    assert batcher.stats().rejected == 1
    batcher.stop()
    with pytest.raises(NotServing):
        batcher.submit(enc, "model", ["f"])


def test_batcher_honours_deadlines() -> None:
    enc = SlowEncoder(cost_s=0.3)
    batcher = MicroBatcher(max_batch=1, max_wait_s=0.0, max_queue=10).start()
    first = batcher.submit(enc, "model", ["busy"])
    time.sleep(0.05)
    with pytest.raises(DeadlineExceeded):
        batcher.embed(enc, "model", ["late"], deadline=time.monotonic() + 0.05)
    expiring = batcher.submit(enc, "model", ["expires in queue"], deadline=time.monotonic() + 0.1)
    first[0].result(5)
    with pytest.raises(DeadlineExceeded):
        expiring[0].result(5)
    batcher.stop()
    assert ("model", 1) in enc.calls and len(enc.calls) == 1  # neither late text reached the encoder
    assert batcher.stats().expired == 1


def test_config_validation_toml_and_token_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = Home(tmp_path / "home")
    with pytest.raises(EngineError):
        EngineConfig(home=home, batch_max=0)
    with pytest.raises(EngineError, match="TLS"):
        EngineConfig(home=home, tls_cert=tmp_path / "c.pem")
    toml = tmp_path / "engine.toml"
    toml.write_text('[engine]\nport = 0\nbatch_max = 8\ncache_ttl_s = 1.5\n')
    cfg = EngineConfig.from_toml(toml, home, batch_max=4, workers=None)
    assert (cfg.port, cfg.batch_max, cfg.cache_ttl_s) == (0, 4, 1.5)
    toml.write_text("[engine]\nbogus = 1\n")
    with pytest.raises(EngineError, match="bogus"):
        EngineConfig.from_toml(toml, home)

    monkeypatch.delenv(TOKEN_ENV, raising=False)
    token = cfg.resolve_admin_token()
    assert len(token) >= 20 and cfg.token_path().read_text().strip() == token
    assert cfg.token_path().stat().st_mode & 0o077 == 0  # readable by the owner only
    assert cfg.resolve_admin_token() == token  # stable across restarts
    monkeypatch.setenv(TOKEN_ENV, "from-env")
    assert cfg.resolve_admin_token() == "from-env"
    assert EngineConfig(home=home, admin_token="given").resolve_admin_token() == "given"



def test_request_cpus_are_the_last_allowed_ones() -> None:
    allowed = sorted(os.sched_getaffinity(0))
    assert request_cpu_set(0) is None
    assert request_cpu_set(len(allowed)) is None  # pinning to every CPU restricts nothing
    if len(allowed) > 1:
        assert request_cpu_set(1) == {allowed[-1]}
        assert request_cpu_set(len(allowed) - 1) == set(allowed[1:])
    with pytest.raises(EngineError):
        EngineConfig(home=Home(Path("/nonexistent")), request_cpus=-1)
