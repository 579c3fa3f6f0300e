"""Entity rows -> token-id features (tokenized once) -> collated EntityBatch for the entity tower."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from catalog.errors import DimensionMismatch
from encoders.config import EntityConfig
from encoders.entity import EntityBatch
from encoders.tokenize import EntityTokenizer

Row = dict[str, Any]
Tokens = tuple[NDArray[np.int64], NDArray[np.float32]]  # distinct token ids and their counts


def _tokens(ids: NDArray[np.int64]) -> Tokens:
    """Distinct ids with counts: long texts repeat trigrams, and the bag's cost grows with its length."""
    uniq, counts = np.unique(ids, return_counts=True)
    return uniq, counts.astype(np.float32)


def passage_text(row: Row, fields: Sequence[str]) -> str:
    """The entity content the untuned backbone embeds for `text_input` (engaged queries are training signal)."""
    return " . ".join(str(row[f]) for f in fields if f != "engaged_queries" and row.get(f))


def query_key(text: str) -> str:
    """How engaged queries are matched for leave-one-out (case and spacing do not matter)."""
    return " ".join(text.lower().split())


@dataclass
class EntityFeatures:
    """One entity, tokenized: its text fields and its engaged queries (kept apart for leave-one-out)."""

    fields: list[tuple[int, Tokens]]  # (field index, tokens) of non-empty fields
    engaged: list[tuple[str, Tokens]] = field(default_factory=list)  # (query key, tokens)
    dense: NDArray[np.float32] | None = None  # concatenated dense inputs, or None
    text_vec: NDArray[np.float32] | None = None  # untuned backbone embedding of the text (text_input)


class Featurizer:
    """Tokenizes entity rows the same way in training, evaluation and serving."""

    def __init__(
        self, cfg: EntityConfig, tokenizer: EntityTokenizer, engaged: dict[str, list[str]] | None = None
    ) -> None:
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.engaged = engaged or {}  # entity id -> train-split query texts (the enrichment)
        self.engaged_field = len(cfg.fields)  # index of the enrichment bag (see EntityEncoder.field_scale)

    def features(self, row: Row) -> EntityFeatures:
        fields: list[tuple[int, Tokens]] = []
        for i, name in enumerate(self.cfg.fields):
            value = row.get(name)
            if value:
                ids = self.tokenizer.encode(str(value))
                if ids.size:
                    fields.append((i, _tokens(ids)))
        engaged: list[tuple[str, Tokens]] = []
        if self.cfg.engaged_queries:
            for text in self.engaged.get(str(row.get("id")), [])[: self.cfg.max_engaged_queries]:
                ids = self.tokenizer.encode(text)
                if ids.size:
                    engaged.append((query_key(text), _tokens(ids)))
        return EntityFeatures(fields, engaged, self._dense(row))

    def _dense(self, row: Row) -> NDArray[np.float32] | None:
        if not self.cfg.dense_inputs:
            return None
        given = row.get("dense") or {}
        parts = []
        for name, dim in self.cfg.dense_inputs:
            value = given.get(name)
            vec = np.zeros(dim, np.float32) if value is None else np.asarray(value, np.float32).ravel()
            if vec.size != dim:
                raise DimensionMismatch(f"dense input {name!r} of entity {row.get('id')} has {vec.size} values, "
                                        f"the model expects {dim}")
            parts.append(vec)
        return np.concatenate(parts)

    def collate(
        self,
        feats: Sequence[EntityFeatures],
        exclude: Sequence[str | frozenset[str] | None] | None = None,
        rng: np.random.Generator | None = None,
        token_dropout: float = 0.0,
        engaged_dropout: float = 0.0,
    ) -> EntityBatch:
        """Stack features; `exclude[i]` drops that query (a query key, or a set of keys: the query and its
        translations) from entity i's engaged queries (leave-one-out).

        Training regularisers (with `rng`): each distinct token of a bag is dropped with `token_dropout`, and
        an entity's whole engaged-queries bag with `engaged_dropout`, so the tower cannot lean on one rare
        token or on the enrichment alone.
        """
        chunks: list[NDArray[np.int64]] = []
        weights: list[NDArray[np.float32]] = []
        offsets: list[int] = []
        bag_entity: list[int] = []
        bag_field: list[int] = []
        pos = 0
        for e, f in enumerate(feats):
            for field_index, (ids, counts) in f.fields:
                if rng is not None and token_dropout > 0 and ids.size > 1:
                    keep = rng.random(ids.size) >= token_dropout
                    if keep.any():
                        ids, counts = ids[keep], counts[keep]
                offsets.append(pos)
                bag_entity.append(e)
                bag_field.append(field_index)
                chunks.append(ids)
                weights.append(counts)
                pos += ids.size
            skip = exclude[e] if exclude is not None else None
            hidden = {skip} if isinstance(skip, str) else skip or frozenset()
            engaged = [tok for key, tok in f.engaged if key not in hidden]
            if engaged and rng is not None and engaged_dropout > 0 and rng.random() < engaged_dropout:
                engaged = []
            if engaged:  # one bag for all engaged queries; an id repeated across queries simply sums
                offsets.append(pos)
                bag_entity.append(e)
                bag_field.append(self.engaged_field)
                for ids, counts in engaged:
                    chunks.append(ids)
                    weights.append(counts)
                    pos += ids.size
        flat = np.concatenate(chunks) if chunks else np.zeros(0, np.int64)
        flat_counts = np.concatenate(weights) if weights else np.zeros(0, np.float32)
        dense = None
        if self.cfg.dense_inputs:
            dim = sum(d for _, d in self.cfg.dense_inputs)
            mat = np.stack([f.dense if f.dense is not None else np.zeros(dim, np.float32) for f in feats])
            dense = torch.from_numpy(mat)
        text_vec = None
        if any(f.text_vec is not None for f in feats):
            width = next(f.text_vec for f in feats if f.text_vec is not None).shape[0]  # type: ignore[union-attr]
            text_vec = torch.from_numpy(
                np.stack([f.text_vec if f.text_vec is not None else np.zeros(width, np.float32) for f in feats])
            )
        return EntityBatch(
            ids=torch.from_numpy(flat),
            counts=torch.from_numpy(flat_counts),
            offsets=torch.tensor(offsets, dtype=torch.int64),
            bag_entity=torch.tensor(bag_entity, dtype=torch.int64),
            bag_field=torch.tensor(bag_field, dtype=torch.int64),
            n=len(feats),
            dense=dense,
            text_vec=text_vec,
        )
