"""Shared machinery of every importer: row validation, rejection reports and the batched write."""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from catalog.schema import SPLITS, TARGET_TYPES, TEXT_FIELDS
from catalog.store import Catalog

Row = dict[str, Any]

# CSV fields in the shipped data sets hold whole product descriptions.
csv.field_size_limit(1 << 28)


@dataclass(frozen=True)
class Rejection:
    """One row that was not imported, and why."""

    file: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.reason}"


@dataclass
class Report:
    """What one import did: rows written per table and rows rejected with file, line and reason."""

    source: str
    written: Counter[str] = field(default_factory=Counter)
    rejected: list[Rejection] = field(default_factory=list)

    def reject(self, file: str | Path, line: int, reason: str) -> None:
        self.rejected.append(Rejection(str(file), line, reason))

    def summary(self) -> str:
        parts = ", ".join(f"{n} {table}" for table, n in sorted(self.written.items()))
        return f"{self.source}: wrote {parts or 'nothing'}; rejected {len(self.rejected)} rows"


def open_text(path: Path) -> io.TextIOBase:
    """Open a text file, transparently gunzipping `.gz`; undecodable bytes survive as surrogates.

    Bytes that are not UTF-8 are kept as lone surrogates so the row holding them can be rejected with its
    line number instead of failing the whole file.
    """
    raw = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")  # noqa: SIM115
    return io.TextIOWrapper(raw, encoding="utf-8", errors="surrogateescape", newline="")


def has_bad_encoding(values: Any) -> bool:
    """True when any string in `values` carries bytes that were not valid UTF-8."""
    items = values.values() if isinstance(values, dict) else values
    for v in items:
        if isinstance(v, str) and any("\udc80" <= ch <= "\udcff" for ch in v):
            return True
    return False


def read_csv(path: Path) -> Iterator[tuple[int, Row]]:
    """(first line number of the record, row dict) for each CSV record."""
    with open_text(path) as fh:
        reader = csv.DictReader(fh)
        start = 2
        for row in reader:
            yield start, row
            start = reader.line_num + 1


def read_jsonl(path: Path, report: Report) -> Iterator[tuple[int, Row]]:
    """(line number, object) for each JSON line; malformed lines are rejected into `report`."""
    with open_text(path) as fh:
        for lineno, text in enumerate(fh, start=1):
            if not text.strip():
                continue
            if has_bad_encoding([text]):
                report.reject(path, lineno, "not valid UTF-8")
                continue
            try:
                obj = json.loads(text)
            except json.JSONDecodeError as exc:
                report.reject(path, lineno, f"invalid JSON: {exc.msg}")
                continue
            if not isinstance(obj, dict):
                report.reject(path, lineno, "a line must hold a JSON object")
                continue
            yield lineno, obj


def read_table(path: Path, report: Report) -> Iterator[tuple[int, Row]]:
    """Rows of a .jsonl/.csv file (optionally .gz), by extension."""
    name = path.name.removesuffix(".gz")
    if name.endswith(".jsonl") or name.endswith(".json"):
        yield from read_jsonl(path, report)
    elif name.endswith(".csv"):
        yield from read_csv(path)
    else:
        raise ValueError(f"{path}: expected .jsonl or .csv (optionally .gz)")


def clean(value: Any) -> str | None:
    """Strip a text value; empty becomes None."""
    if value is None:
        return None
    text = str(value).strip()
    return text or None


def to_float(value: Any) -> float | None:
    """Parse an optional number; raises ValueError for garbage and non-finite values."""
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    number = float(value)
    if not math.isfinite(number):
        raise ValueError(f"not a finite number: {value!r}")
    return number


