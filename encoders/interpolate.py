"""Weight-space interpolation between a run's starting weights and its trained weights (WiSE-FT).

Fine-tuning a pretrained model on a small task set fits that set and forgets some of what the pretrained model
knew about everything else (here: the multilingual alignment of e5, BENCHMARKS.md "What the figures say").
Wortsman et al., "Robust fine-tuning of zero-shot models" (CVPR 2022), show that the straight line between the
starting and the fine-tuned weights, theta(a) = theta_0 + a (theta_1 - theta_0), keeps most of the gain of the
fine-tuned end while recovering much of what the start did better, often beating both ends. Our starting point
ranks exactly like the untuned backbone (model.py, `_init_from_backbone` and `order_by_variance`), so a = 0 is
the pretrained model and a = 1 the trained one; the trainer picks a on the dev split. With the lexical channel
the start is weaker than the backbone (BENCHMARKS.md, "Interpolating toward the start"), and on the shipped data
every point tried lost dev score, so the presets leave it off.

Compatibility heads are left out: their start (identity or random) means nothing, and they are fit again on
the interpolated tower (encoders/compat.py).
"""

from __future__ import annotations

import torch
from torch import nn

Weights = dict[str, torch.Tensor]


def _interpolated_names(model: nn.Module) -> list[str]:
    """Trainable parameters, compatibility heads excluded."""
    return [n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("query.heads.")]


def snapshot(model: nn.Module) -> Weights:
    """A detached copy of the parameters that interpolation moves."""
    params = dict(model.named_parameters())
    return {n: params[n].detach().clone() for n in _interpolated_names(model)}


@torch.no_grad()
def interpolate(model: nn.Module, start: Weights, end: Weights, alpha: float) -> None:
    """Set the model's weights to start + alpha (end - start), in place.

    Raises:
        ValueError: alpha outside [0, 1], or `start` / `end` do not hold the same parameters as the model.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    names = _interpolated_names(model)
    missing = sorted(set(names) - set(start) | set(names) - set(end))
    if missing:
        raise ValueError(f"interpolation weights lack {missing[:5]}{'...' if len(missing) > 5 else ''}")
    params = dict(model.named_parameters())
    for n in names:  # the ends are copied as they are (lerp's rounding would move them by an ulp)
        params[n].copy_(start[n] if alpha == 0.0 else end[n] if alpha == 1.0 else torch.lerp(start[n], end[n], alpha))
