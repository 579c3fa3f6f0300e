"""The entity tower: a hash-embedding bag over token ids, fields summed, optional dense inputs, an MLP.

Shapes: N token ids in a batch, F non-empty (entity, field) bags, n entities, H hash functions, d = hash_dim.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.config import EntityConfig

# A Mersenne prime above every token id, the modulus of the universal hash family ((a*x + b) mod p).
HASH_PRIME = (1 << 31) - 1


@dataclass
class EntityBatch:
    """Collated entity features (see encoders/features.py)."""

    ids: torch.Tensor  # (N,) int64 distinct token ids of each bag, bag after bag
    counts: torch.Tensor  # (N,) float32 occurrences of each id in its bag (sum pooling is linear in them)
    offsets: torch.Tensor  # (F,) int64 start of each bag in `ids`
    bag_entity: torch.Tensor  # (F,) int64 entity index of each bag
    bag_field: torch.Tensor  # (F,) int64 field index of each bag
    n: int  # number of entities
    dense: torch.Tensor | None  # (n, sum of dense dims) float32, zeros where a row has no value
    text_vec: torch.Tensor | None = None  # (n, h) untuned backbone embedding of the text (EntityConfig.text_input)


class HashEmbeddingBag(nn.Module):
    """Two (or H) universal hashes of each token id into one shared table, learned weight per token per hash.

    bag(tokens) = LayerNorm( sum_i sum_h w[x_i, h] * E[((a_h * x_i + b_h) mod p) mod buckets] )
    """

    def __init__(self, num_ids: int, buckets: int, dim: int, num_hashes: int, seed: int) -> None:
        super().__init__()
        self.num_ids, self.buckets, self.num_hashes = num_ids, buckets, num_hashes
        self.table = nn.EmbeddingBag(buckets, dim, mode="sum")
        nn.init.normal_(self.table.weight, std=0.1)
        # One importance weight per token id and hash; start equal so every token counts the same.
        self.importance = nn.Parameter(torch.full((num_ids, num_hashes), 1.0))
        rng = np.random.default_rng(seed)
        self.register_buffer("hash_a", torch.from_numpy(rng.integers(1, HASH_PRIME, num_hashes, dtype=np.int64)))
        self.register_buffer("hash_b", torch.from_numpy(rng.integers(0, HASH_PRIME, num_hashes, dtype=np.int64)))
        self.norm = nn.LayerNorm(dim)

    def buckets_of(self, ids: torch.Tensor) -> torch.Tensor:
        """(N,) token ids -> (N, H) table rows. a, x < 2^31, so a*x + b fits in int64."""
        a: torch.Tensor = self.hash_a  # type: ignore[assignment]
        b: torch.Tensor = self.hash_b  # type: ignore[assignment]
        return (ids[:, None] * a[None, :] + b[None, :]) % HASH_PRIME % self.buckets

    def forward(self, ids: torch.Tensor, offsets: torch.Tensor, counts: torch.Tensor | None = None) -> torch.Tensor:
        """(N,) ids, (F,) bag offsets and (N,) counts -> (F, dim) layer-normalised bag vectors."""
        rows = self.buckets_of(ids)  # (N, H)
        weights = self.importance[ids]  # (N, H)
        if counts is not None:
            weights = weights * counts[:, None]  # (N, H)
        pooled = self.table(
            rows.reshape(-1), offsets * self.num_hashes, per_sample_weights=weights.reshape(-1)
        )  # (F, dim)
        return self.norm(pooled)


class EntityEncoder(nn.Module):
    """Entities of every kind -> (n, dim) L2-normalised vectors in the shared space."""

    def __init__(self, cfg: EntityConfig, num_ids: int, seed: int, text_dim: int = 0) -> None:
        super().__init__()
        self.cfg = cfg
        self.bag = HashEmbeddingBag(num_ids, cfg.hash_buckets, cfg.hash_dim, cfg.num_hashes, seed)
        # Fields are summed; a learned scalar per field lets a long description count less than a title.
        # Index len(fields) is the engaged-queries enrichment (kept apart from a user's own field of that name).
        self.field_scale = nn.Parameter(torch.ones(len(cfg.fields) + 1))
        self.dense_dim = sum(d for _, d in cfg.dense_inputs)
        self.text_dim = text_dim
        layers: list[nn.Module] = []
        width = cfg.hash_dim + self.dense_dim + text_dim
        for hidden in cfg.hidden:
            layers += [nn.Linear(width, hidden), nn.ReLU(), nn.LayerNorm(hidden)]
            if cfg.dropout:
                layers.append(nn.Dropout(cfg.dropout))
            width = hidden
        layers.append(nn.Linear(width, cfg.dim))
        self.mlp = nn.Sequential(*layers)
        # The untuned backbone's text embedding also reaches the output directly (a residual path), so the
        # tower can start from the pretrained similarity and learn corrections (see OmniSearchSage.__init__).
        self.text_skip = nn.Linear(text_dim, cfg.dim, bias=False) if text_dim else None

    def forward(self, batch: EntityBatch) -> torch.Tensor:
        """EntityBatch -> (n, dim) L2-normalised embeddings (all dims; callers take prefixes)."""
        text = torch.zeros(batch.n, self.cfg.hash_dim)  # (n, d)
        if batch.ids.numel():
            bags = self.bag(batch.ids, batch.offsets, batch.counts)  # (F, d)
            bags = bags * self.field_scale[batch.bag_field][:, None]  # (F, d)
            text = text.index_add(0, batch.bag_entity, bags)  # (n, d)
        x = text
        if self.dense_dim:
            dense = batch.dense if batch.dense is not None else torch.zeros(batch.n, self.dense_dim)
            x = torch.cat([text, dense], dim=1)  # (n, d + dense)
        if self.text_dim:
            vec = batch.text_vec if batch.text_vec is not None else torch.zeros(batch.n, self.text_dim)
            x = torch.cat([x, vec], dim=1)  # (n, d + dense + h)
            return F.normalize(self.mlp(x) + self.text_skip(vec), dim=-1)  # type: ignore[misc]  # (n, dim)
        return F.normalize(self.mlp(x), dim=-1)  # (n, dim)
