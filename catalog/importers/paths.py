"""Where shipped data lives: `data/` in the repository, and the optional `../shared/data` beside it."""

from __future__ import annotations

from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[2]
SHIPPED_DATA = REPO_ROOT / "data"  # redistributable sets, compressed, with licences
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"  # research-only sets, read in place when present


def first_existing(*candidates: Path) -> Path | None:
    """The first candidate that exists, else None."""
    for path in candidates:
        if path.exists():
            return path
    return None


def find_file(folder: Path, name: str) -> Path:
    """`name` or `name.gz` inside folder; raises FileNotFoundError naming both."""
    for candidate in (folder / name, folder / f"{name}.gz"):
        if candidate.exists():
            return candidate
    raise FileNotFoundError(f"{folder}: neither {name} nor {name}.gz")
