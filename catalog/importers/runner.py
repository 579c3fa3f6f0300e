"""Runs one importer in one transaction: validate everything, then write or (strict) write nothing."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

from catalog.errors import ImportRejected
from catalog.home import Home
from catalog.importers.base import ImportBatch, Report
from catalog.importers.esci import import_esci
from catalog.importers.generic import import_generic, import_legacy
from catalog.importers.paths import SHARED_DATA, SHIPPED_DATA, first_existing
from catalog.importers.relevance import import_crowdflower, import_homedepot
from catalog.importers.scifact import import_scifact
from catalog.importers.xquad import import_xquad
from catalog.store import Catalog

log = logging.getLogger(__name__)

Importer = Callable[[ImportBatch, Path], None]

# name -> (importer, default locations in order; empty when the user must give PATH)
IMPORTERS: dict[str, tuple[Importer, tuple[Path, ...]]] = {
    "xquad": (import_xquad, (SHIPPED_DATA / "xquad", SHARED_DATA / "xquad")),
    "scifact": (import_scifact, (SHIPPED_DATA / "scifact", SHARED_DATA / "scifact")),
    "esci": (import_esci, (SHIPPED_DATA / "esci_fragments", SHARED_DATA / "esci_fragments")),
    "homedepot": (import_homedepot, ()),
    "crowdflower": (import_crowdflower, ()),
    "jsonl": (import_generic, ()),
}


def default_path(name: str) -> Path | None:
    """Where `catalog import NAME` reads when no PATH is given (None: PATH is required)."""
    return first_existing(*IMPORTERS[name][1])


def run_import(home: Home, name: str, path: Path | None = None, strict: bool = False,
               source: str | None = None) -> Report:
    """Import one source into `home.catalog_db`.

    All rows are validated first; in strict mode any rejection raises ImportRejected and the catalog is left
    exactly as it was (the write happens on a copy that is renamed into place only on success).
    """
    if name not in IMPORTERS:
        raise ValueError(f"unknown importer {name!r}; choose from {sorted(IMPORTERS)}")
    importer, _ = IMPORTERS[name]
    if path is None:
        path = default_path(name)
        if path is None:
            raise FileNotFoundError(f"`catalog import {name}` needs PATH (the folder holding the data set)")
    if not path.exists():
        raise FileNotFoundError(f"{path} does not exist")
    source_name = source or (path.name if name == "jsonl" else name)
    report = Report(source=source_name)
    home.ensure()
    with Catalog.edit(home.catalog_db) as cat:
        batch = ImportBatch(source_name, report)
        importer(batch, path)
        batch.write(cat)
        if name == "jsonl":
            known = set(cat.entity_ids())
            import_legacy(cat, path, report, known)
        if strict and report.rejected:
            raise ImportRejected(
                f"{len(report.rejected)} rows rejected, nothing imported (strict); first: {report.rejected[0]}",
                list(report.rejected),
            )
    log.info("%s", report.summary())
    return report
