"""The manifest: one SQLite file recording every generation, its indices and their shards.

States: building -> ready -> active -> retired, or building -> failed. At most one generation is active (a
partial unique index enforces it). Every state change is one transaction (BEGIN IMMEDIATE ... COMMIT), so a
process killed at any moment leaves either the old or the new state; SQLite's journal undoes a half-written
transaction on the next open. Shard paths are stored relative to the manifest's folder (the home), so a home
can be moved as a whole.
"""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import sqlite_utils

from indexer.errors import IndexNotReady, ManifestError

STATES = ("building", "ready", "active", "retired", "failed")
MANIFEST_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS generations (
    id INTEGER PRIMARY KEY AUTOINCREMENT,  -- never reused, so a generation folder name is never reused
    state TEXT NOT NULL CHECK (state IN ('building', 'ready', 'active', 'retired', 'failed')),
    created_at TEXT NOT NULL,
    finished_at TEXT,
    published_at TEXT,
    checkpoint TEXT,
    checkpoint_id TEXT,
    message TEXT NOT NULL DEFAULT '',
    builder_pid INTEGER,
    library_versions TEXT NOT NULL DEFAULT '{}',
    timings TEXT NOT NULL DEFAULT '{}'
);
CREATE UNIQUE INDEX IF NOT EXISTS generations_one_active ON generations (state) WHERE state = 'active';
CREATE TABLE IF NOT EXISTS indices (
    generation_id INTEGER NOT NULL REFERENCES generations (id),
    name TEXT NOT NULL,
    space TEXT NOT NULL,
    entity_kind TEXT,
    dim INTEGER NOT NULL,
    metric TEXT NOT NULL,
    backend TEXT NOT NULL,
    params TEXT NOT NULL,
    count INTEGER NOT NULL,
    recall REAL,
    build_seconds REAL,
    carried_from INTEGER,
    PRIMARY KEY (generation_id, name)
);
CREATE TABLE IF NOT EXISTS shards (
    generation_id INTEGER NOT NULL,
    index_name TEXT NOT NULL,
    shard INTEGER NOT NULL,
    path TEXT NOT NULL,
    count INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (generation_id, index_name, shard),
    FOREIGN KEY (generation_id, index_name) REFERENCES indices (generation_id, name)
);
"""


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class ShardRecord:
    """One shard folder of an index."""

    shard: int
    path: str  # absolute path of the shard folder
    count: int
    sha256: str  # digest over the folder's files (see indexer.storage.shard_digest)
    bytes: int


@dataclass(frozen=True)
class IndexRecord:
    """One index of a generation."""

    name: str
    space: str  # "model", "legacy-<name>" or "vectors"
    entity_kind: str | None
    dim: int
    metric: str  # "ip" or "l2"
    backend: str
    params: dict[str, Any]
    count: int
    recall: float | None  # recall@10 measured by the build gate
    shards: list[ShardRecord]
    build_seconds: float | None = None
    carried_from: int | None = None  # generation whose files this index reuses (hard links)


@dataclass(frozen=True)
class GenerationRecord:
    """A set of indices built together and served together."""

    id: int
    state: str
    created_at: str
    published_at: str | None
    checkpoint: str | None  # checkpoint folder; None when no index needs the model
    checkpoint_id: str | None
    message: str
    indices: dict[str, IndexRecord]
    finished_at: str | None = None
    library_versions: dict[str, str] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)


class Manifest:
    """The manifest file. Readers: `Manifest(path, read_only=True)`; the indexer writes.

    A read-only manifest whose file does not exist yet reads as empty (no generations), so a server can
    start before the first build and pick it up later.
    """

    def __init__(self, path: str | os.PathLike[str], read_only: bool = False) -> None:
        self.path = Path(path)
        self.root = self.path.parent
        self.read_only = read_only
        self._db: sqlite_utils.Database | None = None
        if not read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            conn = sqlite3.connect(self.path, timeout=30, isolation_level=None, check_same_thread=False)
            self._db = sqlite_utils.Database(conn)
            self._migrate()

    # ----------------------------------------------------------------- connection
    def _conn(self) -> sqlite3.Connection | None:
        if self._db is None and self.read_only and self.path.exists():
            try:
                # mode=rw (not ro) so that a journal left by a killed writer can be rolled back on open;
                # query_only keeps this connection from writing anything else.
                conn = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=30,
                                       isolation_level=None, check_same_thread=False)
            except sqlite3.OperationalError:
                conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=30,
                                       isolation_level=None, check_same_thread=False)
            conn.execute("PRAGMA query_only = ON")
            self._db = sqlite_utils.Database(conn)
        return None if self._db is None else self._db.conn

    def close(self) -> None:
        if self._db is not None:
            self._db.conn.close()
            self._db = None

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _writer(self) -> sqlite3.Connection:
        if self.read_only or self._db is None:
            raise ManifestError(f"manifest {self.path} is open read-only")
        return self._db.conn

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction; the write lock is taken at BEGIN so checks inside it stay true."""
        conn = self._writer()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _migrate(self) -> None:
        conn = self._writer()
        try:
            # executescript commits whatever is pending first, so the transaction lives inside the script.
            conn.executescript(
                "BEGIN IMMEDIATE;" + _SCHEMA
                + f"INSERT OR IGNORE INTO meta (key, value) VALUES ('manifest_version', '{MANIFEST_VERSION}');"
                + "COMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        row = conn.execute("SELECT value FROM meta WHERE key = 'manifest_version'").fetchone()
        if int(row[0]) > MANIFEST_VERSION:
            raise ManifestError(f"manifest {self.path} has version {row[0]}, newer than this software")

    # ----------------------------------------------------------------- paths
    def _rel(self, path: str | os.PathLike[str]) -> str:
        p = Path(path).resolve()
        try:
            return p.relative_to(self.root.resolve()).as_posix()
        except ValueError:
            return str(p)

    def _abs(self, stored: str) -> str:
        p = Path(stored)
        return str(p if p.is_absolute() else self.root / p)

    # ----------------------------------------------------------------- reading
    def _rows(self, sql: str, args: list[Any] | None = None) -> list[dict[str, Any]]:
        conn = self._conn()
        if conn is None:
            return []
        cur = conn.execute(sql, args or [])
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]

    def _records(self, where: str = "1=1", args: list[Any] | None = None) -> list[GenerationRecord]:
        conn = self._conn()
        if conn is None:
            return []
        # One read transaction so that generation, indices and shards rows are seen at one instant.
        own_tx = not conn.in_transaction
        if own_tx:
            conn.execute("BEGIN")
        try:
            gens = self._rows(f"SELECT * FROM generations WHERE {where} ORDER BY id", args)
            if not gens:
                return []
            ids = [g["id"] for g in gens]
            marks = ",".join("?" * len(ids))
            idx_rows = self._rows(
                f"SELECT * FROM indices WHERE generation_id IN ({marks}) ORDER BY generation_id, name", ids)
            shard_rows = self._rows(
                f"SELECT * FROM shards WHERE generation_id IN ({marks}) "
                "ORDER BY generation_id, index_name, shard", ids)
        finally:
            if own_tx:
                conn.execute("COMMIT")
        shards: dict[tuple[int, str], list[ShardRecord]] = {}
        for s in shard_rows:
            shards.setdefault((s["generation_id"], s["index_name"]), []).append(
                ShardRecord(s["shard"], self._abs(s["path"]), s["count"], s["sha256"], s["bytes"]))
        indices: dict[int, dict[str, IndexRecord]] = {}
        for r in idx_rows:
            indices.setdefault(r["generation_id"], {})[r["name"]] = IndexRecord(
                name=r["name"], space=r["space"], entity_kind=r["entity_kind"], dim=r["dim"],
                metric=r["metric"], backend=r["backend"], params=json.loads(r["params"]), count=r["count"],
                recall=r["recall"], shards=shards.get((r["generation_id"], r["name"]), []),
                build_seconds=r["build_seconds"], carried_from=r["carried_from"])
        return [
            GenerationRecord(
                id=g["id"], state=g["state"], created_at=g["created_at"], published_at=g["published_at"],
                checkpoint=g["checkpoint"], checkpoint_id=g["checkpoint_id"], message=g["message"],
                indices=indices.get(g["id"], {}), finished_at=g["finished_at"],
                library_versions=json.loads(g["library_versions"]), timings=json.loads(g["timings"]))
            for g in gens
        ]

    def list_generations(self) -> list[GenerationRecord]:
        """Every generation, oldest first."""
        return self._records()

    def generation(self, gen_id: int) -> GenerationRecord:
        found = self._records("id = ?", [int(gen_id)])
        if not found:
            raise IndexNotReady(f"no generation {gen_id} in {self.path}")
        return found[0]

    def active_generation(self) -> GenerationRecord | None:
        found = self._records("state = 'active'")
        return found[0] if found else None

    def generations_in(self, *states: str) -> list[GenerationRecord]:
        marks = ",".join("?" * len(states))
        return self._records(f"state IN ({marks})", list(states))

    # ----------------------------------------------------------------- writing
    def begin_generation(
        self,
        checkpoint: str | None,
        checkpoint_id: str | None,
        library_versions: dict[str, str] | None = None,
        message: str = "",
    ) -> int:
        """A new generation in state building; returns its id (also its folder name)."""
        with self._tx() as conn:
            cur = conn.execute(
                "INSERT INTO generations (state, created_at, checkpoint, checkpoint_id, message, builder_pid, "
                "library_versions) VALUES ('building', ?, ?, ?, ?, ?, ?)",
                [utc_now(), checkpoint, checkpoint_id, message, os.getpid(),
                 json.dumps(library_versions or {}, sort_keys=True)],
            )
            return int(cur.lastrowid or 0)

    def finish_generation(
        self,
        gen_id: int,
        indices: list[IndexRecord],
        timings: dict[str, float] | None = None,
        message: str = "",
        checkpoint: str | None = None,
        checkpoint_id: str | None = None,
    ) -> GenerationRecord:
        """Record the indices and shards of a building generation and mark it ready, in one transaction."""
        with self._tx() as conn:
            self._expect_state(conn, gen_id, "building")
            for rec in indices:
                conn.execute(
                    "INSERT INTO indices (generation_id, name, space, entity_kind, dim, metric, backend, params, "
                    "count, recall, build_seconds, carried_from) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
                    [gen_id, rec.name, rec.space, rec.entity_kind, rec.dim, rec.metric, rec.backend,
                     json.dumps(rec.params, sort_keys=True), rec.count, rec.recall, rec.build_seconds,
                     rec.carried_from],
                )
                for s in rec.shards:
                    conn.execute(
                        "INSERT INTO shards (generation_id, index_name, shard, path, count, sha256, bytes) "
                        "VALUES (?,?,?,?,?,?,?)",
                        [gen_id, rec.name, s.shard, self._rel(s.path), s.count, s.sha256, s.bytes],
                    )
            conn.execute(
                "UPDATE generations SET state = 'ready', finished_at = ?, message = ?, timings = ?, "
                "checkpoint = COALESCE(?, checkpoint), checkpoint_id = COALESCE(?, checkpoint_id) WHERE id = ?",
                [utc_now(), message, json.dumps(timings or {}, sort_keys=True), checkpoint, checkpoint_id,
                 gen_id],
            )
        return self.generation(gen_id)

    def fail_generation(self, gen_id: int, message: str) -> None:
        """Mark a building generation failed with the reason (no-op if it already left building)."""
        with self._tx() as conn:
            conn.execute(
                "UPDATE generations SET state = 'failed', finished_at = ?, message = ? "
                "WHERE id = ? AND state = 'building'",
                [utc_now(), message, gen_id],
            )

    def publish(self, gen_id: int) -> GenerationRecord:
        """Make a ready (or retired) generation the active one; the previous active one retires. One transaction."""
        with self._tx() as conn:
            state = self._expect_state(conn, gen_id, "ready", "retired", "active")
            if state != "active":
                conn.execute("UPDATE generations SET state = 'retired' WHERE state = 'active'")
                conn.execute(
                    "UPDATE generations SET state = 'active', published_at = ? WHERE id = ?", [utc_now(), gen_id]
                )
        return self.generation(gen_id)

    def rollback(self) -> GenerationRecord:
        """The newest ready/retired generation older than the active one becomes active; returns it."""
        with self._tx() as conn:
            row = conn.execute("SELECT id FROM generations WHERE state = 'active'").fetchone()
            if row is None:
                raise IndexNotReady("no active generation to roll back from")
            current = int(row[0])
            prev = conn.execute(
                "SELECT id FROM generations WHERE state IN ('ready', 'retired') AND id < ? "
                "ORDER BY id DESC LIMIT 1",
                [current],
            ).fetchone()
            if prev is None:
                raise IndexNotReady(f"generation {current} is active and no older ready generation exists")
            target = int(prev[0])
            conn.execute(
                "UPDATE generations SET state = 'retired', message = ? WHERE id = ?",
                [f"rolled back to generation {target} at {utc_now()}", current],
            )
            conn.execute(
                "UPDATE generations SET state = 'active', published_at = ? WHERE id = ?", [utc_now(), target]
            )
        return self.generation(target)

    def delete_generations(self, gen_ids: list[int]) -> None:
        """Remove generations' rows (their folders are the caller's to delete afterwards)."""
        if not gen_ids:
            return
        marks = ",".join("?" * len(gen_ids))
        with self._tx() as conn:
            bad = conn.execute(
                f"SELECT id FROM generations WHERE id IN ({marks}) AND state IN ('active', 'building')", gen_ids
            ).fetchall()
            if bad:
                raise ManifestError(f"refusing to delete active/building generations {[r[0] for r in bad]}")
            conn.execute(f"DELETE FROM shards WHERE generation_id IN ({marks})", gen_ids)
            conn.execute(f"DELETE FROM indices WHERE generation_id IN ({marks})", gen_ids)
            conn.execute(f"DELETE FROM generations WHERE id IN ({marks})", gen_ids)

    @staticmethod
    def _expect_state(conn: sqlite3.Connection, gen_id: int, *states: str) -> str:
        row = conn.execute("SELECT state FROM generations WHERE id = ?", [gen_id]).fetchone()
        if row is None:
            raise IndexNotReady(f"no generation {gen_id}")
        if row[0] not in states:
            raise ManifestError(f"generation {gen_id} is {row[0]}, expected {' or '.join(states)}")
        return str(row[0])
