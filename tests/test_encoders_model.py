"""The assembled model: spaces, save/load, the untuned-backbone start of text_input, training regularisers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

import encoders
from encoders.backbones import resolve_backbone
from encoders.baselines import PlainEncoder
from encoders.config import EntityConfig, ModelConfig, QueryConfig
from encoders.errors import CheckpointError, UnknownSpace
from encoders.features import Featurizer
from encoders.model import OmniSearchSage
from encoders.tokenize import EntityTokenizer

ROWS = [
    {"id": "p1", "kind": "product", "title": "Simpson Strong-Tie 12-Gauge Angle"},
    {"id": "p2", "kind": "product", "title": "BEHR Premium Textured DeckOver 1-gal. Wood and Concrete Coating"},
    {"id": "p3", "kind": "product", "title": "Cordless drill with two batteries", "description": "18 volt"},
]
QUERIES = ["angle bracket", "deck paint", "power drill"]


def small_entity(**kw: object) -> EntityConfig:
    args: dict[str, object] = {"hash_buckets": 512, "hash_dim": 16, "hidden": (32,), "oov_buckets": 16}
    args.update(kw)
    return EntityConfig(**args)  # type: ignore[arg-type]


def tokenizer() -> EntityTokenizer:
    return EntityTokenizer.build([r["title"] for r in ROWS], {"unigram": 50, "bigram": 50, "trigram": 100}, 16, 1, 64)


def test_text_input_starts_at_the_untuned_backbone_and_round_trips(tmp_path: Path) -> None:
    bb = resolve_backbone("minilm")
    cfg = ModelConfig(query=QueryConfig(train_layers=1), entity=small_entity(text_input=True))
    model = OmniSearchSage(cfg, bb, tokenizer(), legacy={"standin": 384})
    model.passage_cache_dir = None
    with torch.inference_mode():
        enc = model.query.tokenize(QUERIES)
        q = model.query.project(model.query.pooled(enc["input_ids"], enc["attention_mask"], bf16=True))  # (3, 512)
        fz = model.featurizer
        feats = [fz.features(r) for r in ROWS]
        for f, v in zip(feats, model.text_vectors(ROWS), strict=True):
            f.text_vec = v
        e = model.entity(fz.collate(feats))  # (3, 512)
    plain = PlainEncoder(bb)
    ref = plain.encode(QUERIES, passage=False) @ plain.encode([r["title"] + (" . 18 volt" if r["id"] == "p3" else "")
                                                             for r in ROWS], passage=True).T
    assert np.allclose((q @ e.T).numpy(), ref, atol=1e-4)  # same similarities as the untuned backbone
    assert np.allclose(model.embed_queries(QUERIES, space="legacy-standin"), plain.encode(QUERIES, passage=False),
                       atol=5e-3)  # the compatibility head over the backbone's own space starts as identity
    model.save(tmp_path / "ckpt")
    again = encoders.load(tmp_path / "ckpt")
    again.passage_cache_dir = None
    assert np.array_equal(again.embed_entities(ROWS), model.embed_entities(ROWS))
    assert np.array_equal(again.embed_queries(QUERIES), model.embed_queries(QUERIES))


def test_split_forward_equals_the_whole_backbone() -> None:
    """Training caches the frozen blocks' states (`lower`) and runs only the trained ones (`upper`)."""
    cfg = ModelConfig(query=QueryConfig(train_layers=2), entity=small_entity())
    model = OmniSearchSage(cfg, resolve_backbone("minilm"), tokenizer())
    query = model.query
    assert query.can_split() and query.frozen_depth() == 4
    with torch.inference_mode():
        enc = query.tokenize(QUERIES + ["a much longer query so that the batch has padding in it"])
        whole = query.pooled(enc["input_ids"], enc["attention_mask"])  # (4, h)
        split = query.upper(query.lower(enc["input_ids"], enc["attention_mask"]), enc["attention_mask"])
    assert torch.allclose(whole, split, atol=1e-5)


