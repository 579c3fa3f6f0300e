"""XQuAD importer: paragraphs become pins per language, questions queries, translations query->query pairs."""

from __future__ import annotations

import json
import re
from pathlib import Path

from catalog.importers.base import ImportBatch, has_bad_encoding, open_text

PIVOT = "en"  # translations are linked through English: every language <-> en
_FILE = re.compile(r"xquad\.([a-z]{2})\.json(\.gz)?$")


def import_xquad(batch: ImportBatch, path: Path) -> None:
    """Read every `xquad.<lang>.json[.gz]` in `path` (a folder) into the batch."""
    files = sorted(p for p in path.iterdir() if _FILE.search(p.name)) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"{path}: no xquad.<lang>.json files")
    groups: dict[str, set[str]] = {}
    for file in files:
        m = _FILE.search(file.name)
        if not m:
            raise ValueError(f"{file}: expected a name like xquad.es.json")
        lang = m.group(1)
        with open_text(file) as fh:
            text = fh.read()
        if has_bad_encoding([text]):
            batch.report.reject(file, 1, "not valid UTF-8")
            continue
        data = json.loads(text)
        for article in data["data"]:
            title = article["title"]
            for p_idx, paragraph in enumerate(article["paragraphs"]):
                pin_id = f"{title}-{p_idx}-{lang}"
                line = 1  # SQuAD JSON is one document; report paragraphs by position instead of line
                ok = batch.add_entity(
                    {"id": pin_id, "kind": "pin", "lang": lang, "title": title.replace("_", " "),
                     "description": paragraph["context"]},
                    f"{file.name}[{title}/{p_idx}]", line,
                )
                for qa in paragraph["qas"]:
                    query_id = f"{qa['id']}-{lang}"
                    where = f"{file.name}[{qa['id']}]"
                    if batch.add_query({"id": query_id, "text": qa["question"], "lang": lang,
                                        "group_id": qa["id"]}, where, line) and ok:
                        batch.add_engagement({"query_id": query_id, "target_id": pin_id, "kind": "engaged",
                                              "grade": 1.0}, where, line)
                        groups.setdefault(qa["id"], set()).add(lang)
    for qid, langs in sorted(groups.items()):
        if PIVOT not in langs:
            continue
        for lang in sorted(langs - {PIVOT}):
            for a, b in ((lang, PIVOT), (PIVOT, lang)):
                batch.add_engagement({"query_id": f"{qid}-{a}", "target_id": f"{qid}-{b}",
                                      "target_type": "query", "kind": "translation"}, f"xquad[{qid}]", 1)

