"""`benchmarks quality` runs the encoders' evaluation over a real (shipped) catalog and writes the table."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from benchmarks.cli import cli
from benchmarks.plots import paired_plot
from catalog import Catalog, Home
from catalog.importers.runner import run_import
from catalog.split import split_by_query
from encoders.evaluate import SAME, TO_EN


def test_quality_table_from_the_catalog(home: Home, tmp_path: Path) -> None:
    run_import(home, "esci")
    with Catalog.edit(home.catalog_db) as cat:
        split_by_query(cat, dev=0.3, seed=0)
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["quality", "--home", str(home.root), "--baselines", "bm25", "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "quality.json").read_text())
    bm25 = data["results"]["bm25"]
    assert 0.0 <= bm25["Recall@10"] <= 1.0 and bm25["tasks"]
    table = (out / "quality.md").read_text()
    assert "| bm25 |" in table and table.splitlines()[0].startswith("Quality")
    assert not (out / "quality.png").exists()  # no model: nothing compared per language


def test_paired_plot_draws_one_panel_per_baseline_with_languages(tmp_path: Path) -> None:
    diff = {"diff": 0.01, "lo": -0.02, "hi": 0.05, "wins": 3, "losses": 2, "queries": 95}
    langs = {"de": {SAME: diff, TO_EN: diff}, "th": {SAME: diff}}
    data = {"date": "2026-12-05", "checkpoint": "ckpt", "results": {"model": {"paired": {
        "backbone": {"query->pin/xquad": {"nDCG@10": diff, "languages": langs}},
        "bm25": {"query->product/homedepot": {"nDCG@10": diff}},
    }}}}
    png = paired_plot(data, tmp_path / "q.png")
    assert png == tmp_path / "q.png" and png.read_bytes()[:4] == b"\x89PNG"
    assert paired_plot({"results": {"model": {}}}, tmp_path / "none.png") is None
    assert not (tmp_path / "none.png").exists()


def test_quality_without_catalog_is_a_clear_error(home: Home, tmp_path: Path) -> None:
    res = CliRunner().invoke(cli, ["quality", "--home", str(home.root), "--out", str(tmp_path)])
    assert res.exit_code == 1 and "no catalog" in res.output
