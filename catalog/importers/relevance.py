"""Home Depot and Crowdflower importers: products and graded query -> product pairs from Kaggle CSVs."""

from __future__ import annotations

import hashlib
from pathlib import Path

from catalog.importers.base import ImportBatch, clean, read_csv, to_float
from catalog.importers.paths import find_file


def text_query_id(prefix: str, text: str) -> str:
    """A stable id for a query that its source identifies only by text."""
    norm = text.strip()  # exact text: the sources count "Angle" and "angle ", "a  b" and "a b" as distinct queries
    return f"{prefix}-{hashlib.sha1(norm.encode('utf-8')).hexdigest()[:12]}"


def _pairs(batch: ImportBatch, path: Path, prefix: str, product_col: str, query_col: str, grade_col: str) -> None:
    for line, row in read_csv(path):
        missing = [c for c in (product_col, query_col, grade_col) if c not in row or row[c] is None]
        if missing:
            batch.report.reject(path, line, f"missing column(s) {missing}")
            continue
        text = clean(row[query_col])
        if not text:
            batch.report.reject(path, line, "query has empty text")
            continue
        try:
            grade = to_float(row[grade_col])
        except ValueError as exc:
            batch.report.reject(path, line, f"bad grade: {exc}")
            continue
        query_id = text_query_id(prefix, text)
        if batch.add_query({"id": query_id, "text": text, "lang": "en"}, path, line, duplicate_ok=True):
            batch.add_engagement({"query_id": query_id, "target_id": row[product_col], "kind": "relevance",
                                  "grade": grade}, path, line, merge=True)


def import_homedepot(batch: ImportBatch, path: Path) -> None:
    """`products.csv` (product_uid, product_title) and `pairs.csv` (id, product_uid, search_term, relevance)."""
    products = find_file(path, "products.csv")
    for line, row in read_csv(products):
        batch.add_entity({"id": row.get("product_uid"), "kind": "product", "lang": "en",
                          "title": row.get("product_title")}, products, line)
    _pairs(batch, find_file(path, "pairs.csv"), "hd", "product_uid", "search_term", "relevance")


def import_crowdflower(batch: ImportBatch, path: Path) -> None:
    """`products.csv` (product_id, title, description) and `pairs.csv` (query, product_id, median_relevance)."""
    products = find_file(path, "products.csv")
    for line, row in read_csv(products):
        batch.add_entity({"id": row.get("product_id"), "kind": "product", "lang": "en",
                          "title": row.get("product_title"), "description": row.get("product_description")},
                         products, line)
    _pairs(batch, find_file(path, "pairs.csv"), "cf", "product_id", "query", "median_relevance")
