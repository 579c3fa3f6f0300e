"""Where results go and how they are written: JSON under `benchmarks/results/`, atomically."""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"


def now_utc() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.now(UTC).replace(microsecond=0).isoformat()


def slug(name: str) -> str:
    """A file-name-safe form of a data set or target name ("catalog:pins" -> "catalog-pins")."""
    return "".join(c if c.isalnum() or c in "-_." else "-" for c in name)


def command_line() -> str:
    """The command that is running, as a user would type it (console-script name, not the full path)."""
    argv = list(sys.argv)
    if argv:
        argv[0] = Path(argv[0]).name
    return " ".join(argv)


def write_json(path: Path, data: dict[str, Any]) -> Path:
    """Write `data` as indented JSON to a temp file and move it into place."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=False, default=str) + "\n")
    os.replace(tmp, path)
    return path
