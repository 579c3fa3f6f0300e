"""Generations over time: the build lock, clean-up after crashes, verification, rollback and gc.

Only one process builds or collects garbage in a home at a time (an flock on `<home>/.indexer.lock`; the kernel
drops it when the holder dies, even by kill -9). Whoever takes the lock first cleans up what a dead build left:
generations still marked building become failed and their folders go, as do folders the manifest does not know
and temp folders.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from catalog import Home
from indexer.errors import ManifestError, ShardCorrupt
from indexer.manifest import GenerationRecord, Manifest
from indexer.storage import TMP_PREFIX, verify_shard

log = logging.getLogger(__name__)

LOCK_FILE = ".indexer.lock"


@contextlib.contextmanager
def build_lock(home: Home) -> Iterator[None]:
    """Hold the home's indexer lock (non-blocking: a second builder fails at once with a message)."""
    home.ensure()
    path = home.root / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise ManifestError(f"another indexer rebuild or gc is running in {home.root} "
                                f"(lock {path}); wait for it to finish") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        yield
    finally:
        os.close(fd)  # closing releases the flock


def generation_dir(home: Home, gen_id: int) -> Path:
    return home.generations / str(gen_id)


def cleanup_leftovers(home: Home, manifest: Manifest) -> list[str]:
    """After a crash: fail building generations, remove their folders, stray folders and temp folders.

    Must run under `build_lock`. Returns what was done, one line per action.
    """
    done: list[str] = []
    for gen in manifest.generations_in("building"):
        manifest.fail_generation(gen.id, "interrupted: the build process stopped before finishing "
                                         "(cleaned up by a later run)")
        done.append(f"generation {gen.id}: interrupted build marked failed")
    known = {g.id: g.state for g in manifest.list_generations()}
    root = home.generations
    if not root.exists():
        return done
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(TMP_PREFIX) or not entry.name.isdigit():
            _remove(entry)
            done.append(f"removed stray {entry}")
            continue
        state = known.get(int(entry.name))
        interrupted = state == "failed" and _is_interrupted(manifest, int(entry.name))
        if state is None or interrupted:
            _remove(entry)
            done.append(f"removed {'unknown' if state is None else 'interrupted'} generation folder {entry}")
            continue
        for tmp in entry.rglob(f"{TMP_PREFIX}*"):
            _remove(tmp)
            done.append(f"removed temp {tmp}")
    for line in done:
        log.info("cleanup: %s", line)
    return done


def _is_interrupted(manifest: Manifest, gen_id: int) -> bool:
    return manifest.generation(gen_id).message.startswith("interrupted")


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@dataclass(frozen=True)
class VerifyResult:
    """The outcome of verifying one generation."""

    generation: int
    shards: int  # shards checked
    problems: list[str]  # one message per corrupt or missing shard

    @property
    def ok(self) -> bool:
        return not self.problems


def verify_generation(gen: GenerationRecord) -> VerifyResult:
    """Recompute every shard checksum of a generation."""
    problems: list[str] = []
    checked = 0
    for rec in gen.indices.values():
        if len(rec.shards) == 0:
            problems.append(f"{rec.name}: no shards")
        if sum(s.count for s in rec.shards) != rec.count:
            problems.append(f"{rec.name}: shard counts add up to {sum(s.count for s in rec.shards)}, "
                            f"index says {rec.count}")
        for shard in rec.shards:
            checked += 1
            try:
                verify_shard(shard)
            except ShardCorrupt as exc:
                problems.append(f"{rec.name}: {exc}")
    return VerifyResult(gen.id, checked, problems)


def gc(home: Home, keep: int) -> list[int]:
    """Delete all failed generations and all but the `keep` newest ready/active/retired ones.

    The active generation is always kept. Rows go first (one transaction), folders after; a crash in between
    leaves folders the manifest no longer knows, which the next clean-up removes.
    """
    if keep < 1:
        raise ManifestError(f"--keep must be at least 1, got {keep}")
    with build_lock(home), Manifest(home.manifest_db) as manifest:
        cleanup_leftovers(home, manifest)
        gens = manifest.list_generations()
        alive = [g for g in gens if g.state in ("ready", "active", "retired")]
        kept = {g.id for g in sorted(alive, key=lambda g: g.id, reverse=True)[:keep]}
        kept |= {g.id for g in gens if g.state == "active"}
        doomed = [g.id for g in gens if g.state != "building" and g.id not in kept]
        manifest.delete_generations(doomed)
        for gen_id in doomed:
            _remove(generation_dir(home, gen_id))
        log.info("gc: deleted generations %s, kept %s", doomed, sorted(kept))
        return doomed


def rollback(home: Home) -> GenerationRecord:
    """Make the previous ready/retired generation active again (after checking its files)."""
    with Manifest(home.manifest_db) as manifest:
        active = manifest.active_generation()
        if active is not None:
            older = [g for g in manifest.generations_in("ready", "retired") if g.id < active.id]
            if older:
                result = verify_generation(older[-1])
                if not result.ok:
                    raise ShardCorrupt(f"cannot roll back to generation {older[-1].id}: "
                                       + "; ".join(result.problems))
        return manifest.rollback()
