"""The ANN harness on small seeded clustered data: results, recall semantics, ground-truth cache, grids, CLI."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from benchmarks.ann import ann_benchmark
from benchmarks.cli import cli
from benchmarks.datasets import Dataset, load_dataset, synthetic
from benchmarks.errors import GridError
from benchmarks.grids import load_grid, parse_grid
from benchmarks.groundtruth import ground_truth, recall
from benchmarks.plots import pareto
from catalog import Home

TINY_GRID = """
[settings]
runs = 1
single_queries = 40
modes = ["batch-1t", "single-1t", "single-2t"]

[backends.flat]

[backends.hnswlib]
build = { M = [8], ef_construction = [40] }
search = { ef = [4, 64] }
"""


@pytest.fixture(scope="module")
def small() -> Dataset:
    return synthetic(n=3000, dim=16, nq=120, seed=3)


def test_ann_writes_json_and_png_with_sane_recall(small: Dataset, tmp_path: Path) -> None:
    grid = parse_grid(TINY_GRID, "tiny")
    result, json_path, png_path = ann_benchmark(small, grid, tmp_path / "cache", tmp_path / "out",
                                                ["flat", "hnswlib"])
    data = json.loads(json_path.read_text())
    assert png_path.stat().st_size > 10_000 and png_path.read_bytes()[:4] == b"\x89PNG"
    points = data["points"]
    assert {(p["backend"], p["impl"]) for p in points} == {
        ("flat", "project"), ("flat", "raw"), ("hnswlib", "project"), ("hnswlib", "raw")}
    assert all(0.0 <= p["recall"] <= 1.0 for p in points)
    assert all(p["recall"] == 1.0 for p in points if p["backend"] == "flat")
    hnsw = {p["search"]["ef"]: p["recall"] for p in points if p["backend"] == "hnswlib" and p["impl"] == "project"}
    assert hnsw[64] >= hnsw[4]  # a wider beam never finds fewer of the true neighbours
    for p in points:
        assert set(p["modes"]) == {"batch-1t", "single-1t", "single-2t"}
        assert all(m["qps"] > 0 for m in p["modes"].values())
        assert p["modes"]["single-1t"]["p50_us"] > 0
        assert p["build_s"] >= 0 and (p["backend"] == "flat" or p["build_s"] > 0)
    assert all(p["index_bytes"] > 0 for p in points if p["impl"] == "project")
    ratios = {(o["backend"], o["mode"]) for o in data["overhead"]}
    assert ("hnswlib", "batch-1t") in ratios and all(o["ratio"] > 0 for o in data["overhead"])
    assert data["dataset"]["n"] == 3000 and data["k"] == 10 and data["machine"]["logical_cores"] >= 1
    import faiss

    from benchmarks.raw import DEFAULT_OMP_THREADS

    assert faiss.omp_get_max_threads() == DEFAULT_OMP_THREADS  # 1-thread timing settings do not leak into builds


def test_ground_truth_is_cached_and_reused(small: Dataset, tmp_path: Path) -> None:
    first = ground_truth(small, tmp_path)
    assert not first.cached and first.path is not None and first.path.exists()
    stamp = first.path.stat().st_mtime_ns
    second = ground_truth(small, tmp_path)
    assert second.cached and second.path == first.path and second.path.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(first.ids, second.ids)
    other = synthetic(n=3000, dim=16, nq=120, seed=4)  # other vectors never reuse that file
    assert ground_truth(other, tmp_path).path != first.path


def test_recall_counts_ties_within_epsilon_and_misses(tmp_path: Path) -> None:
    xb = np.eye(4, dtype=np.float32)[[0, 1, 2, 3, 0]]  # rows 0 and 4 are the same vector
    xq = np.array([[1.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    ds = Dataset("tie", xb, xq, "ip", "test")
    gt = ground_truth(ds, None)
    assert recall(ds, gt, np.array([[4, 0]]), k=2) == 1.0  # the duplicate counts as the true neighbour
    assert recall(ds, gt, np.array([[1, 2]]), k=2) == 0.0
    assert recall(ds, gt, np.array([[0, -1]]), k=2) == 0.5  # a missing result never counts


def test_pareto_keeps_only_undominated_points() -> None:
    pts = [(0.5, 100.0), (0.6, 50.0), (0.55, 40.0), (0.9, 10.0), (0.9, 5.0)]
    assert pareto(pts) == [(0.5, 100.0), (0.6, 50.0), (0.9, 10.0)]


def test_grids_bundled_and_bad_parameters_rejected() -> None:
    quick = load_grid("quick")
    assert {"hnswlib", "faiss-hnsw"} <= set(quick.backends)
    assert load_grid("default").settings.runs >= 3
    with pytest.raises(GridError, match="not a search parameter"):
        parse_grid("[backends.hnswlib]\nsearch = { nprobe = [1] }\n", "bad")
    with pytest.raises(GridError, match="unknown backend"):
        parse_grid("[backends.nope]\n", "bad")
    with pytest.raises(GridError, match="no grid file"):
        load_grid("no-such-grid")


def test_unknown_dataset_and_cli_run(tmp_path: Path, home: Home) -> None:
    with pytest.raises(Exception, match="unknown data set"):
        load_dataset("mnist", home)
    grid = tmp_path / "g.toml"
    grid.write_text(TINY_GRID.replace('["batch-1t", "single-1t", "single-2t"]', '["batch-1t"]'))
    out = tmp_path / "out"
    res = CliRunner().invoke(cli, ["ann", "--home", str(home.root), "--dataset", "synthetic:2000x8",
                                   "--backends", "hnswlib", "--grid", str(grid), "--out", str(out)])
    assert res.exit_code == 0, res.output
    data = json.loads((out / "ann-synthetic-2000x8.json").read_text())
    assert {p["backend"] for p in data["points"]} == {"hnswlib"}
    assert (out / "ann-synthetic-2000x8.png").exists()
    bad = CliRunner().invoke(cli, ["ann", "--home", str(home.root), "--dataset", "nope"])
    assert bad.exit_code == 1 and "unknown data set" in bad.output


@pytest.mark.slow
def test_catalog_dataset_from_active_generation(home: Home, tmp_path: Path) -> None:
    from engine.testing import model_generation, tiny_checkpoint, write_tiny_catalog

    write_tiny_catalog(home)
    rec = model_generation(home, tiny_checkpoint(home))
    ds = load_dataset("catalog:pins", home)
    pins = rec.indices["pins"]
    assert ds.xb.shape == (pins.count, pins.dim) and ds.metric == pins.metric
    assert len(ds.xq) == 4  # the tiny catalog's queries, embedded by the generation's model
    np.testing.assert_allclose(np.linalg.norm(ds.xq, axis=1), 1.0, atol=1e-4)
    grid = parse_grid("[settings]\nruns = 1\nsingle_queries = 4\nmodes = ['batch-1t']\n[backends.flat]\n", "t")
    result, _, _ = ann_benchmark(ds, grid, tmp_path / "cache", tmp_path / "out")
    assert [p["recall"] for p in result["points"]] == [1.0, 1.0]
    with pytest.raises(Exception, match="has no index"):
        load_dataset("catalog:nope", home)


@pytest.mark.slow
def test_wordnet_embedding_is_cached(home: Home) -> None:
    ds = load_dataset("wordnet:300", home)
    assert ds.xb.shape == (270, 384) and ds.xq.shape == (30, 384)  # a tenth held out as queries
    np.testing.assert_allclose(np.linalg.norm(ds.xb, axis=1), 1.0, atol=1e-4)
    (cached,) = (home.cache / "benchmarks").glob("wordnet-minilm-300.npy")
    stamp = cached.stat().st_mtime_ns
    again = load_dataset("wordnet:300", home)
    assert cached.stat().st_mtime_ns == stamp
    np.testing.assert_array_equal(again.xq, ds.xq)
