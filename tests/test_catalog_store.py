"""The catalog store: schema versions, read-only opening, legacy vectors, atomic edits."""

from __future__ import annotations

import sqlite3

import numpy as np
import pytest

from catalog import SCHEMA_VERSION, Catalog, Home
from catalog.errors import CatalogError, DimensionMismatch, InvalidVector
from catalog.schema import current_version


def _seed(home: Home) -> None:
    with Catalog.edit(home.catalog_db) as cat:
        cat.upsert_entities([{"id": "p1", "kind": "pin", "lang": "en", "title": "red shoes"},
                             {"id": "p2", "kind": "product", "lang": "es", "title": "zapatos"}])
        cat.upsert_queries([{"id": "q1", "text": "shoes", "lang": "en", "group_id": "q1"}])
        cat.upsert_engagements([{"query_id": "q1", "target_id": "p1", "target_type": "entity",
                                 "kind": "engaged", "grade": 1.0, "weight": 1.0, "split": "train"}])


def test_new_catalog_has_current_schema_version(home: Home) -> None:
    _seed(home)
    with Catalog(home.catalog_db, read_only=True) as cat:
        assert current_version(cat.db) == SCHEMA_VERSION
        assert cat.entity_kinds() == ["pin", "product"]
        rows = list(cat.engagements(split="train"))
        assert [(r["query_id"], r["target_id"], r["entity_kind"]) for r in rows] == [("q1", "p1", "pin")]


def test_read_only_refuses_writes_and_missing_files(home: Home) -> None:
    with pytest.raises(CatalogError, match="no catalog"):
        Catalog(home.catalog_db, read_only=True)
    _seed(home)
    with Catalog(home.catalog_db, read_only=True) as cat, pytest.raises(sqlite3.OperationalError):
        cat.db.execute("delete from entities")


def test_newer_schema_is_refused(home: Home) -> None:
    _seed(home)
    conn = sqlite3.connect(home.catalog_db)
    with conn:
        conn.execute("update meta set value = ? where key = 'schema_version'", [str(SCHEMA_VERSION + 1)])
    conn.close()
    with pytest.raises(CatalogError, match="newer"):
        Catalog(home.catalog_db)
    with pytest.raises(CatalogError, match="schema version"):
        Catalog(home.catalog_db, read_only=True)


def test_failed_edit_leaves_catalog_untouched(home: Home) -> None:
    _seed(home)
    before = home.catalog_db.read_bytes()
    with pytest.raises(RuntimeError), Catalog.edit(home.catalog_db) as cat:
        cat.upsert_entities([{"id": "p3", "kind": "pin", "title": "hat"}])
        raise RuntimeError("boom")
    assert home.catalog_db.read_bytes() == before
    assert not list(home.root.glob(".catalog-*"))


def test_legacy_vectors_roundtrip_as_float32_blobs(home: Home) -> None:
    _seed(home)
    vecs = np.random.default_rng(0).standard_normal((2, 7)).astype(np.float32)
    with Catalog.edit(home.catalog_db) as cat:
        cat.put_legacy_vectors("pinsage", ["p1", "p2"], vecs, description="test")
        with pytest.raises(DimensionMismatch):
            cat.put_legacy_vectors("pinsage", ["p1"], np.zeros((1, 3)))
        with pytest.raises(InvalidVector):
            cat.put_legacy_vectors("other", ["p1"], np.full((1, 3), np.nan))
    with Catalog(home.catalog_db, read_only=True) as cat:
        assert cat.legacy_spaces() == {"pinsage": 7}
        ids, got = cat.legacy_vectors("pinsage")
        assert ids == ["p1", "p2"]
        np.testing.assert_array_equal(got, vecs)
        blob = cat.db.execute("select vector from legacy_vectors limit 1").fetchone()[0]
        assert isinstance(blob, bytes) and len(blob) == 7 * 4
