"""Sampled-softmax loss of OmniSearchSage (Agarwal et al., 2024, arXiv 2404.16260), with nested prefixes.

For one task's batch of B (query, positive) pairs the loss at prefix width d is

    CE_in(d)   = mean_i  -log softmax_j( s * <q_i, p_j> - log Q(p_j) )[i]          in-batch negatives
    CE_rand(d) = mean_i  -log softmax( [s * <q_i, p_i>,  s * <q_k', n_k> - log(R / N)] )[0]   random negatives

where q, p, n are the first d dims re-normalised; s = exp(log_scale) is the learned logit scale (1/temperature,
initialised at 1/0.07 and capped); Q(p) is the share of item p among all positives seen so far, estimated by a
count-min sketch (the logQ correction of Yi et al., 2019, which the paper uses for its in-batch negatives; it is
applied to every column, the diagonal included, since the positive is itself a batch sample); R random negatives
are drawn uniformly from the task's N entities, so each has expected count R / N and the sampled partition
function estimates the full one. Masked to -inf: in the in-batch softmax, columns j != i whose item equals p_i
(accidental positives) or whose query equals q_i (another positive of the same query); in the random softmax,
negatives equal to p_i. The caller may mask more (`known`, `neg_known`): the trainer masks every item the
training data already pairs with q_i or with a translation of q_i, so an item in another language, or another
relevant item of the same query, is never pushed away as a negative. The total is
sum_d w_d * (CE_in(d) + CE_rand(d)) with the paper's weights (16, 32, 64, 128: 0.05; 256, 512: 1.0).

A fixed similarity that the served score adds to the trained cosine (the anchor block, ModelConfig.anchor_weight:
weight x the untuned backbone's cosine) enters every logit as s * (<q_i, p_j> + offset_ij), so the towers learn
what the frozen part gets wrong instead of relearning what it already ranks well.

Shapes: q, p (B, D); neg (R, D); q_keys, p_keys (B,) int64; neg_keys (R,) int64.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from encoders.sketch import CountMinSketch


@dataclass
class LossParts:
    """The total and its parts at the widest prefix (for logging)."""

    total: torch.Tensor  # scalar, differentiable
    in_batch: float  # CE_in at the widest prefix
    random: float  # CE_rand at the widest prefix (0 without random negatives)
    scale: float  # logit scale used


def masked_in_batch_logits(
    q: torch.Tensor,
    p: torch.Tensor,
    scale: torch.Tensor,
    q_keys: torch.Tensor,
    p_keys: torch.Tensor,
    p_logq: torch.Tensor | None,
    q_item_keys: torch.Tensor | None = None,
    known: torch.Tensor | None = None,
    offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, d) q and p -> (B, B) corrected logits with accidental positives and same-query columns at -inf.

    `offset` (B, B) is a fixed similarity added to the cosine before scaling.

    `q_item_keys` (B,) are the queries' keys as items (query->query tasks): a column holding row i's own
    query is masked too. `known` (B, B) bool masks more columns (known positives of row i); its diagonal is
    ignored.
    """
    sim = q @ p.T  # (B, B)
    logits = scale * (sim if offset is None else sim + offset)
    if p_logq is not None:
        logits = logits - p_logq[None, :]  # (B, B), correction per column item
    same = (p_keys[None, :] == p_keys[:, None]) | (q_keys[None, :] == q_keys[:, None])  # (B, B)
    if q_item_keys is not None:
        same = same | (p_keys[None, :] == q_item_keys[:, None])
    if known is not None:
        same = same | known
    same.fill_diagonal_(False)
    return logits.masked_fill(same, float("-inf"))


