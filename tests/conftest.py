"""Shared fixtures: a fresh home folder per test, and where the unshipped data sets live."""

from __future__ import annotations

import os

# Spinning OpenMP workers (faiss, torch) starve each other and the test's own threads on 2 cores.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

from catalog import Home  # noqa: E402
from catalog.importers.paths import SHARED_DATA  # noqa: E402


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Home:
    """A Home in a temp folder, also set as OMNISEARCH_HOME so CLIs run in a subprocess agree."""
    monkeypatch.setenv("OMNISEARCH_HOME", str(tmp_path / "home"))
    return Home.resolve(tmp_path / "home").ensure()


def shared_data(name: str) -> Path:
    """A folder of ../shared/data, or skip the test when this checkout has none beside it."""
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"{path} not present")
    return path
