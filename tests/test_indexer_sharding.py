"""Shard assignment, parallel shard builds and the merged search over shards."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from indexer_fixtures import DIM, data, ids_for

from indexer.backends import get_backend
from indexer.backends.base import PAD_SCORE
from indexer.errors import DimensionMismatch, InvalidParameter, ShardCorrupt
from indexer.manifest import IndexRecord
from indexer.sharded import ShardedIndex
from indexer.sharding import (
    DEFAULT_SHARD_VECTORS,
    assign_shards,
    build_shards,
    default_shards,
    shard_of,
    thread_plan,
)
from indexer.storage import IDS_FILE, META_FILE, read_ids, shard_digest


def _record(name: str, built, dim: int, metric: str, backend: str) -> IndexRecord:
    return IndexRecord(name, "vectors", None, dim, metric, backend, built.params,
                       sum(r.count for r in built.records), None, built.records)


def test_shard_of_is_stable_across_processes_and_balanced() -> None:
    ids = ids_for(2000)
    here = [shard_of(i, 5) for i in ids[:50]]
    code = ("from indexer.sharding import shard_of; "
            f"print(','.join(str(shard_of(i, 5)) for i in {ids[:50]!r}))")
    env_seed = {"PYTHONHASHSEED": "12345"}  # a different str hash seed must not matter
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**__import__("os").environ, **env_seed})
    assert [int(v) for v in out.stdout.strip().split(",")] == here
    counts = np.bincount(assign_shards(ids, 4), minlength=4)
    assert counts.sum() == 2000 and counts.min() > 400  # roughly even
    assert shard_of("é-unicode-id", 3) in (0, 1, 2)


def test_thread_plan_stays_within_the_budget() -> None:
    for threads in (1, 2, 3, 8):
        for shards in (1, 2, 5):
            workers, per = thread_plan(threads, shards)
            assert workers * per <= max(threads, 1)
            assert workers <= shards
    assert thread_plan(2, 2) == (2, 1)
    assert thread_plan(2, 1) == (1, 2)


def test_default_shard_count_grows_with_the_index() -> None:
    assert default_shards(0) == 1 and default_shards(1) == 1
    assert default_shards(DEFAULT_SHARD_VECTORS) == 1
    assert default_shards(DEFAULT_SHARD_VECTORS + 1) == 2
    assert default_shards(2500, shard_vectors=1000) == 3
    assert default_shards(3000, shard_vectors=1000) == 3
    with pytest.raises(InvalidParameter):
        default_shards(10, shard_vectors=0)


@pytest.mark.parametrize("metric", ["ip", "l2"])
def test_sharded_flat_equals_unsharded_flat_exactly(tmp_path: Path, metric: str) -> None:
    xb, xq = data(n=3000, nq=100)
    ids = ids_for(len(xb))
    built = build_shards(xb, ids, "flat", metric, {}, 3, tmp_path / "idx", threads=2, progress=False)
    assert sorted(r.shard for r in built.records) == [0, 1, 2]
    assert sum(r.count for r in built.records) == 3000
    sharded = ShardedIndex(_record("idx", built, DIM, metric, "flat"), built.backends, built.ids)
    flat = get_backend("flat", DIM, metric)
    flat.build(xb)
    D0, L0 = flat.search(xq, 10)
    D1, found = sharded.search(xq, 10)
    assert found == [[ids[j] for j in row] for row in L0]
    np.testing.assert_allclose(D1, D0, rtol=1e-5, atol=1e-5)
    # the files on disk give the same answers
    loaded = ShardedIndex.load(_record("idx", built, DIM, metric, "flat"))
    assert loaded.search(xq, 10)[1] == found
    assert loaded.count == 3000 and loaded.memory_bytes() >= 3000 * DIM * 4


def test_fewer_results_than_k_gives_shorter_lists(tmp_path: Path) -> None:
    xb, xq = data(n=30, nq=3)
    built = build_shards(xb, ids_for(30), "hnswlib", "ip", {}, 2, tmp_path / "tiny", progress=False)
    index = ShardedIndex(_record("tiny", built, DIM, "ip", "hnswlib"), built.backends, built.ids)
    D, found = index.search(xq, 100)
    assert D.shape == (3, 30)
    assert all(len(row) == 30 and len(set(row)) == 30 for row in found)
    with pytest.raises(DimensionMismatch, match="tiny"):
        index.search(np.ones((1, DIM + 1), np.float32), 5)


@pytest.mark.parametrize("k", [10, 1000])
def test_merge_over_three_shards_equals_exact_search(tmp_path: Path, k: int) -> None:
    """Small and large k (the merge sorts 3 x 10 or 3 x 1000 candidates) give exact search's ranking."""
    xb, xq = data(n=1500, nq=20)
    ids = ids_for(len(xb))
    built = build_shards(xb, ids, "flat", "ip", {}, 3, tmp_path / "m", progress=False)
    index = ShardedIndex(_record("m", built, DIM, "ip", "flat"), built.backends, built.ids)
    flat = get_backend("flat", DIM, "ip")
    flat.build(xb)
    D0, L0 = flat.search(xq, k)
    for rows in (xq, xq[:1]):  # a batch and a single query (its own code path)
        D1, found = index.search(rows, k)
        assert D1.shape == (len(rows), min(k, len(xb)))
        np.testing.assert_allclose(D1, D0[: len(rows), : D1.shape[1]], rtol=1e-5, atol=1e-5)
        # the exact scores, best first, each carried by the id it belongs to (near-equal scores may swap)
        for got, scores, q in zip(found, D1, rows, strict=True):
            assert len(set(got)) == len(got) == D1.shape[1]
            assert (np.diff(scores) <= 0).all()
            np.testing.assert_allclose(xb[[int(i[1:]) for i in got]] @ q, scores, rtol=1e-5, atol=1e-5)


