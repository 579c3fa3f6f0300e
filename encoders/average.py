"""Exponential moving average of the trained weights (Polyak averaging), for dev checks and the saved model.

Each step moves the average a fraction (1 - d) toward the weights the optimizer just wrote, so the average is
a smoothed point of the last ~1 / (1 - d) steps of the trajectory. With small batches over a small task set the
raw weights jitter from step to step; their average usually sits closer to the middle of the basin and ranks
better on held-out queries (Polyak and Juditsky 1992; the "EMA of weights" of most current fine-tuning
recipes). The decay ramps up as min(d, (1 + t) / (10 + t)), as TensorFlow's ExponentialMovingAverage does with
`num_updates`, so the first steps are not tied to the initial weights.

Only trainable parameters are averaged; frozen ones never move.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn


class WeightAverage:
    """The moving average of a model's trainable parameters."""

    def __init__(self, model: nn.Module, decay: float) -> None:
        if not 0.0 < decay < 1.0:
            raise ValueError(f"decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.names = [n for n, p in model.named_parameters() if p.requires_grad]
        params = dict(model.named_parameters())
        self.weights = {n: params[n].detach().clone() for n in self.names}

    def _params(self, model: nn.Module) -> list[torch.Tensor]:
        params = dict(model.named_parameters())
        missing = [n for n in self.names if n not in params]
        if missing:
            raise ValueError(f"the model lacks averaged parameters {missing[:5]}")
        return [params[n] for n in self.names]

    def current_decay(self) -> float:
        """The decay the next update uses (ramped up over the first updates)."""
        return min(self.decay, (1.0 + self.updates) / (10.0 + self.updates))

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """avg <- d avg + (1 - d) theta, for every averaged parameter."""
        d = self.current_decay()
        torch._foreach_lerp_(list(self.weights.values()), [p.detach() for p in self._params(model)], 1.0 - d)
        self.updates += 1

    @torch.no_grad()
    def copy_to(self, model: nn.Module) -> None:
        """Put the averaged weights into the model, in place."""
        for p, n in zip(self._params(model), self.names, strict=True):
            p.copy_(self.weights[n])

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[None]:
        """The averaged weights in the model for the block's duration, the trained ones back afterwards."""
        params = self._params(model)
        with torch.no_grad():
            kept = [p.detach().clone() for p in params]
        self.copy_to(model)
        try:
            yield
        finally:
            with torch.no_grad():
                for p, w in zip(params, kept, strict=True):
                    p.copy_(w)

    def state_dict(self) -> dict[str, Any]:
        """What a resumed run needs to continue the same average."""
        return {"decay": self.decay, "updates": self.updates, "weights": self.weights}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        weights = state["weights"]
        if not isinstance(weights, dict) or sorted(weights) != sorted(self.names):
            raise ValueError("the saved average holds other parameters than this model trains")
        self.decay, self.updates = float(state["decay"]), int(state["updates"])
        self.weights = {n: weights[n] for n in self.names}
