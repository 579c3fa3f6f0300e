"""Entity tokenizers, vocabularies, the hash-embedding bag and the entity tower's features."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from catalog.errors import DimensionMismatch
from encoders.config import EntityConfig
from encoders.entity import HASH_PRIME, EntityEncoder, HashEmbeddingBag
from encoders.features import Featurizer
from encoders.tokenize import EntityTokenizer, bigrams, trigrams, words

SIZES = {"unigram": 100, "bigram": 100, "trigram": 200}


def make_tokenizer(texts: list[str], oov: int = 8) -> EntityTokenizer:
    return EntityTokenizer.build(texts, SIZES, oov_buckets=oov, min_count=1, max_tokens=64)


def test_three_tokenizers() -> None:
    ws = words("Red  Running-Shoe, size 10")
    assert ws == ["red", "running", "shoe", "size", "10"]
    assert bigrams(ws)[:2] == ["red running", "running shoe"]
    assert trigrams(["ab", "cat"]) == ["#ab", "ab#", "#ca", "cat", "at#"]
    assert words("Ünïcode ÄÖ") == ["ünïcode", "äö"]


def test_vocabularies_have_separate_id_ranges_and_hashed_fallback(tmp_path: Path) -> None:
    tok = make_tokenizer(["red shoe", "red hat", "blue shoe"])
    assert tok.vocabs["unigram"][:2] == ["red", "shoe"]  # most frequent first, ties by token
    u0, b0, t0 = tok.offsets["unigram"], tok.offsets["bigram"], tok.offsets["trigram"]
    assert u0 == 0 and b0 == len(tok.vocabs["unigram"]) + 8 and t0 == b0 + len(tok.vocabs["bigram"]) + 8
    assert tok.token_id("unigram", "red") == 0
    oov = tok.token_id("unigram", "zebra")
    assert len(tok.vocabs["unigram"]) <= oov < b0  # in the unigram OOV buckets
    assert oov == make_tokenizer(["red shoe", "red hat", "blue shoe"]).token_id("unigram", "zebra")  # stable
    assert tok.token_id("bigram", "red shoe") >= b0
    ids = tok.encode("red zebra")
    assert ids.min() >= 0 and ids.max() < tok.num_ids
    tok.save(tmp_path / "vocab.json")
    again = EntityTokenizer.load(tmp_path / "vocab.json")
    assert np.array_equal(again.encode("red zebra shoe"), tok.encode("red zebra shoe"))


def test_min_count_and_size_limit_the_vocabulary() -> None:
    tok = EntityTokenizer.build(["a a a b b c"], {"unigram": 2, "bigram": 10, "trigram": 10}, 4, 2, 64)
    assert tok.vocabs["unigram"] == ["a", "b"]  # c occurs once (< min_count); size 2 keeps the top two


def test_hash_bag_equals_hand_computation() -> None:
    bag = HashEmbeddingBag(num_ids=50, buckets=13, dim=4, num_hashes=2, seed=3)
    with torch.no_grad():
        bag.importance.uniform_(0.5, 1.5)
    ids = torch.tensor([3, 7, 3, 11])
    offsets = torch.tensor([0, 3])  # bags [3, 7, 3] and [11]
    out = bag(ids, offsets)
    a, b = bag.hash_a.tolist(), bag.hash_b.tolist()
    table, w = bag.table.weight.detach(), bag.importance.detach()

    def manual(tokens: list[int]) -> torch.Tensor:
        acc = torch.zeros(4)
        for x in tokens:
            for h in range(2):
                acc += w[x, h] * table[((a[h] * x + b[h]) % HASH_PRIME) % 13]
        return torch.nn.functional.layer_norm(acc, (4,))

    assert torch.allclose(out[0], manual([3, 7, 3]), atol=1e-5)
    assert torch.allclose(out[1], manual([11]), atol=1e-5)
    # counts are the same as repeating ids: sum pooling is linear
    counted = bag(torch.tensor([3, 7, 11]), torch.tensor([0, 2]), torch.tensor([2.0, 1.0, 1.0]))
    assert torch.allclose(counted, out, atol=1e-5)


def test_engaged_queries_bag_and_leave_one_out() -> None:
    cfg = EntityConfig(fields=("title", "description"), hash_buckets=97, hash_dim=8, hidden=(16,), dim=8)
    tok = make_tokenizer(["red shoe", "running shoes for kids", "kids shoes"])
    fz = Featurizer(cfg, tok, {"e1": ["running shoes", "kids shoes"]})
    feats = fz.features({"id": "e1", "title": "red shoe", "description": ""})
    assert [f for f, _ in feats.fields] == [0]  # empty description is skipped
    assert [k for k, _ in feats.engaged] == ["running shoes", "kids shoes"]
    full = fz.collate([feats])
    left_out = fz.collate([feats], exclude=["kids shoes"])
    assert full.bag_field.tolist() == [0, 2]  # title bag, then the enrichment bag (index len(fields))
    assert full.ids.numel() > left_out.ids.numel()
    assert set(left_out.ids.tolist()) <= set(full.ids.tolist())
    no_enrich = Featurizer(EntityConfig(fields=("title",), engaged_queries=False), tok, {"e1": ["x"]})
    assert no_enrich.features({"id": "e1", "title": "red"}).engaged == []


def test_entity_encoder_outputs_unit_vectors_with_dense_inputs() -> None:
    cfg = EntityConfig(fields=("title",), hash_buckets=97, hash_dim=8, hidden=(16, 16), dim=8,
                       dense_inputs=(("legacy", 3),))
    tok = make_tokenizer(["red shoe", "blue hat"])
    fz = Featurizer(cfg, tok)
    enc = EntityEncoder(cfg, tok.num_ids, seed=0)
    rows = [{"id": "a", "title": "red shoe", "dense": {"legacy": [1.0, 0.0, 0.0]}}, {"id": "b", "title": ""}]
    out = enc(fz.collate([fz.features(r) for r in rows]))
    assert out.shape == (2, 8)
    assert torch.allclose(out.norm(dim=1), torch.ones(2), atol=1e-5)
    with pytest.raises(DimensionMismatch):
        fz.features({"id": "c", "title": "x", "dense": {"legacy": [1.0, 2.0]}})  # wrong dense width