def test_merge_keeps_missing_results_missing(tmp_path: Path) -> None:
    """IVF with one probe returns fewer than k per shard: the padding never turns into another shard's ids."""
    xb, xq = data(n=2000, nq=10)
    ids = ids_for(len(xb))
    built = build_shards(xb, ids, "faiss-ivf-flat", "ip", {"nlist": 16, "nprobe": 1}, 2, tmp_path / "pad",
                         progress=False)
    index = ShardedIndex(_record("pad", built, DIM, "ip", "faiss-ivf-flat"), built.backends, built.ids)
    D, found = index.search(xq, 1500)
    assert D.shape == (10, 1500)
    for row, scores, q in zip(found, D, xq, strict=True):
        assert 0 < len(row) < 1500 and len(set(row)) == len(row)
        assert (scores[len(row):] == PAD_SCORE["ip"]).all()
        got = xb[[ids.index(i) for i in row]] @ q  # every returned id carries its own score
        np.testing.assert_allclose(scores[: len(row)], got, rtol=1e-5, atol=1e-5)


def test_shard_files_and_checksums(tmp_path: Path) -> None:
    xb, _ = data(n=1000, nq=1)
    ids = ids_for(1000)
    built = build_shards(xb, ids, "faiss-ivf-flat", "ip", {"nprobe": 8}, 2, tmp_path / "ivf",
                         info={"index": "ivf"}, progress=False)
    for rec in built.records:
        folder = Path(rec.path)
        assert {p.name for p in folder.iterdir()} >= {"index.bin", "backend.json", IDS_FILE, META_FILE}
        assert shard_digest(folder) == (rec.sha256, rec.bytes)
        assert set(read_ids(folder)) <= set(ids)
        assert [r for r in folder.parent.iterdir() if r.name.startswith(".tmp")] == []
    # shared training: both shards report the same resolved nlist, trained once
    assert built.params["nlist"] == 1000 // 39
    record = _record("ivf", built, DIM, "ip", "faiss-ivf-flat")
    # one flipped byte in one shard is caught before the index is used
    target = Path(built.records[1].path) / "index.bin"
    blob = bytearray(target.read_bytes())
    blob[len(blob) // 2] ^= 0xFF
    target.write_bytes(bytes(blob))
    with pytest.raises(ShardCorrupt, match="checksum"):
        ShardedIndex.load(record)
    ShardedIndex.load(record, verify=False)  # still loadable when asked not to check


def test_parallel_build_runs_shards_concurrently(tmp_path: Path) -> None:
    """Two workers with one thread each: both shards are in progress at the same time at some point."""
    import threading

    xb, _ = data(n=4000, nq=1)
    active = 0
    peak = 0
    lock = threading.Lock()
    from indexer.backends.hnswlib_index import HnswlibBackend

    original = HnswlibBackend.build

    def tracking_build(self, vectors, ids=None):  # type: ignore[no-untyped-def]
        nonlocal active, peak
        with lock:
            active += 1
            peak = max(peak, active)
        try:
            import time

            time.sleep(0.2)  # make the overlap observable even on a loaded machine
            return original(self, vectors, ids)
        finally:
            with lock:
                active -= 1

    HnswlibBackend.build = tracking_build  # type: ignore[method-assign]
    try:
        built = build_shards(xb, ids_for(4000), "hnswlib", "ip", {}, 2, tmp_path / "p", threads=2, progress=False)
    finally:
        HnswlibBackend.build = original  # type: ignore[method-assign]
    assert peak == 2
    assert all(b.threads == 1 for b in built.backends)