def random_logits(
    q: torch.Tensor,
    p: torch.Tensor,
    neg: torch.Tensor,
    scale: torch.Tensor,
    p_keys: torch.Tensor,
    neg_keys: torch.Tensor,
    neg_logq: float,
    neg_known: torch.Tensor | None = None,
    pos_offset: torch.Tensor | None = None,
    neg_offset: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, d) q, p and (R, d) neg -> (B, 1 + R) logits, positive first, negatives equal to p_i at -inf.

    `neg_known` (B, R) bool masks more negatives (known positives of row i). `pos_offset` (B,) and `neg_offset`
    (B, R) are fixed similarities added to the cosines before scaling.
    """
    pos_sim = (q * p).sum(-1)  # (B,)
    neg_sim = q @ neg.T  # (B, R)
    if pos_offset is not None:
        pos_sim = pos_sim + pos_offset
    if neg_offset is not None:
        neg_sim = neg_sim + neg_offset
    pos = scale * pos_sim[:, None]  # (B, 1)
    negs = scale * neg_sim - neg_logq  # (B, R)
    mask = neg_keys[None, :] == p_keys[:, None]  # (B, R)
    if neg_known is not None:
        mask = mask | neg_known
    negs = negs.masked_fill(mask, float("-inf"))
    return torch.cat([pos, negs], dim=1)  # (B, 1 + R)


class SampledSoftmaxLoss(nn.Module):
    """One task's loss; owns its learned logit scale and its count-min sketch of positive items."""

    def __init__(
        self,
        prefix_dims: Sequence[int] = (16, 32, 64, 128, 256, 512),
        prefix_weights: Sequence[float] = (0.05, 0.05, 0.05, 0.05, 1.0, 1.0),
        temperature: float = 0.07,
        max_scale: float = 100.0,
        logq: bool = True,
        sketch_width: int = 1 << 16,
        sketch_depth: int = 4,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if len(prefix_dims) != len(prefix_weights):
            raise ValueError("prefix_dims and prefix_weights differ in length")
        self.prefix_dims = list(prefix_dims)
        self.prefix_weights = list(prefix_weights)
        self.max_scale = max_scale
        self.log_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))
        self.logq = logq
        self.sketch = CountMinSketch(sketch_width, sketch_depth, seed)

    def scale(self) -> torch.Tensor:
        return self.log_scale.exp().clamp(max=self.max_scale)

    def forward(
        self,
        q: torch.Tensor,
        p: torch.Tensor,
        q_keys: torch.Tensor,
        p_keys: torch.Tensor,
        neg: torch.Tensor | None = None,
        neg_keys: torch.Tensor | None = None,
        num_candidates: int | None = None,
        q_item_keys: torch.Tensor | None = None,
        known: torch.Tensor | None = None,
        neg_known: torch.Tensor | None = None,
        offset: torch.Tensor | None = None,
        neg_offset: torch.Tensor | None = None,
    ) -> LossParts:
        """Loss of one batch; `num_candidates` (N) is the size of the pool random negatives came from.

        `known` (B, B) and `neg_known` (B, R) bool mark further columns that are positives of row i.
        `offset` (B, B) and `neg_offset` (B, R) are fixed similarities added to every prefix's cosines.

        Updates the sketch with this batch's positives first, so Q(p) >= 1 / total for every column.
        """
        p_logq = None
        if self.logq:
            self.sketch.add(p_keys)
            p_logq = self.sketch.log_prob(p_keys)  # (B,)
        has_neg = neg is not None and neg_keys is not None and neg.shape[0] > 0
        neg_logq = 0.0
        if has_neg and self.logq:
            if not num_candidates:
                raise ValueError("num_candidates is required with random negatives and logq")
            neg_logq = math.log(neg.shape[0] / num_candidates)  # type: ignore[union-attr]
        scale = self.scale()
        total = q.new_zeros(())
        ce_in = ce_rand = 0.0
        width = q.shape[1]
        dims = [d for d in self.prefix_dims if d <= width] or [width]
        weights = [w for d, w in zip(self.prefix_dims, self.prefix_weights, strict=True) if d <= width] or [1.0]
        targets = torch.arange(q.shape[0])
        for d, w in zip(dims, weights, strict=True):
            qd = F.normalize(q[:, :d], dim=-1)  # (B, d)
            pd = F.normalize(p[:, :d], dim=-1)  # (B, d)
            logits_in = masked_in_batch_logits(  # (B, B)
                qd, pd, scale, q_keys, p_keys, p_logq, q_item_keys, known, offset
            )
            loss_in = F.cross_entropy(logits_in, targets)
            loss = loss_in
            loss_rand = torch.zeros(())
            if has_neg:
                nd = F.normalize(neg[:, :d], dim=-1)  # type: ignore[index]  # (R, d)
                logits = random_logits(  # (B, 1 + R)
                    qd, pd, nd, scale, p_keys, neg_keys, neg_logq, neg_known,  # type: ignore[arg-type]
                    None if offset is None else offset.diagonal(), neg_offset,
                )
                loss_rand = F.cross_entropy(logits, torch.zeros(q.shape[0], dtype=torch.long))
                loss = loss + loss_rand
            total = total + w * loss
            ce_in, ce_rand = float(loss_in.detach()), float(loss_rand.detach())
        return LossParts(total=total, in_batch=ce_in, random=ce_rand, scale=float(scale.detach()))
