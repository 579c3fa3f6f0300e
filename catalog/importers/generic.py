"""The generic importer: a user's own entities, queries, engagements (JSONL/CSV) and legacy vectors (.npy/.parquet).

Layout of PATH (a folder; every file optional, `.gz` allowed for the tables):

    entities.jsonl | entities.csv        id, kind, lang, and any of the text fields (title, description, ...)
    queries.jsonl | queries.csv          id, text, lang, group_id (queries sharing a group are split together)
    engagements.jsonl | engagements.csv  query_id, entity_id | target_query_id, kind, grade, weight, split
    legacy/<space>.npy + legacy/<space>.ids      float32 (n, dim) rows, ids one per line, same order
    legacy/<space>.parquet                        columns `id` (string) and `vector` (list of floats)

PATH may also be a single table file named after its table (`entities*.jsonl`, `queries*.csv`, ...).
Unknown columns reject the row (a misspelt field would otherwise vanish silently).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from catalog.importers.base import ImportBatch, Report, clean, read_table
from catalog.schema import TEXT_FIELDS
from catalog.store import Catalog

TABLES = ("entities", "queries", "engagements")
COLUMNS: dict[str, set[str]] = {
    "entities": {"id", "kind", "lang", *TEXT_FIELDS},
    "queries": {"id", "text", "lang", "group_id"},
    "engagements": {"query_id", "entity_id", "target_query_id", "kind", "grade", "weight", "split"},
}


def _table_files(path: Path) -> list[tuple[str, Path]]:
    if path.is_file():
        for table in TABLES:
            if path.name.startswith(table):
                return [(table, path)]
        raise ValueError(f"{path}: name must start with one of {TABLES}")
    found = []
    for table in TABLES:
        for ext in (".jsonl", ".csv", ".jsonl.gz", ".csv.gz"):
            candidate = path / f"{table}{ext}"
            if candidate.exists():
                found.append((table, candidate))
    return found


def import_generic(batch: ImportBatch, path: Path) -> None:
    """Validate the table files under `path` into the batch (legacy vectors are written by `import_legacy`)."""
    files = _table_files(path)
    if not files and not (path.is_dir() and (path / "legacy").is_dir()):
        raise FileNotFoundError(f"{path}: no entities/queries/engagements .jsonl/.csv files and no legacy/ folder")
    for table, file in files:
        for line, row in read_table(file, batch.report):
            unknown = sorted(set(row) - COLUMNS[table])
            if unknown:
                batch.report.reject(file, line, f"unknown column(s) {unknown}")
                continue
            if table == "entities":
                batch.add_entity(row, file, line)
            elif table == "queries":
                batch.add_query(row, file, line)
            else:
                has_entity, has_query = row.get("entity_id") is not None, row.get("target_query_id") is not None
                if has_entity == has_query:
                    batch.report.reject(file, line, "give exactly one of entity_id and target_query_id")
                    continue
                target = {"target_id": row["entity_id"], "target_type": "entity"} if has_entity else {
                    "target_id": row["target_query_id"], "target_type": "query"}
                rest = {k: v for k, v in row.items() if k not in ("entity_id", "target_query_id")}
                batch.add_engagement({**rest, **target}, file, line)


def _read_vectors(file: Path) -> tuple[list[Any], list[Any]]:
    if file.suffix == ".npy":
        ids_file = file.with_suffix(".ids")
        if not ids_file.exists():
            raise FileNotFoundError(f"{file}: needs {ids_file.name} with one id per line, in row order")
        matrix = np.load(file, allow_pickle=False)
        if matrix.ndim != 2:
            raise ValueError(f"{file}: expected a 2-d array, got shape {matrix.shape}")
        ids = ids_file.read_text(encoding="utf-8").splitlines()
        if len(ids) != len(matrix):
            raise ValueError(f"{file}: {len(matrix)} vectors but {len(ids)} ids in {ids_file.name}")
        return list(ids), list(matrix)
    import pyarrow.parquet as pq

    table = pq.read_table(file)
    if not {"id", "vector"} <= set(table.column_names):
        raise ValueError(f"{file}: parquet needs columns `id` and `vector`, has {table.column_names}")
    return table.column("id").to_pylist(), table.column("vector").to_pylist()


def import_legacy(cat: Catalog, path: Path, report: Report, known_entities: set[str]) -> None:
    """Write every legacy/<space>.{npy,parquet} under `path`; bad rows are rejected one by one."""
    folder = path / "legacy"
    if not path.is_dir() or not folder.is_dir():
        return
    for file in sorted(folder.iterdir()):
        if file.suffix not in (".npy", ".parquet"):
            continue
        space = file.stem
        ids, rows = _read_vectors(file)
        dim = cat.legacy_spaces().get(space)
        if dim is None:
            dims = [len(r) for r in rows if r is not None]
            dim = max(set(dims), key=dims.count) if dims else 0  # the common length defines a new space
        keep_ids: list[str] = []
        keep: list[np.ndarray] = []
        seen: set[str] = set()
        for line, (raw_id, vec) in enumerate(zip(ids, rows, strict=True), start=1):
            entity_id = clean(raw_id)
            arr = np.asarray(vec if vec is not None else [], dtype=np.float64)
            if not entity_id:
                report.reject(file, line, "vector without id")
            elif entity_id in seen:
                report.reject(file, line, f"duplicate vector id {entity_id!r}")
            elif entity_id not in known_entities:
                report.reject(file, line, f"dangling reference: unknown entity {entity_id!r}")
            elif arr.shape != (dim,):
                report.reject(file, line, f"vector of dimension {arr.size}, space {space!r} has {dim}")
            elif not np.isfinite(arr).all():
                report.reject(file, line, "vector holds NaN or infinity")
            else:
                seen.add(entity_id)
                keep_ids.append(entity_id)
                keep.append(arr.astype(np.float32))
        if keep:
            cat.put_legacy_vectors(space, keep_ids, np.stack(keep), description=f"imported from {file.name}")
            report.written["legacy_vectors"] += len(keep)
