"""`rebuild` end to end on real files: vectors and catalog sources, the gate, carry-over, failures, memory."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from indexer_fixtures import catalog_home, ids_for, write_vectors

from catalog import Catalog, Home
from indexer.build import rebuild
from indexer.errors import BuildGateFailed, InsufficientMemory, InvalidParameter, ManifestError
from indexer.lifecycle import build_lock, verify_generation
from indexer.manifest import Manifest
from indexer.sharded import ShardedIndex
from indexer.sources import read_ids, read_vectors
from indexer.storage import META_FILE
from indexer.synthetic import clustered


def _states(home: Home) -> dict[int, str]:
    with Manifest(home.manifest_db, read_only=True) as m:
        return {g.id: g.state for g in m.list_generations()}


def test_rebuild_from_a_vectors_file(home: Home, tmp_path: Path) -> None:
    vec, ids, x = write_vectors(tmp_path)
    gen = rebuild(home, indices=["mine"], vectors=vec, ids=ids, shards=3, progress=False)
    assert gen.state == "active" and gen.checkpoint is None
    rec = gen.indices["mine"]
    assert rec.space == "vectors" and rec.metric == "ip" and rec.count == len(x) and rec.dim == x.shape[1]
    assert rec.backend == "hnswlib" and rec.params["ef"] == 32 and rec.params["M"] == 16
    assert rec.recall is not None and rec.recall >= 0.9
    assert len(rec.shards) == 3 and sum(s.count for s in rec.shards) == len(x)
    for s in rec.shards:
        assert Path(s.path) == home.generations / str(gen.id) / "mine" / str(s.shard)
        meta = json.loads((Path(s.path) / META_FILE).read_text())
        assert meta["backend"] == "hnswlib" and meta["count"] == s.count and meta["index"] == "mine"
        assert "hnswlib" in meta["library_versions"] and meta["created_at"].endswith("+00:00")
        assert set(meta["files"]) >= {"index.bin", "ids.json", "backend.json"}
    assert verify_generation(gen).ok
    index = ShardedIndex.load(rec)
    _, found = index.search(x[:5], 3)
    assert [row[0] for row in found] == ids_for(5)  # each vector finds its own id first
    assert gen.timings["total"] > 0 and gen.library_versions["hnswlib"]


def test_shard_count_follows_index_size_unless_given(home: Home, tmp_path: Path) -> None:
    vec, ids, x = write_vectors(tmp_path, n=2500)
    auto = rebuild(home, indices=["auto"], vectors=vec, ids=ids, backend="flat", progress=False)
    assert len(auto.indices["auto"].shards) == 1  # far below DEFAULT_SHARD_VECTORS
    sized = rebuild(home, indices=["sized"], vectors=vec, ids=ids, backend="flat", shard_vectors=1000,
                    progress=False)
    counts = [s.count for s in sized.indices["sized"].shards]
    assert len(counts) == 3 and sum(counts) == len(x)  # ceil(2500 / 1000)
    given = rebuild(home, indices=["given"], vectors=vec, ids=ids, backend="flat", shards=2, shard_vectors=1000,
                    progress=False)
    assert len(given.indices["given"].shards) == 2  # an explicit count wins
    with pytest.raises(InvalidParameter, match="shard_vectors"):
        rebuild(home, indices=["bad"], vectors=vec, ids=ids, backend="flat", shard_vectors=0, progress=False)


def test_gate_refuses_ivf_with_one_probe(home: Home, tmp_path: Path) -> None:
    vec, ids, _ = write_vectors(tmp_path, n=5000, dim=32)
    first = rebuild(home, indices=["items"], vectors=vec, ids=ids, backend="faiss-ivf-flat", progress=False)
    assert first.indices["items"].recall >= 0.9  # type: ignore[operator]
    with pytest.raises(BuildGateFailed, match=r"recall@10 0\.\d+ is below the gate 0\.90") as err:
        rebuild(home, indices=["items"], vectors=vec, ids=ids, backend="faiss-ivf-flat",
                params={"nprobe": 1}, progress=False)
    assert "nprobe=1" in str(err.value)
    with Manifest(home.manifest_db, read_only=True) as m:
        gens = m.list_generations()
        assert [g.state for g in gens] == ["active", "failed"]
        assert "below the gate" in gens[1].message and gens[1].indices == {}
        assert m.active_generation().id == first.id  # type: ignore[union-attr]
    # the same configuration passes a lower gate, and then records what it measured
    low = rebuild(home, indices=["items"], vectors=vec, ids=ids, backend="faiss-ivf-flat",
                  params={"nprobe": 1}, gate=0.3, progress=False)
    assert low.indices["items"].recall < 0.9  # type: ignore[operator]


def test_no_publish_then_publish_and_carry_over(home: Home, tmp_path: Path) -> None:
    vec, ids, x = write_vectors(tmp_path)
    a = rebuild(home, indices=["a"], vectors=vec, ids=ids, progress=False)
    b = rebuild(home, indices=["b"], vectors=vec, ids=ids, backend="flat", shards=1, publish=False,
                progress=False)
    assert b.state == "ready" and _states(home)[a.id] == "active"
    assert set(b.indices) == {"a", "b"}
    carried = b.indices["a"]
    assert carried.carried_from == a.id and carried.recall == a.indices["a"].recall
    for old, new in zip(a.indices["a"].shards, carried.shards, strict=True):
        assert Path(new.path).is_relative_to(home.generations / str(b.id))
        assert new.sha256 == old.sha256
        for f in Path(old.path).iterdir():
            assert os.stat(f).st_ino == os.stat(Path(new.path) / f.name).st_ino  # hard link, no copy
    with Manifest(home.manifest_db) as m:
        m.publish(b.id)
    assert _states(home) == {a.id: "retired", b.id: "active"}
    # rebuilding "a" replaces it and keeps "b"
    c = rebuild(home, indices=["a"], vectors=vec, ids=ids, backend="flat", progress=False)
    assert c.indices["a"].carried_from is None and c.indices["b"].carried_from == b.id


def test_catalog_legacy_indices(home: Home) -> None:
    catalog_home(home.root, n=1200, dims={"pinsage": 24, "itemsage": 16})
    gen = rebuild(home, backend="faiss-hnsw", progress=False)
    assert set(gen.indices) == {"legacy-itemsage", "legacy-pinsage"}
    rec = gen.indices["legacy-pinsage"]
    assert rec.space == "legacy-pinsage" and rec.dim == 24 and rec.count == 1200 and rec.metric == "ip"
    with Catalog(home.catalog_db, read_only=True) as cat:
        ids, x = cat.legacy_vectors("pinsage")
    _, found = ShardedIndex.load(rec).search(x[:3], 1)
    assert [r[0] for r in found] == ids[:3]
    with pytest.raises(InvalidParameter, match="--checkpoint"):
        rebuild(home, indices=["pins"], progress=False)
    with pytest.raises(InvalidParameter, match="unknown index"):
        rebuild(home, indices=["nonsense"], progress=False)
    with pytest.raises(InvalidParameter, match="no legacy space"):
        rebuild(home, indices=["legacy-nope"], progress=False)
    assert len(_states(home)) == 1  # bad requests never created a generation


def test_an_exception_mid_build_marks_the_generation_failed(home: Home, tmp_path: Path) -> None:
    vec, ids, _ = write_vectors(tmp_path)
    good = rebuild(home, indices=["items"], vectors=vec, ids=ids, backend="flat", progress=False)

    def explode(index: str, shard: int) -> None:
        if shard == 1:
            raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        rebuild(home, indices=["items"], vectors=vec, ids=ids, backend="flat", shards=3, progress=False,
                on_shard=explode)
    with Manifest(home.manifest_db, read_only=True) as m:
        failed = m.list_generations()[-1]
        assert failed.state == "failed" and "disk on fire" in failed.message
        assert m.active_generation().id == good.id  # type: ignore[union-attr]
        assert verify_generation(m.active_generation()).ok  # type: ignore[arg-type]
    again = rebuild(home, indices=["items"], vectors=vec, ids=ids, backend="flat", progress=False)
    assert again.state == "active"


def test_insufficient_memory_stops_before_building(
    home: Home, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    vec, ids, _ = write_vectors(tmp_path)
    gen = rebuild(home, indices=["items"], vectors=vec, ids=ids, backend="flat", progress=False)
    monkeypatch.setenv("OMNISEARCH_MEMORY_LIMIT", "100000")
    with pytest.raises(InsufficientMemory, match=r"building index 'items' \(2000 x 16, hnswlib\) needs about"):
        rebuild(home, indices=["items"], vectors=vec, ids=ids, progress=False)
    assert list(_states(home).values()) == ["active", "failed"]
    with pytest.raises(InsufficientMemory, match="loading index 'items'"):
        ShardedIndex.load(gen.indices["items"])


def test_second_builder_is_refused(home: Home, tmp_path: Path) -> None:
    vec, ids, _ = write_vectors(tmp_path)
    with build_lock(home), pytest.raises(ManifestError, match="another indexer"):
        rebuild(home, indices=["items"], vectors=vec, ids=ids, progress=False)


def test_vector_and_id_file_formats(tmp_path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    x = clustered(50, 6, seed=5)
    ids = ids_for(50)
    # .fvecs: each row is int32 dim then dim float32
    fvecs = tmp_path / "v.fvecs"
    rows = np.hstack([np.full((50, 1), 6, np.int32), x.view(np.int32)])
    rows.astype("<i4").tofile(fvecs)
    np.testing.assert_array_equal(read_vectors(fvecs)[0], x)
    # parquet with a list column `vector` and an `id` column
    pq.write_table(pa.table({"id": ids, "vector": [list(map(float, r)) for r in x]}), tmp_path / "v.parquet")
    got, got_ids = read_vectors(tmp_path / "v.parquet")
    np.testing.assert_allclose(got, x, rtol=1e-6)
    assert got_ids == ids
    # parquet with one column per dimension
    pq.write_table(pa.table({f"d{j}": x[:, j] for j in range(6)}), tmp_path / "cols.parquet")
    np.testing.assert_allclose(read_vectors(tmp_path / "cols.parquet")[0], x, rtol=1e-6)
    (tmp_path / "ids.txt").write_text("\n".join(ids) + "\n")
    (tmp_path / "ids.json").write_text(json.dumps(ids))
    assert read_ids(tmp_path / "ids.txt") == read_ids(tmp_path / "ids.json") == ids
    assert read_ids(tmp_path / "v.parquet") == ids
    bad = x.copy()
    bad[3, 1] = np.nan
    np.save(tmp_path / "bad.npy", bad)
    from indexer.errors import InvalidVector

    with pytest.raises(InvalidVector, match="row 3"):
        read_vectors(tmp_path / "bad.npy")


def test_l2_vectors_and_duplicate_ids(home: Home, tmp_path: Path) -> None:
    x = clustered(800, 8, seed=9, normalize=False) * 5.0  # not unit-norm: the metric becomes l2
    np.save(tmp_path / "v.npy", x)
    (tmp_path / "ids.txt").write_text("\n".join(ids_for(800)))
    gen = rebuild(home, indices=["raw"], vectors=tmp_path / "v.npy", ids=tmp_path / "ids.txt", progress=False)
    assert gen.indices["raw"].metric == "l2"
    (tmp_path / "dup.txt").write_text("\n".join(["same"] * 800))
    with pytest.raises(InvalidParameter, match="not unique"):
        rebuild(home, indices=["raw"], vectors=tmp_path / "v.npy", ids=tmp_path / "dup.txt", progress=False)
