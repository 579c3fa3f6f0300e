"""kill -9 a real `indexer rebuild` at several moments: the active generation and the manifest survive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from catalog import Home
from indexer.lifecycle import verify_generation
from indexer.manifest import Manifest
from indexer.storage import TMP_PREFIX
from indexer.synthetic import clustered

N, DIM = 40_000, 48  # a few seconds of hnswlib building on 2 cores
KILL_AT = (0.2, 0.5, 0.8)  # fractions of a full rebuild's wall time


def _rebuild_cmd(home: Home, vec: Path, ids: Path) -> list[str]:
    exe = Path(sys.executable).with_name("indexer")
    return [str(exe), "rebuild", "--home", str(home.root), "--vectors", str(vec), "--ids", str(ids),
            "--index", "items", "--shards", "2", "--threads", "2", "--quiet"]


def _check_consistent(home: Home, active_id: int) -> int:
    """The manifest opens (rolling back any half transaction), has one active generation, and it verifies."""
    with Manifest(home.manifest_db) as m:  # writable: recovers a hot journal left by the killed writer
        gens = m.list_generations()
        active = [g for g in gens if g.state == "active"]
        assert len(active) == 1
        gen = active[0]
        # either the old generation still serves, or the kill came after the publish transaction committed
        assert gen.id == active_id or gen.id == max(g.id for g in gens)
        assert set(gen.indices) == {"items"} and gen.indices["items"].count == N
        result = verify_generation(gen)
        assert result.ok, result.problems
        assert sum(g.state == "building" for g in gens) <= 1
        return gen.id


@pytest.mark.slow
def test_kill_9_at_any_moment_leaves_the_active_generation_serving(home: Home, tmp_path: Path) -> None:
    x = clustered(N, DIM, seed=21)
    vec, ids = tmp_path / "v.npy", tmp_path / "ids.txt"
    np.save(vec, x)
    ids.write_text("".join(f"item-{i}\n" for i in range(N)))
    cmd = _rebuild_cmd(home, vec, ids)

    t0 = time.monotonic()
    first = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    full = time.monotonic() - t0
    assert first.returncode == 0, first.stderr
    active_id = _check_consistent(home, 1)

    killed = 0
    for fraction in KILL_AT:
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(full * fraction)
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
            killed += 1
        assert proc.wait(timeout=60) in (0, -signal.SIGKILL)
        active_id = _check_consistent(home, active_id)
    assert killed >= 2, f"the rebuild finished before most kills ({full:.1f}s per build)"

    # One more, right after the first shard folder of the new generation was renamed into place.
    before = {p.name for p in home.generations.iterdir()}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 3 * full + 30
    while proc.poll() is None and time.monotonic() < deadline:
        new = [p for p in home.generations.iterdir() if p.name not in before]
        if new and (new[0] / "items" / "0").exists():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.005)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the rebuild was not caught mid-way"
    active_id = _check_consistent(home, active_id)

    # The next rebuild cleans up after the dead ones and succeeds.
    final = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    with Manifest(home.manifest_db, read_only=True) as m:
        gens = m.list_generations()
        assert not [g for g in gens if g.state == "building"]
        interrupted = [g for g in gens if g.state == "failed"]
        assert all("interrupted" in g.message for g in interrupted)
        active = m.active_generation()
        assert active is not None and active.id == gens[-1].id and verify_generation(active).ok
    leftovers = {p.name for p in home.generations.iterdir()}
    assert leftovers == {str(g.id) for g in gens if g.state != "failed"}
    assert not list(home.generations.rglob(f"{TMP_PREFIX}*"))