class ImportBatch:
    """Rows of one import, validated as they come and written together by `write`."""

    def __init__(self, source: str, report: Report) -> None:
        self.source = source
        self.report = report
        self.entities: dict[str, Row] = {}
        self.queries: dict[str, Row] = {}
        self.engagements: dict[tuple[str, str, str, str], Row] = {}
        self._origin: dict[tuple[str, str], tuple[str, int]] = {}

    # ------------------------------------------------------------------ adding rows
    def add_entity(self, row: Row, file: str | Path, line: int) -> bool:
        """Validate and keep an entity row (id, kind, lang, text fields)."""
        if has_bad_encoding(row):
            self.report.reject(file, line, "not valid UTF-8")
            return False
        entity_id, kind = clean(row.get("id")), clean(row.get("kind"))
        if not entity_id:
            self.report.reject(file, line, "entity without id")
            return False
        if not kind:
            self.report.reject(file, line, f"entity {entity_id!r} without kind")
            return False
        out: Row = {"id": entity_id, "kind": kind, "lang": clean(row.get("lang")), "source": self.source}
        for name in TEXT_FIELDS:
            out[name] = clean(row.get(name))
        if not any(out[name] for name in TEXT_FIELDS):
            self.report.reject(file, line, f"entity {entity_id!r} has no text in any field")
            return False
        if entity_id in self.entities:
            first = self._origin[("entity", entity_id)]
            self.report.reject(file, line, f"duplicate entity id {entity_id!r} (first at {first[0]}:{first[1]})")
            return False
        self.entities[entity_id] = out
        self._origin[("entity", entity_id)] = (str(file), line)
        return True

    def add_query(self, row: Row, file: str | Path, line: int, duplicate_ok: bool = False) -> bool:
        """Validate and keep a query row (id, text, lang, group_id)."""
        if has_bad_encoding(row):
            self.report.reject(file, line, "not valid UTF-8")
            return False
        query_id, text = clean(row.get("id")), clean(row.get("text"))
        if not query_id:
            self.report.reject(file, line, "query without id")
            return False
        if not text:
            self.report.reject(file, line, f"query {query_id!r} has empty text")
            return False
        if query_id in self.queries:
            if duplicate_ok and self.queries[query_id]["text"] == text:
                return True
            first = self._origin[("query", query_id)]
            self.report.reject(file, line, f"duplicate query id {query_id!r} (first at {first[0]}:{first[1]})")
            return False
        self.queries[query_id] = {
            "id": query_id,
            "text": text,
            "lang": clean(row.get("lang")),
            "group_id": clean(row.get("group_id")) or query_id,
            "source": self.source,
        }
        self._origin[("query", query_id)] = (str(file), line)
        return True

    def add_engagement(self, row: Row, file: str | Path, line: int, merge: bool = False) -> bool:
        """Validate and keep an engagement (query_id, target_id, target_type, kind, grade, weight, split).

        With `merge`, a repeated pair is one engagement: grades are averaged and weights (counts) added, as
        when several raters judged the same pair; otherwise a repeat is rejected.
        """
        if has_bad_encoding(row):
            self.report.reject(file, line, "not valid UTF-8")
            return False
        query_id, target_id = clean(row.get("query_id")), clean(row.get("target_id"))
        target_type = clean(row.get("target_type")) or "entity"
        kind = clean(row.get("kind")) or "engaged"
        split = clean(row.get("split"))
        if not query_id or not target_id:
            self.report.reject(file, line, "engagement needs query_id and a target id")
            return False
        if target_type not in TARGET_TYPES:
            self.report.reject(file, line, f"target_type must be one of {TARGET_TYPES}, got {target_type!r}")
            return False
        if split is not None and split not in SPLITS:
            self.report.reject(file, line, f"split must be one of {SPLITS}, got {split!r}")
            return False
        try:
            grade, weight = to_float(row.get("grade")), to_float(row.get("weight"))
        except ValueError as exc:
            self.report.reject(file, line, f"bad number: {exc}")
            return False
        key = (query_id, target_id, target_type, kind)
        if key in self.engagements and merge:
            seen = self.engagements[key]
            n = seen.pop("_n", 1)
            if grade is not None and seen["grade"] is not None:
                seen["grade"] = (seen["grade"] * n + grade) / (n + 1)
            seen["weight"] += weight if weight is not None else 1.0
            seen["_n"] = n + 1
            return True
        if key in self.engagements:
            self.report.reject(file, line, f"duplicate engagement {query_id!r} -> {target_id!r} ({kind})")
            return False
        self.engagements[key] = {
            "query_id": query_id,
            "target_id": target_id,
            "target_type": target_type,
            "kind": kind,
            "grade": grade,
            "weight": weight if weight is not None else 1.0,
            "split": split,
            "source": self.source,
        }
        self._origin[("engagement", "\x1f".join(key))] = (str(file), line)
        return True

    # ------------------------------------------------------------------ writing
    def _owners(self, cat: Catalog, table: str, ids: list[str]) -> dict[str, str]:
        found = cat.get_entities(ids) if table == "entities" else cat.get_queries(ids)
        return {i: r["source"] for i, r in found.items()}

    def _drop_clashes(self, cat: Catalog, table: str, rows: dict[str, Row], label: str) -> dict[str, str]:
        """Reject rows whose id another source already holds; returns {id: that source}."""
        clashed: dict[str, str] = {}
        for record_id, owner in self._owners(cat, table, list(rows)).items():
            if owner != self.source:
                file, line = self._origin[(label, record_id)]
                self.report.reject(file, line, f"{label} id {record_id!r} clashes with source {owner!r}")
                del rows[record_id]
                clashed[record_id] = owner
        return clashed

    def write(self, cat: Catalog) -> None:
        """Drop rows whose ids clash with other sources or whose references dangle, then upsert the rest."""
        # an engagement of this import means this import's row of that id, not the other source's: it goes too
        clashed_e = self._drop_clashes(cat, "entities", self.entities, "entity")
        clashed_q = self._drop_clashes(cat, "queries", self.queries, "query")
        known_entities = set(self.entities)
        known_queries = set(self.queries)
        # references may point at rows already in the catalog from this or another import
        missing_e = [e["target_id"] for e in self.engagements.values() if e["target_type"] == "entity"]
        known_entities |= set(cat.get_entities([i for i in set(missing_e) if i not in known_entities]))
        ref_q = {e["query_id"] for e in self.engagements.values()}
        ref_q |= {e["target_id"] for e in self.engagements.values() if e["target_type"] == "query"}
        known_queries |= set(cat.get_queries([i for i in ref_q if i not in known_queries]))
        for key in list(self.engagements):
            row = self.engagements[key]
            dangling = None
            target_clash = clashed_e if row["target_type"] == "entity" else clashed_q
            if row["query_id"] in clashed_q:
                dangling = (f"query {row['query_id']!r} was not imported (its id belongs to source "
                            f"{clashed_q[row['query_id']]!r})")
            elif row["target_id"] in target_clash:
                dangling = (f"{row['target_type']} {row['target_id']!r} was not imported (its id belongs to source "
                            f"{target_clash[row['target_id']]!r})")
            elif row["query_id"] not in known_queries:
                dangling = f"unknown query {row['query_id']!r}"
            elif row["target_type"] == "entity" and row["target_id"] not in known_entities:
                dangling = f"unknown entity {row['target_id']!r}"
            elif row["target_type"] == "query" and row["target_id"] not in known_queries:
                dangling = f"unknown query {row['target_id']!r}"
            if dangling:
                file, line = self._origin[("engagement", "\x1f".join(key))]
                self.report.reject(file, line, f"dangling reference: {dangling}")
                del self.engagements[key]
        cat.upsert_entities(self.entities.values())
        cat.upsert_queries(self.queries.values())
        for row in self.engagements.values():
            row.pop("_n", None)
        cat.upsert_engagements(self.engagements.values())
        self.report.written.update(
            entities=len(self.entities), queries=len(self.queries), engagements=len(self.engagements)
        )
