"""The moving average of trained weights: hand-computed values, swap in and out, resume, and the saved model."""

from __future__ import annotations

import pytest
import torch
from encoders_fixtures import tiny_catalog, tiny_config
from torch import nn

import encoders
from catalog import Home
from encoders.average import WeightAverage
from encoders.train import Trainer


def test_average_follows_the_ramped_decay_and_skips_frozen_weights() -> None:
    model = nn.Linear(2, 1, bias=True)
    model.bias.requires_grad_(False)
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[1.0, 2.0]]))
    avg = WeightAverage(model, 0.5)
    assert avg.names == ["weight"]
    assert avg.current_decay() == pytest.approx(0.1)  # (1 + 0) / (10 + 0): the start is hardly held on to
    with torch.no_grad():
        model.weight.copy_(torch.tensor([[3.0, 4.0]]))
    avg.update(model)  # 0.1 * [1, 2] + 0.9 * [3, 4]
    assert torch.allclose(avg.weights["weight"], torch.tensor([[2.8, 3.8]]))
    avg.updates = 100  # ramp over: the configured decay
    assert avg.current_decay() == 0.5
    avg.update(model)  # 0.5 * [2.8, 3.8] + 0.5 * [3, 4]
    assert torch.allclose(avg.weights["weight"], torch.tensor([[2.9, 3.9]]))
    with avg.applied(model):
        assert torch.allclose(model.weight, torch.tensor([[2.9, 3.9]]))
    assert torch.equal(model.weight, torch.tensor([[3.0, 4.0]]))  # the trained weights come back
    with pytest.raises(ValueError, match="decay"):
        WeightAverage(model, 1.0)
    other = WeightAverage(nn.Linear(3, 1), 0.9)
    with pytest.raises(ValueError, match="other parameters"):
        other.load_state_dict({"decay": 0.5, "updates": 1, "weights": {}})


class RecordingTrainer(Trainer):
    """Keeps the raw projection weights at the start and after every step, to recompute the average by hand."""

    raw: list[torch.Tensor]

    def prepare(self) -> None:
        super().prepare()
        self.raw = [self.model.query.proj.weight.detach().clone()]

    def train_step(self) -> dict[str, float]:
        logs = super().train_step()
        self.raw.append(self.model.query.proj.weight.detach().clone())
        return logs


def test_the_saved_model_carries_the_average_and_dev_checks_measure_it(home: Home) -> None:
    tiny_catalog(home)
    cfg = tiny_config(steps=4, ema_decay=0.6, eval_every=2, eval_max_queries=0)
    trainer = RecordingTrainer(home, cfg, out=home.checkpoints / "ema", progress=False)
    result = trainer.run()
    hand = trainer.raw[0]
    for t, raw in enumerate(trainer.raw[1:]):
        d = min(0.6, (1 + t) / (10 + t))
        hand = d * hand + (1 - d) * raw
    assert len(trainer.raw) == 5
    assert not torch.allclose(hand, trainer.raw[-1], atol=1e-5)  # the average is not the last step's weights
    saved = encoders.load(result.out)
    assert torch.allclose(saved.query.proj.weight, hand, atol=1e-6)
    # every step updated the average, the ones with a dev check too
    assert trainer.average is not None and trainer.average.updates == 4


def test_resumed_run_continues_the_same_average(home: Home) -> None:
    tiny_catalog(home)
    cfg = tiny_config(steps=5, ema_decay=0.6)
    straight = Trainer(home, cfg, out=home.checkpoints / "straight", progress=False).run()
    out = home.checkpoints / "interrupted"
    with pytest.raises(KeyboardInterrupt):
        Trainer(home, cfg, out=out, progress=False).run(stop_after=2)
    resumed = Trainer(home, cfg, out=out, progress=False)
    result = resumed.run()
    assert resumed.resumed and resumed.average is not None and resumed.average.updates == 5
    a, b = encoders.load(straight.out), encoders.load(result.out)
    # same tolerance as the plain resume test: the frozen-block cache is rebuilt in other batches after a resume
    assert torch.allclose(a.query.proj.weight, b.query.proj.weight, atol=1e-3)
