"""Metrics by hand, BEIR files, and the CLI end to end (stand-in legacy space, train, evaluate, embed)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from encoders_fixtures import tiny_catalog

from catalog import Catalog, Home
from encoders.cli import cli
from encoders.evaluate import beir_task
from encoders.metrics import mrr_at, ndcg_at, query_metrics, recall_at
from encoders.paired import ahead_in_every_group, cell, paired_difference


def test_metrics_by_hand() -> None:
    ranked = ["a", "x", "b", "y"]
    gains = {"a": 3.0, "b": 2.0, "c": 1.0}
    dcg = 3.0 / math.log2(2) + 2.0 / math.log2(4)
    idcg = 3.0 / math.log2(2) + 2.0 / math.log2(3) + 1.0 / math.log2(4)
    assert ndcg_at(ranked, gains) == pytest.approx(dcg / idcg)
    assert recall_at(ranked, {"a", "b", "c"}, 2) == pytest.approx(1 / 3)
    assert recall_at(ranked, {"a", "b", "c"}, 10) == pytest.approx(2 / 3)
    assert mrr_at(ranked, {"b"}) == pytest.approx(1 / 3)
    assert mrr_at(ranked, {"z"}) == 0.0
    assert query_metrics(ranked, gains, {"a"})["Recall@100"] == 1.0


def test_paired_difference_by_hand() -> None:
    p = paired_difference([1, 0, 1, 1], [0, 0, 1, 0])
    assert p["diff"] == 0.5 and p["wins"] == 2 and p["losses"] == 0 and p["queries"] == 4
    assert 0.0 <= p["lo"] <= 0.5 <= p["hi"] <= 1.0  # no resample can go below 0 with no loss
    same = paired_difference([0.3, 0.7], [0.3, 0.7])
    assert same["diff"] == same["lo"] == same["hi"] == 0.0
    wide, narrow = paired_difference([1, 0] * 10, [0, 1] * 10), paired_difference([1, 0] * 500, [0, 1] * 500)
    assert wide["lo"] < narrow["lo"] < 0.0 < narrow["hi"] < wide["hi"]  # more queries, a tighter interval
    assert cell(p).startswith("+0.500 [") and cell(p).endswith("] 2/0")
    with pytest.raises(ValueError, match="one length"):
        paired_difference([1.0], [1.0, 0.0])
    with pytest.raises(ValueError, match="level"):
        paired_difference([1.0], [0.0], level=1.0)


def test_ahead_in_every_group_by_hand() -> None:
    groups = {
        "x": {"m1": ([1, 1, 1, 1], [0, 0, 0, 0]), "m2": ([1, 1, 1, 1], [0, 0, 0, 0])},
        "y": {"m1": ([1, 0], [0, 1]), "m2": ([1, 1], [0, 0])},  # m1 tied in y: not ahead
    }
    out = ahead_in_every_group(groups)
    assert out["m1"]["observed"] is False and out["m1"]["behind"] == ["y"]
    # y's m1 is ahead on a resample of its two queries only when both draws are the first: 1/4
    assert out["m1"]["probability"] == pytest.approx(0.25, abs=0.04)
    assert out["m2"] == {"observed": True, "behind": [], "probability": 1.0}
    assert out["all"]["behind"] == ["y"] and out["all"]["probability"] == out["m1"]["probability"]
    with pytest.raises(ValueError, match="queries"):
        ahead_in_every_group({"z": {"m1": ([1, 0], [0, 0]), "m2": ([1], [0])}})


def test_beir_files(tmp_path: Path) -> None:
    (tmp_path / "queries.jsonl").write_text('{"_id": "1", "text": "red shoe"}\n{"_id": "2", "text": "hat"}\n')
    (tmp_path / "qrels.tsv").write_text("query-id\tcorpus-id\tscore\n1\tp1\t2\n1\tp2\t0\n2\tp3\t0\n")
    task = beir_task(tmp_path / "queries.jsonl", tmp_path / "qrels.tsv", "product")
    assert task.qids == ["1"] and task.relevant == [{"p1"}] and task.gains == [{"p1": 2.0, "p2": 0.0}]


@pytest.mark.slow
def test_cli_standin_train_evaluate_embed(home: Home, tmp_path: Path) -> None:
    tiny_catalog(home, legacy=False)
    runner = CliRunner()
    res = runner.invoke(cli, ["legacy-standin", "--kind", "product", "--home", str(home.root)])
    assert res.exit_code == 0, res.output
    with Catalog(home.catalog_db, read_only=True) as cat:
        assert cat.legacy_spaces() == {"standin-product": 384}
        desc = cat.db.execute("select description from legacy_spaces").fetchone()[0]
        assert "STAND-IN" in desc
    config = tmp_path / "tiny.toml"
    config.write_text(
        'preset = "quick"\n[model.query]\ntrain_layers = 0\n'
        "[model.entity]\nhash_buckets = 4096\nhash_dim = 32\nhidden = [64]\n"
        '[train]\nsteps = 3\nbatch_size = 24\nwarmup_steps = 1\nname = "cli"\n'
    )
    res = runner.invoke(cli, ["train", "--config", str(config), "--quiet", "--home", str(home.root)])
    assert res.exit_code == 0, res.output
    ckpt = home.checkpoints / "cli"
    assert (ckpt / "config.json").exists() and (ckpt / "model.safetensors").exists()
    training = json.loads((ckpt / "config.json").read_text())["training"]
    assert training["steps"] == 3 and training["pairs_per_second"] > 0
    out = tmp_path / "quality.json"
    res = runner.invoke(cli, ["evaluate", "--json", str(out), "--baselines", "bm25,bm25-stemmed", "--quiet",
                              "--home", str(home.root)])
    assert res.exit_code == 0, res.output
    results = json.loads(out.read_text())
    assert {"model", "bm25", "bm25-stemmed", "legacy-standin-product"} <= set(results)
    for system in ("model", "bm25"):
        assert set(results[system]) >= {"nDCG@10", "Recall@10", "Recall@100", "MRR@10", "tasks", "languages"}
        assert 0.0 <= results[system]["Recall@100"] <= 1.0
    assert "| model |" in res.output
    # the model against each baseline, query by query: the mean difference is the difference of the means
    for task, entry in results["model"]["paired"]["bm25"].items():
        model_task, bm25_task = results["model"]["tasks"][task], results["bm25"]["tasks"][task]
        p = entry["nDCG@10"]
        assert p["diff"] == pytest.approx(model_task["nDCG@10"] - bm25_task["nDCG@10"])
        assert p["lo"] <= p["diff"] <= p["hi"] and p["wins"] + p["losses"] <= p["queries"] == model_task["queries"]
        assert "_rows" not in model_task and "_rows" not in bm25_task  # per-query rows are not written out
    assert set(results["model"]["paired"]) == {"bm25", "bm25-stemmed"}
    assert "model minus bm25-stemmed" in res.output
    vec_file = tmp_path / "pins.npy"
    res = runner.invoke(cli, ["embed", "--what", "entities", "--kind", "pin", "--out", str(vec_file),
                              "--home", str(home.root)])
    assert res.exit_code == 0, res.output
    vecs = np.load(vec_file)
    ids = vec_file.with_suffix(".ids.txt").read_text().split()
    assert vecs.shape == (4, 256 + 256) and len(ids) == 4  # dense + lexical
    res = runner.invoke(cli, ["evaluate", "--checkpoint", str(tmp_path), "--home", str(home.root)])
    assert res.exit_code == 1 and "Error" in res.output
