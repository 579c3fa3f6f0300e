"""Importers: the real data sets load with their known counts; every kind of bad row is reported."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from catalog import Catalog, Home
from catalog.errors import ImportRejected
from catalog.importers.runner import run_import
from catalog.split import split_by_query
from tests.conftest import shared_data


def _counts(home: Home) -> tuple[int, int, int]:
    with Catalog(home.catalog_db, read_only=True) as cat:
        q = cat.db.execute
        return (q("select count(*) from entities").fetchone()[0], q("select count(*) from queries").fetchone()[0],
                q("select count(*) from engagements").fetchone()[0])


def test_xquad_shipped_copy(home: Home) -> None:
    report = run_import(home, "xquad")
    assert not report.rejected
    # 240 paragraphs and 952 questions in each of 12 languages; translations link each language with English
    assert _counts(home) == (240 * 12, 952 * 12, 952 * 12 + 952 * 11 * 2)
    with Catalog(home.catalog_db, read_only=True) as cat:
        pin = cat.get_entities(["Super_Bowl_50-0-es"])["Super_Bowl_50-0-es"]
        assert pin["kind"] == "pin" and pin["lang"] == "es" and pin["description"]
        q = cat.get_queries(["56beb4343aeaaa14008c925c-de"])["56beb4343aeaaa14008c925c-de"]
        assert q["lang"] == "de" and q["group_id"] == "56beb4343aeaaa14008c925c"


def test_scifact_and_esci_shipped_copies(home: Home) -> None:
    run_import(home, "scifact")
    assert _counts(home)[:2] == (5183, 809)
    run_import(home, "esci")
    with Catalog(home.catalog_db, read_only=True) as cat:
        langs = dict(cat.db.execute("select lang, count(*) from entities where source='esci' group by lang"))
        assert set(langs) == {"en", "es"}
        doc = cat.get_entities(["4983"])["4983"]
        assert doc["kind"] == "doc" and doc["description"].startswith("Alterations of the architecture")


@pytest.mark.slow
def test_homedepot_and_crowdflower_counts(home: Home) -> None:
    run_import(home, "homedepot", shared_data("homedepot"))
    assert _counts(home) == (54667, 10295, 64615)
    report = run_import(home, "crowdflower", shared_data("crowdflower"))
    assert not report.rejected
    with Catalog(home.catalog_db, read_only=True) as cat:
        q = cat.db.execute
        assert q("select count(*) from entities where source='crowdflower'").fetchone()[0] == 9913
        assert q("select count(*) from queries where source='crowdflower'").fetchone()[0] == 211
        # 8,241 judgment rows; pairs judged twice are one engagement with the mean grade and weight 2
        assert q("select sum(weight) from engagements where source='crowdflower'").fetchone()[0] == 8241


def _write_jsonl(path: Path, rows: list[object]) -> None:
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows), encoding="utf-8")


@pytest.fixture
def user_dir(tmp_path: Path) -> Path:
    d = tmp_path / "mine"
    d.mkdir()
    _write_jsonl(d / "entities.jsonl", [
        {"id": "e1", "kind": "pin", "lang": "en", "title": "blue chair"},
        {"id": "e2", "kind": "product", "title": "oak table", "brand": "acme"},
        {"id": "e1", "kind": "pin", "title": "dup"},                      # line 3: duplicate id
        {"id": "e3", "kind": "pin", "title": "x", "colour": "red"},       # line 4: unknown column
        {"id": "e4", "kind": "pin", "title": "  ", "description": ""},    # line 5: empty text
        "{not json",                                                       # line 6: malformed
    ])
    with open(d / "entities.jsonl", "ab") as fh:
        fh.write(b'{"id": "e5", "kind": "pin", "title": "caf\xe9"}\n')    # line 7: latin-1 byte
    _write_jsonl(d / "queries.jsonl", [
        {"id": "q1", "text": "chair", "lang": "en"},
        {"id": "q2", "text": ""},                                          # line 2: empty text
    ])
    _write_jsonl(d / "engagements.jsonl", [
        {"query_id": "q1", "entity_id": "e1", "kind": "engaged", "weight": 3},
        {"query_id": "q1", "entity_id": "nope"},                           # line 2: dangling entity
        {"query_id": "qx", "entity_id": "e2"},                             # line 3: dangling query
        {"query_id": "q1", "entity_id": "e2", "target_query_id": "q1"},    # line 4: both targets
    ])
    (d / "legacy").mkdir()
    vecs = np.arange(8, dtype=np.float32).reshape(2, 4)
    vecs[1, 2] = np.nan
    np.save(d / "legacy" / "pinsage.npy", vecs)
    (d / "legacy" / "pinsage.ids").write_text("e1\ne2\n", encoding="utf-8")
    pq.write_table(pa.table({"id": ["e1", "e2", "ghost"], "vector": [[1.0, 2.0], [1.0, 2.0, 3.0], [0.0, 1.0]]}),
                   d / "legacy" / "itemsage.parquet")
    return d


def test_generic_import_reports_every_bad_row(home: Home, user_dir: Path) -> None:
    report = run_import(home, "jsonl", user_dir)
    reasons = {(Path(r.file).name, r.line): r.reason for r in report.rejected}
    assert "duplicate entity id 'e1'" in reasons[("entities.jsonl", 3)]
    assert "unknown column" in reasons[("entities.jsonl", 4)] and "colour" in reasons[("entities.jsonl", 4)]
    assert "no text" in reasons[("entities.jsonl", 5)]
    assert "invalid JSON" in reasons[("entities.jsonl", 6)]
    assert "UTF-8" in reasons[("entities.jsonl", 7)]
    assert "empty text" in reasons[("queries.jsonl", 2)]
    assert "unknown entity 'nope'" in reasons[("engagements.jsonl", 2)]
    assert "unknown query 'qx'" in reasons[("engagements.jsonl", 3)]
    assert "exactly one" in reasons[("engagements.jsonl", 4)]
    assert "NaN" in reasons[("pinsage.npy", 2)]
    assert "dimension 3" in reasons[("itemsage.parquet", 2)]
    assert "unknown entity 'ghost'" in reasons[("itemsage.parquet", 3)]
    assert len(report.rejected) == 12
    with Catalog(home.catalog_db, read_only=True) as cat:
        assert cat.entity_ids() == ["e1", "e2"]
        assert cat.legacy_spaces() == {"itemsage": 2, "pinsage": 4}
        assert cat.legacy_vectors("pinsage")[0] == ["e1"]
        (eng,) = list(cat.engagements())
        assert eng["weight"] == 3.0 and eng["entity_kind"] == "pin"


def test_strict_import_writes_nothing(home: Home, user_dir: Path) -> None:
    run_import(home, "esci")
    before = home.catalog_db.read_bytes()
    with pytest.raises(ImportRejected, match="12 rows rejected") as info:
        run_import(home, "jsonl", user_dir, strict=True)
    assert len(info.value.rejected) == 12
    assert home.catalog_db.read_bytes() == before


def test_wrong_dimension_against_an_existing_space(home: Home, tmp_path: Path) -> None:
    d = tmp_path / "v"
    (d / "legacy").mkdir(parents=True)
    _write_jsonl(d / "entities.jsonl", [{"id": "a", "kind": "pin", "title": "t"}])
    np.save(d / "legacy" / "s.npy", np.ones((1, 4), dtype=np.float32))
    (d / "legacy" / "s.ids").write_text("a\n", encoding="utf-8")
    assert not run_import(home, "jsonl", d).rejected
    np.save(d / "legacy" / "s.npy", np.ones((1, 5), dtype=np.float32))
    report = run_import(home, "jsonl", d)
    assert [r.reason for r in report.rejected] == ["vector of dimension 5, space 's' has 4"]


def test_id_clash_between_sources_is_reported(home: Home, tmp_path: Path) -> None:
    run_import(home, "scifact")
    d = tmp_path / "clash"
    d.mkdir()
    _write_jsonl(d / "entities.jsonl", [{"id": "4983", "kind": "product", "title": "a product"},
                                        {"id": "p2", "kind": "product", "title": "another product"}])
    _write_jsonl(d / "queries.jsonl", [{"id": "q1", "text": "a query"}])
    _write_jsonl(d / "engagements.jsonl", [{"query_id": "q1", "entity_id": "4983"},
                                           {"query_id": "q1", "entity_id": "p2"}])
    report = run_import(home, "jsonl", d)
    reasons = [r.reason for r in report.rejected]
    assert "clashes with source 'scifact'" in reasons[0]
    # the engagement meant this import's product 4983, which was not written: it must not land on the SciFact doc
    assert any("'4983' was not imported" in r and "'scifact'" in r for r in reasons)
    assert report.written["engagements"] == 1
    with Catalog(home.catalog_db, read_only=True) as cat:
        assert cat.get_entities(["4983"])["4983"]["kind"] == "doc"
        targets = [r[0] for r in cat.db.execute("select target_id from engagements where query_id = 'q1'")]
        assert targets == ["p2"]


def test_reimport_is_idempotent(home: Home) -> None:
    run_import(home, "esci")
    first = _counts(home)
    run_import(home, "esci")
    assert _counts(home) == first


def test_split_by_query_keeps_groups_together(home: Home) -> None:
    run_import(home, "xquad")
    with Catalog.edit(home.catalog_db) as cat:
        counts = split_by_query(cat, dev=0.1, seed=3)
        again = split_by_query(cat, dev=0.1, seed=3)
    assert counts == again and set(counts) == {"train", "dev"}
    assert 0.07 < counts["dev"] / (counts["dev"] + counts["train"]) < 0.13
    with Catalog(home.catalog_db, read_only=True) as cat:
        leaks = cat.db.execute(
            "select q.group_id from engagements g join queries q on q.id = g.query_id "
            "group by q.group_id having count(distinct g.split) > 1").fetchall()
        assert leaks == []
