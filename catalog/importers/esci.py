"""ESCI fragments importer: Amazon products with full fields (US English and Spanish) and their queries."""

from __future__ import annotations

from pathlib import Path

from catalog.importers.base import ImportBatch, clean, read_csv
from catalog.importers.paths import find_file
from catalog.importers.relevance import text_query_id

LOCALE_LANG = {"us": "en", "es": "es", "jp": "ja"}
ESCI_GRADE = {"E": 3.0, "S": 2.0, "C": 1.0, "I": 0.0}  # exact, substitute, complement, irrelevant


def import_esci(batch: ImportBatch, path: Path) -> None:
    """The exact-match sample (full product fields) and the one query with labelled products.

    The judgment lists without product text (`sample_dataset_5000.csv`, `esci_us_judgments.json`) are not
    imported: an entity needs text.
    """
    exact = find_file(path, "esci_E_exact_matches_sample100.csv")
    for line, row in read_csv(exact):
        lang = LOCALE_LANG.get((row.get("product_locale") or "").strip())
        if lang is None:
            batch.report.reject(exact, line, f"unknown product_locale {row.get('product_locale')!r}")
            continue
        pid = clean(row.get("product_id"))
        if pid and pid not in batch.entities:
            batch.add_entity({"id": pid, "kind": "product", "lang": lang, "title": row.get("product_title"),
                              "description": row.get("product_description"),
                              "bullet_points": row.get("product_bullet_point"), "brand": row.get("product_brand"),
                              "colors": row.get("product_color")}, exact, line)
        _pair(batch, exact, line, row.get("query"), lang, pid, "E")
    lookup = find_file(path, "query_esci_lookup_iphone_charger.csv")
    for line, row in read_csv(lookup):
        pid = clean(row.get("product_id"))
        if pid and pid not in batch.entities:
            batch.add_entity({"id": pid, "kind": "product", "lang": "en", "title": row.get("product_text")},
                             lookup, line)
        _pair(batch, lookup, line, row.get("query"), "en", pid, (row.get("esci_label") or "").strip())


def _pair(batch: ImportBatch, file: Path, line: int, query: object, lang: str, pid: str | None, label: str) -> None:
    text = clean(query)
    if not text:
        batch.report.reject(file, line, "query has empty text")
        return
    if label not in ESCI_GRADE:
        batch.report.reject(file, line, f"unknown esci_label {label!r}")
        return
    query_id = text_query_id(f"esci-{lang}", text)
    if batch.add_query({"id": query_id, "text": text, "lang": lang}, file, line, duplicate_ok=True) and pid:
        batch.add_engagement({"query_id": query_id, "target_id": pid, "kind": "esci", "grade": ESCI_GRADE[label]},
                             file, line)