def test_anchor_block_adds_the_untuned_cosine_to_the_served_score() -> None:
    bb = resolve_backbone("minilm")
    cfg = ModelConfig(query=QueryConfig(train_layers=1), entity=small_entity(text_input=True), anchor_weight=0.5)
    model = OmniSearchSage(cfg, bb, tokenizer())
    model.passage_cache_dir = None
    with torch.no_grad():  # move the tuned side away from the backbone, as training does
        for p in model.query.backbone.encoder.layer[-1].parameters():
            p.add_(0.05 * torch.randn_like(p))
    assert model.spaces["model"] == 256 + 384
    q = model.embed_queries(QUERIES)  # (3, 640)
    e = model.embed_entities(ROWS)  # (3, 640)
    plain = PlainEncoder(bb)
    untuned_q = plain.encode(QUERIES, passage=False)
    assert np.allclose(q[:, 256:] / np.linalg.norm(q[:, 256:], axis=1, keepdims=True), untuned_q, atol=2e-2)
    assert np.allclose(e[:, 256:] / np.linalg.norm(e[:, 256:], axis=1, keepdims=True), model.text_vectors(ROWS))
    plain_model = OmniSearchSage(ModelConfig(query=QueryConfig(train_layers=1), entity=small_entity(text_input=True)),
                                 bb, tokenizer())
    plain_model.load_state_dict(model.state_dict())
    plain_model.passage_cache_dir = None
    dense = plain_model.embed_queries(QUERIES) @ plain_model.embed_entities(ROWS).T  # tuned cosine alone
    untuned = q[:, 256:] @ e[:, 256:].T * (1.0 + 0.5) / 0.5  # the untuned cosine, from the unit blocks
    served = q @ e.T * (1.0 + 0.5)  # both rows had norm sqrt(1 + w) before normalising
    assert np.allclose(served, dense + 0.5 * untuned, atol=2e-3)
    assert not np.allclose(served, dense, atol=2e-3)  # the anchor changes the score
    related = model.embed_related(QUERIES)
    assert not related[:, 256:].any()  # related searches rank by the trained cosine alone
    assert np.allclose(related[:, :256], plain_model.embed_queries(QUERIES), atol=1e-6)


def test_variance_ordered_start_puts_the_backbone_similarity_into_the_served_prefix() -> None:
    bb = resolve_backbone("minilm")
    cfg = ModelConfig(query=QueryConfig(train_layers=0), entity=small_entity(text_input=True))
    model = OmniSearchSage(cfg, bb, tokenizer())
    model.passage_cache_dir = None
    plain = PlainEncoder(bb)
    ref = plain.encode(QUERIES, passage=False) @ model.text_vectors(ROWS).T  # untuned backbone, full width

    def served_error() -> float:  # how far the served 256-d prefix ranks from the untuned backbone
        return float(np.abs(model.embed_queries(QUERIES) @ model.embed_entities(ROWS).T - ref).max())

    random_start = served_error()
    extra = ["garden hose 50 ft", "LED light bulb", "kitchen faucet chrome", "deck screws", "wood stain"]
    sample = [model.text_vectors(ROWS), plain.encode(extra, passage=True), plain.encode(QUERIES, passage=False)]
    model.order_by_variance(np.concatenate(sample))
    rot = model.query.proj.weight
    assert torch.equal(rot, model.entity.text_skip.weight)  # type: ignore[union-attr]
    assert torch.allclose(rot.T @ rot, torch.eye(rot.shape[1]), atol=1e-5)  # full width: dot products kept
    assert served_error() < 0.01 < 0.05 < random_start  # 11 vectors span 11 directions, all inside the prefix


def test_spaces_errors_and_corrupt_checkpoint(tmp_path: Path) -> None:
    model = OmniSearchSage(ModelConfig(entity=small_entity(), compat_mode="prefix"), resolve_backbone("minilm"),
                           tokenizer(), legacy={"small": 64})
    assert model.spaces == {"model": 256, "legacy-small": 64}
    assert model.embed_queries(QUERIES, space="legacy-small").shape == (3, 64)
    with pytest.raises(UnknownSpace):
        model.embed_queries(QUERIES, space="legacy-nope")
    model.save(tmp_path / "ckpt")
    weights = tmp_path / "ckpt" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError):
        encoders.load(tmp_path / "ckpt")
    with pytest.raises(CheckpointError):
        encoders.load(tmp_path / "missing")


def test_token_and_engaged_dropout_are_seeded() -> None:
    cfg = small_entity(fields=("title",))
    fz = Featurizer(cfg, tokenizer(), {"p1": ["angle bracket", "l bracket"]})
    feats = [fz.features(r) for r in ROWS]
    full = fz.collate(feats)
    a = fz.collate(feats, rng=np.random.default_rng(0), token_dropout=0.5, engaged_dropout=1.0)
    b = fz.collate(feats, rng=np.random.default_rng(0), token_dropout=0.5, engaged_dropout=1.0)
    assert torch.equal(a.ids, b.ids)
    assert a.ids.numel() < full.ids.numel()
    assert 1 not in a.bag_field.tolist() and 1 in full.bag_field.tolist()  # the engaged bag (index 1) is gone
