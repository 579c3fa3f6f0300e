"""Compatibility heads fit alone on a trained tower: only the heads move, new spaces get heads, CLI errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from encoders_fixtures import tiny_catalog, tiny_config

import encoders
from catalog import Catalog, Home
from encoders.cli import cli
from encoders.compat import fit_checkpoint, fit_heads
from encoders.data import TaskData
from encoders.errors import ConfigError
from encoders.train import Trainer
from engine.testing import loopback_config, model_generation, running_server

TEXTS = ["iphone charger", "¿qué es un gato doméstico?", "star at the center"]


@pytest.fixture
def trained(home: Home) -> Home:
    tiny_catalog(home)
    Trainer(home, tiny_config(), progress=False).run()
    return home


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_fitting_moves_only_the_heads_and_adds_a_head_for_a_new_space(trained: Home) -> None:
    ckpt = trained.checkpoints / "tiny"
    before = encoders.load(ckpt)
    record = json.loads((ckpt / "config.json").read_text())["training"]
    with Catalog.edit(trained.catalog_db) as cat:  # a legacy space that arrived after training
        ids = [r["id"] for r in cat.entities("product")]
        rng = np.random.default_rng(1)
        cat.put_legacy_vectors("late", ids, rng.normal(size=(len(ids), 20)).astype(np.float32), "arrived later")
    out = trained.checkpoints / "refit"
    ckpt_id, fits = fit_checkpoint(trained, ckpt, out, steps=60, batch_size=16, lr=1e-2)
    assert {f.space for f in fits} == {"toy", "late"}
    for f in fits:
        assert f.loss_last < f.loss_first, f  # the head learned its pairs
    after = encoders.load(out)
    assert after.checkpoint_id == ckpt_id != before.checkpoint_id
    assert after.spaces == {"model": 512, "legacy-toy": 12, "legacy-late": 20}
    assert after.legacy_descriptions["late"] == "arrived later"
    old, new = _weights(before), _weights(after)
    changed = {k for k in old if not torch.equal(old[k], new[k])}
    assert changed == {"query.heads.toy.weight", "query.heads.toy.bias"}
    assert {k for k in new if k not in old} == {"query.heads.late.weight", "query.heads.late.bias"}
    assert np.array_equal(after.embed_queries(TEXTS), before.embed_queries(TEXTS))  # the model space is untouched
    late = after.embed_queries(TEXTS, space="legacy-late")
    assert late.shape == (3, 20) and np.allclose(np.linalg.norm(late, axis=1), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match="5-d vectors in the catalog but the model's head gives 12"):
        fit_heads(after, [TaskData("query->legacy-toy", "legacy", "toy", [("q", "x")])], {"q": "hi"},
                  {"toy": torch.ones(1, 5)}, {"toy": ["x"]}, steps=1)
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["training"] == record  # the training record travels with the refit checkpoint
    assert [f["space"] for f in cfg["compat_fit"]] == ["late", "toy"]

    # the new space's index answers text queries once a generation is built with the refit checkpoint
    gen = model_generation(trained, str(out), shards=1)
    assert "legacy-late" in gen.indices
    with Catalog(trained.catalog_db, read_only=True) as cat:
        late_ids, late_x = cat.legacy_vectors("late")
    with running_server(loopback_config(trained)) as (_, client):
        res = client.search(index="legacy-late", k=3, text=TEXTS[0])
        assert res.checkpoint_id == ckpt_id
        lq = after.embed_queries([TEXTS[0]], space="legacy-late")[0]
        assert [h.id for h in res.hits] == [late_ids[i] for i in np.argsort(-(late_x @ lq))[:3]]


def test_trainer_compat_steps_fits_the_heads_after_training(home: Home) -> None:
    tiny_catalog(home)
    result = Trainer(home, tiny_config(compat_steps=20), progress=False).run()
    fit = json.loads((result.out / "config.json").read_text())["training"]["compat_fit"]
    assert [(f["space"], f["steps"]) for f in fit] == [("toy", 20)]


def test_fit_compat_cli_errors(trained: Home) -> None:
    runner = CliRunner()
    res = runner.invoke(cli, ["fit-compat", "--home", str(trained.root), "--space", "nope", "--quiet"])
    assert res.exit_code == 1 and "no legacy vectors in the catalog for ['nope']" in res.output
    res = runner.invoke(cli, ["fit-compat", "--home", str(trained.root), "--steps", "0"])
    assert res.exit_code == 2 and "--steps" in res.output
    res = runner.invoke(cli, ["fit-compat", "--home", str(trained.root), "--steps", "5", "--quiet"])
    assert res.exit_code == 0, res.output
    assert "legacy-toy: 5 steps" in res.output
