"""The manifest: states, one active generation, publish/rollback transactions, gc and relocation."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from catalog import Home
from indexer.errors import IndexNotReady, ManifestError
from indexer.lifecycle import build_lock, cleanup_leftovers, gc, generation_dir
from indexer.manifest import IndexRecord, Manifest, ShardRecord


def _index(home: Home, gen_id: int, name: str = "items") -> IndexRecord:
    folder = generation_dir(home, gen_id) / name / "0"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").write_text(f"generation {gen_id}")
    return IndexRecord(name, "vectors", None, 4, "ip", "flat", {"x": 1}, 3, 0.97,
                       [ShardRecord(0, str(folder), 3, "ab" * 32, 15)])


def _ready(home: Home, m: Manifest, name: str = "items") -> int:
    gen = m.begin_generation(None, None)
    m.finish_generation(gen, [_index(home, gen, name)])
    return gen


def test_lifecycle_publish_and_one_active(home: Home) -> None:
    with Manifest(home.manifest_db) as m:
        g1 = m.begin_generation("/ckpt", None, {"faiss": "1"})
        assert m.generation(g1).state == "building"
        rec = m.finish_generation(g1, [_index(home, g1)], {"total": 1.5}, "ok", checkpoint_id="abc")
        assert rec.state == "ready" and rec.checkpoint == "/ckpt" and rec.checkpoint_id == "abc"
        assert rec.indices["items"].params == {"x": 1} and rec.indices["items"].recall == 0.97
        assert rec.library_versions == {"faiss": "1"} and rec.timings == {"total": 1.5}
        assert m.active_generation() is None
        m.publish(g1)
        g2 = _ready(home, m)
        assert m.active_generation().id == g1  # type: ignore[union-attr]
        out = m.publish(g2)
        assert out.state == "active" and out.published_at
        states = {g.id: g.state for g in m.list_generations()}
        assert states == {g1: "retired", g2: "active"}
        # the database itself refuses a second active generation
        with pytest.raises(sqlite3.IntegrityError):
            m._writer().execute("UPDATE generations SET state = 'active' WHERE id = ?", [g1])
        with pytest.raises(ManifestError, match="building"):
            m.finish_generation(g2, [])
        failed = m.begin_generation(None, None)
        m.fail_generation(failed, "boom")
        with pytest.raises(ManifestError, match="failed"):
            m.publish(failed)
        assert m.generation(failed).message == "boom"


def test_failed_transaction_leaves_nothing_behind(home: Home) -> None:
    with Manifest(home.manifest_db) as m:
        gen = m.begin_generation(None, None)
        dup = _index(home, gen)
        with pytest.raises(sqlite3.IntegrityError):
            m.finish_generation(gen, [dup, dup])  # same index twice: the second insert fails
        rec = m.generation(gen)
        assert rec.state == "building" and rec.indices == {}


def test_rollback_steps_back_through_generations(home: Home) -> None:
    with Manifest(home.manifest_db) as m:
        with pytest.raises(IndexNotReady):
            m.rollback()
        ids = []
        for _ in range(3):
            ids.append(_ready(home, m))
            m.publish(ids[-1])
        bad = m.begin_generation(None, None)
        m.fail_generation(bad, "gate")
        assert m.rollback().id == ids[1]
        assert m.rollback().id == ids[0]
        with pytest.raises(IndexNotReady, match="no older"):
            m.rollback()
        assert m.active_generation().id == ids[0]  # type: ignore[union-attr]
        assert "rolled back" in m.generation(ids[1]).message


def test_read_only_manifest(home: Home) -> None:
    ro = Manifest(home.manifest_db, read_only=True)
    assert ro.list_generations() == [] and ro.active_generation() is None  # no file yet: empty
    with Manifest(home.manifest_db) as m:
        gen = _ready(home, m)
        m.publish(gen)
    assert ro.active_generation().id == gen  # type: ignore[union-attr]  # the file appeared: now seen
    with pytest.raises(ManifestError, match="read-only"):
        ro.publish(gen)
    ro.close()


def test_gc_keeps_active_and_newest(home: Home) -> None:
    with Manifest(home.manifest_db) as m:
        ids = [_ready(home, m) for _ in range(4)]
        m.publish(ids[0])
        failed = m.begin_generation(None, None)
        _index(home, failed)
        m.fail_generation(failed, "x")
    deleted = gc(home, keep=2)
    assert sorted(deleted) == [ids[1], failed]
    with Manifest(home.manifest_db, read_only=True) as m:
        assert [g.id for g in m.list_generations()] == [ids[0], ids[2], ids[3]]
    assert not generation_dir(home, ids[1]).exists() and not generation_dir(home, failed).exists()
    assert generation_dir(home, ids[0]).exists() and generation_dir(home, ids[3]).exists()
    with pytest.raises(ManifestError):
        gc(home, keep=0)


def test_cleanup_after_a_dead_builder(home: Home) -> None:
    with Manifest(home.manifest_db) as m:
        good = _ready(home, m)
        m.publish(good)
        dead = m.begin_generation(None, None)
        _index(home, dead)
        (generation_dir(home, good) / "items" / ".tmp-1-abc").mkdir()
        (home.generations / "999").mkdir()
        with build_lock(home):
            done = cleanup_leftovers(home, m)
        assert len(done) == 4
        assert m.generation(dead).state == "failed" and "interrupted" in m.generation(dead).message
        assert not generation_dir(home, dead).exists() and not (home.generations / "999").exists()
        assert not (generation_dir(home, good) / "items" / ".tmp-1-abc").exists()
        assert (generation_dir(home, good) / "items" / "0" / "data").exists()
        # the ids never repeat, even after rows are deleted
        m.delete_generations([dead])
        assert m.begin_generation(None, None) > dead


def test_lock_refuses_a_second_builder(home: Home) -> None:
    with build_lock(home), pytest.raises(ManifestError, match="another"), build_lock(home):
        pass


def test_paths_are_relative_so_a_home_can_move(home: Home, tmp_path: Path) -> None:
    with Manifest(home.manifest_db) as m:
        gen = _ready(home, m)
    moved = Home.resolve(tmp_path / "moved")
    shutil.move(str(home.root), str(moved.root))
    with Manifest(moved.manifest_db, read_only=True) as m:
        shard = m.generation(gen).indices["items"].shards[0]
    assert Path(shard.path).is_relative_to(moved.root)
    assert (Path(shard.path) / "data").read_text() == f"generation {gen}"
