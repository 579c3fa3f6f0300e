"""The catalog: one SQLite file of entities, queries, engagements and legacy vectors, read and written here."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import sqlite_utils
from numpy.typing import NDArray

from catalog.errors import CatalogError, DimensionMismatch, InvalidVector
from catalog.schema import SCHEMA_VERSION, TEXT_FIELDS, current_version, migrate

Row = dict[str, Any]


def _chunks(seq: Sequence[str], size: int = 900) -> Iterator[Sequence[str]]:
    # SQLite caps bound parameters per statement (999 on old builds).
    for i in range(0, len(seq), size):
        yield seq[i : i + size]


class Catalog:
    """A catalog file. Writers use `Catalog.edit(path)`, servers `Catalog(path, read_only=True)`."""

    def __init__(self, path: str | os.PathLike[str], read_only: bool = False) -> None:
        self.path = Path(path)
        self.read_only = read_only
        if read_only:
            if not self.path.exists():
                raise CatalogError(f"no catalog at {self.path}; run `catalog import ...` first")
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, check_same_thread=False)
            self.db = sqlite_utils.Database(conn)
            version = current_version(self.db)
            if version != SCHEMA_VERSION:
                raise CatalogError(
                    f"catalog {self.path} has schema version {version}, this software reads "
                    f"{SCHEMA_VERSION}; open it once for writing to migrate"
                )
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.db = sqlite_utils.Database(self.path)
            migrate(self.db)

    # ----------------------------------------------------------------- lifecycle
    def close(self) -> None:
        self.db.conn.close()

    def __enter__(self) -> Catalog:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @classmethod
    @contextlib.contextmanager
    def edit(cls, path: str | os.PathLike[str]) -> Iterator[Catalog]:
        """Open a writable copy; on success it replaces `path` atomically, on error `path` is untouched.

        sqlite-utils commits per call, so one transaction per import is had by working on a copy and
        renaming it into place (the same temp-then-rename rule as every other artifact).
        """
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".catalog-", suffix=".db.tmp", dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        try:
            if target.exists():
                src = sqlite3.connect(target)
                dst = sqlite3.connect(tmp)
                with dst:
                    src.backup(dst)
                src.close()
                dst.close()
            else:
                tmp.unlink()
            cat = cls(tmp)
            try:
                yield cat
            finally:
                cat.close()
            os.replace(tmp, target)
        finally:
            if tmp.exists():
                tmp.unlink()

    # ----------------------------------------------------------------- entities
    def entity_kinds(self) -> list[str]:
        return [r[0] for r in self.db.execute("select distinct kind from entities order by kind")]

    def entities(self, kind: str | None = None) -> Iterator[Row]:
        """Every entity (optionally of one kind) as a dict, in id order."""
        where, args = ("kind = ?", [kind]) if kind else (None, None)
        yield from self.db["entities"].rows_where(where, args, order_by="id")

    def entity_ids(self, kind: str | None = None) -> list[str]:
        if kind:
            cur = self.db.execute("select id from entities where kind = ? order by id", [kind])
        else:
            cur = self.db.execute("select id from entities order by id")
        return [r[0] for r in cur]

    def get_entities(self, ids: Sequence[str]) -> dict[str, Row]:
        """Entities by id; missing ids are absent from the result."""
        out: dict[str, Row] = {}
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            for row in self.db["entities"].rows_where(f"id in ({marks})", list(chunk)):
                out[row["id"]] = row
        return out

    def count_entities(self, kind: str | None = None) -> int:
        if kind:
            return int(self.db.execute("select count(*) from entities where kind = ?", [kind]).fetchone()[0])
        return int(self.db.execute("select count(*) from entities").fetchone()[0])

    # ----------------------------------------------------------------- queries
    def queries(self) -> Iterator[Row]:
        yield from self.db["queries"].rows_where(order_by="id")

    def get_queries(self, ids: Sequence[str]) -> dict[str, Row]:
        out: dict[str, Row] = {}
        for chunk in _chunks(list(ids)):
            marks = ",".join("?" * len(chunk))
            for row in self.db["queries"].rows_where(f"id in ({marks})", list(chunk)):
                out[row["id"]] = row
        return out

    # ----------------------------------------------------------------- engagements
    def engagements(
        self,
        split: str | None = None,
        target_type: str | None = None,
        entity_kind: str | None = None,
    ) -> Iterator[Row]:
        """Engagement rows, joined with the target entity's kind as `entity_kind` (NULL for query targets)."""
        sql = (
            "select g.query_id, g.target_id, g.target_type, g.kind, g.grade, g.weight, g.split, g.source, "
            "e.kind as entity_kind from engagements g "
            "left join entities e on g.target_type = 'entity' and e.id = g.target_id where 1=1"
        )
        args: list[Any] = []
        if split:
            sql += " and g.split = ?"
            args.append(split)
        if target_type:
            sql += " and g.target_type = ?"
            args.append(target_type)
        if entity_kind:
            sql += " and e.kind = ?"
            args.append(entity_kind)
        sql += " order by g.query_id, g.target_id"
        cur = self.db.execute(sql, args)
        cols = [d[0] for d in cur.description]
        for values in cur:
            yield dict(zip(cols, values, strict=True))

    # ----------------------------------------------------------------- legacy vectors
    def legacy_spaces(self) -> dict[str, int]:
        """Legacy space name -> dimension."""
        if "legacy_spaces" not in self.db.table_names():
            return {}
        return {r["name"]: int(r["dim"]) for r in self.db["legacy_spaces"].rows}

    def legacy_vectors(self, space: str) -> tuple[list[str], NDArray[np.float32]]:
        """All vectors of one space as (entity ids, float32 matrix (n, dim)), in id order."""
        spaces = self.legacy_spaces()
        if space not in spaces:
            raise CatalogError(f"unknown legacy space {space!r}; known: {sorted(spaces)}")
        dim = spaces[space]
        cur = self.db.execute(
            "select entity_id, vector from legacy_vectors where space = ? order by entity_id", [space]
        )
        ids: list[str] = []
        blobs: list[bytes] = []
        for entity_id, blob in cur:
            ids.append(entity_id)
            blobs.append(blob)
        mat = np.frombuffer(b"".join(blobs), dtype="<f4").reshape(len(ids), dim).astype(np.float32)
        return ids, mat

    def put_legacy_vectors(
        self,
        space: str,
        ids: Sequence[str],
        vectors: NDArray[np.floating[Any]],
        description: str = "",
    ) -> int:
        """Store vectors of one space (creating it); returns the number written."""
        vecs = np.asarray(vectors, dtype=np.float32)
        if vecs.ndim != 2 or vecs.shape[0] != len(ids):
            raise DimensionMismatch(f"expected ({len(ids)}, dim) vectors, got shape {vecs.shape}")
        if not np.isfinite(vecs).all():
            raise InvalidVector(f"legacy space {space!r}: vectors contain NaN or infinity")
        dim = int(vecs.shape[1])
        known = self.legacy_spaces()
        if space in known and known[space] != dim:
            raise DimensionMismatch(f"legacy space {space!r} has dim {known[space]}, got {dim}")
        self.db["legacy_spaces"].upsert(  # type: ignore[union-attr]
            {"name": space, "dim": dim, "description": description}, pk="name"
        )
        rows = (
            {"space": space, "entity_id": i, "vector": v.astype("<f4").tobytes()}
            for i, v in zip(ids, vecs, strict=True)
        )
        self.db["legacy_vectors"].upsert_all(rows, pk=("space", "entity_id"), batch_size=2000)  # type: ignore[union-attr]
        return len(ids)

    # ----------------------------------------------------------------- writing
    def upsert_entities(self, rows: Iterable[Row]) -> None:
        self.db["entities"].upsert_all(rows, pk="id", batch_size=2000)  # type: ignore[union-attr]

    def upsert_queries(self, rows: Iterable[Row]) -> None:
        self.db["queries"].upsert_all(rows, pk="id", batch_size=2000)  # type: ignore[union-attr]

    def upsert_engagements(self, rows: Iterable[Row]) -> None:
        self.db["engagements"].upsert_all(  # type: ignore[union-attr]
            rows, pk=("query_id", "target_id", "target_type", "kind"), batch_size=2000
        )

    # ----------------------------------------------------------------- stats
    def stats(self) -> dict[str, Any]:
        """Counts per kind, language, engagement kind and split, and legacy spaces."""
        q = self.db.execute
        return {
            "entities": {f"{k}/{lang or '-'}": n for k, lang, n in q(
                "select kind, lang, count(*) from entities group by kind, lang order by kind, lang")},
            "queries": {lang or "-": n for lang, n in q(
                "select lang, count(*) from queries group by lang order by lang")},
            "engagements": {f"{k}/{t}/{s or 'unsplit'}": n for k, t, s, n in q(
                "select kind, target_type, split, count(*) from engagements "
                "group by kind, target_type, split order by kind, target_type, split")},
            "legacy_spaces": {name: {"dim": dim, "vectors": n} for name, dim, n in q(
                "select s.name, s.dim, count(v.entity_id) from legacy_spaces s "
                "left join legacy_vectors v on v.space = s.name group by s.name order by s.name")},
        }


def text_of(entity: Row, fields: Sequence[str] = TEXT_FIELDS) -> str:
    """The non-empty text fields of an entity joined with ' . ' (for BM25 and backbone baselines)."""
    return " . ".join(str(entity[f]) for f in fields if entity.get(f))
