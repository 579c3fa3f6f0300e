"""SciFact importer: abstracts become entities of kind `doc`, claims queries, cited documents engagements."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from catalog.importers.base import ImportBatch, read_csv
from catalog.importers.paths import find_file

# The abstract column is a printed array of quoted sentences (no commas between items).
_STRING = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"", re.DOTALL)
_IDS = re.compile(r"\d+")


def parse_sentences(value: str) -> list[str]:
    """Sentences of a printed list/array of strings."""
    return [str(ast.literal_eval(m.group(0))) for m in _STRING.finditer(value or "")]


def import_scifact(batch: ImportBatch, path: Path) -> None:
    """`corpus.csv` (doc_id, title, abstract, structured) and `claims_train.csv` (id, claim, ..., cited_doc_ids).

    Test claims carry no labels and are not imported.
    """
    corpus = find_file(path, "corpus.csv")
    for line, row in read_csv(corpus):
        batch.add_entity({"id": row.get("doc_id"), "kind": "doc", "lang": "en", "title": row.get("title"),
                          "description": " ".join(parse_sentences(row.get("abstract") or ""))}, corpus, line)
    claims = find_file(path, "claims_train.csv")
    for line, row in read_csv(claims):
        # one row per evidence sentence: the same claim repeats
        if not batch.add_query({"id": row.get("id"), "text": row.get("claim"), "lang": "en"}, claims, line,
                               duplicate_ok=True):
            continue
        evidence = (row.get("evidence_doc_id") or "").strip()
        for doc_id in _IDS.findall(row.get("cited_doc_ids") or ""):
            key = (str(row["id"]).strip(), doc_id, "entity", "cites")
            if key in batch.engagements:
                continue
            batch.add_engagement({"query_id": row["id"], "target_id": doc_id, "kind": "cites",
                                  "grade": 2.0 if doc_id == evidence else 1.0}, claims, line)
