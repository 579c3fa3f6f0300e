"""Read-only catalog lookups for hit display fields and kind/language filters, one connection per thread."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from catalog import TEXT_FIELDS, Catalog

# Display fields returned with include_fields: the text fields plus these, when non-empty.
EXTRA_FIELDS: tuple[str, ...] = ("lang", "source")


class Hydrator:
    """Looks up entities and queries by id in the catalog (never writes it).

    SQLite connections are cheap but not safely shared by threads mid-query, so each gRPC worker thread gets
    its own read-only `Catalog`. A Hydrator belongs to one served generation: the catalog file is replaced
    atomically by writers, and the next generation's Hydrator opens the new file.
    """

    def __init__(self, catalog_db: Path) -> None:
        self.path = catalog_db
        self._local = threading.local()
        self._opened: list[Catalog] = []
        self._lock = threading.Lock()
        cat = self._catalog()
        self.kinds: frozenset[str] = frozenset(cat.entity_kinds()) | {"query"}
        langs = {r[0] for r in cat.db.execute("select distinct lang from entities where lang is not null")}
        langs |= {r[0] for r in cat.db.execute("select distinct lang from queries where lang is not null")}
        self.languages: frozenset[str] = frozenset(str(x) for x in langs if x)

    def _catalog(self) -> Catalog:
        cat: Catalog | None = getattr(self._local, "catalog", None)
        if cat is None:
            cat = Catalog(self.path, read_only=True)
            with self._lock:
                self._opened.append(cat)
            self._local.catalog = cat
        return cat

    def lookup(self, ids: Sequence[str], queries_first: bool = False) -> dict[str, dict[str, Any]]:
        """Rows by id with a `kind` ("query" for catalog queries); ids found nowhere are absent.

        Args:
            ids: hit ids.
            queries_first: look in the queries table first (the `queries` index), else in entities first.
        """
        cat = self._catalog()
        out: dict[str, dict[str, Any]] = {}

        def entities(want: Sequence[str]) -> None:
            out.update(cat.get_entities(want))

        def queries(want: Sequence[str]) -> None:
            for qid, row in cat.get_queries(want).items():
                out[qid] = {**row, "kind": "query"}

        steps = (queries, entities) if queries_first else (entities, queries)
        steps[0](ids)
        missing = [i for i in ids if i not in out]
        if missing:
            steps[1](missing)
        return out

    @staticmethod
    def display_fields(row: dict[str, Any]) -> dict[str, str]:
        """The non-empty display fields of an entity or query row, as strings."""
        keys = ("text", *EXTRA_FIELDS) if row.get("kind") == "query" else (*TEXT_FIELDS, *EXTRA_FIELDS)
        return {k: str(row[k]) for k in keys if row.get(k) not in (None, "")}

    def close(self) -> None:
        with self._lock:
            opened, self._opened = self._opened, []
        for cat in opened:
            cat.close()
