"""The lexical channel: tokens, tf-idf estimates through the hashed projection, files, and a trained checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from encoders_fixtures import tiny_catalog, tiny_config

import encoders
from catalog import Catalog, Home
from encoders.config import LexicalConfig, override
from encoders.errors import CheckpointError, ConfigError
from encoders.features import passage_text
from encoders.lexical import LexicalEncoder, Tokenizer
from encoders.train import Trainer

DOCS = [
    "Delta Breez Slim 80 CFM Ceiling Exhaust Fan",
    "Delta Windemere Bathroom Faucet in Chrome",
    "Hampton Bay 2-Light Iron Oxide Sconce",
    "Hampton Bay Sink Base Cabinet",
    "Ceiling Fan with Light Kit",
    "中文字典",
]


def test_tokens_are_stemmed_words_and_bigrams_of_unspaced_scripts() -> None:
    tok = Tokenizer("english")
    assert tok("Running SHOES, ｆｕｌｌ-width") == ["run", "shoe", "full", "width"]
    assert tok("中文字典 and Thai ภาษา") == ["and", "thai", "中文", "文字", "字典", "ภา", "าษ", "ษา"]
    assert Tokenizer("")("Running shoes") == ["running", "shoes"]
    with pytest.raises(ConfigError, match="unknown stemmer"):
        Tokenizer("klingon")


def test_hashed_vectors_estimate_the_tfidf_cosine() -> None:
    enc = LexicalEncoder.build(LexicalConfig(dim=256), DOCS)
    assert enc.n_docs == len(DOCS) and enc.df["delta"] == 2 and enc.df["ceil"] == 2
    assert enc.idf("breez") > enc.idf("delta") > 0 and enc.idf("never-seen") == 0
    d = enc.embed(DOCS)
    assert np.allclose(np.linalg.norm(d, axis=1), 1.0, atol=1e-5)
    assert np.allclose(enc.embed(DOCS[:1]), d[:1])  # the same text, the same vector (no state, no randomness)
    q = enc.embed(["delta breez fan", "hampton bay sconces", "字典", "qwertyuiop"])
    scores = q[:3] @ d.T
    assert scores[0].argmax() == 0 and scores[1].argmax() == 2 and scores[2].argmax() == 5
    assert scores[0, 0] > scores[0, 1] + 0.3  # the rare word "breez" outweighs the shared brand "delta"
    assert not q[3].any()  # no known token: a zero row, not noise
    # texts sharing no token are nearly orthogonal: only the projection's noise, about 1/sqrt(dim)
    assert abs(float(d[2] @ d[5])) < 0.35


def test_combine_ranks_by_dense_plus_weighted_lexical_cosine() -> None:
    cfg = LexicalConfig(dim=64, weight=0.5)
    enc = LexicalEncoder.build(cfg, DOCS)
    rng = np.random.default_rng(0)
    dense = rng.normal(size=(len(DOCS), 8)).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    both = enc.combine(dense, DOCS)
    assert both.shape == (len(DOCS), 8 + 64)
    assert np.allclose(np.linalg.norm(both, axis=1), 1.0, atol=1e-5)
    lex = enc.embed(DOCS)
    expected = (dense @ dense.T + 0.5 * lex @ lex.T) / 1.5  # every doc has known tokens: norm sqrt(1.5) each
    assert np.allclose(both @ both.T, expected, atol=1e-5)


def test_files_round_trip_and_bad_input(tmp_path: Path) -> None:
    enc = LexicalEncoder.build(LexicalConfig(dim=32), DOCS)
    enc.save(tmp_path)
    again = LexicalEncoder.load(LexicalConfig(dim=32), tmp_path)
    assert again.df == enc.df and np.array_equal(again.embed(DOCS), enc.embed(DOCS))
    (tmp_path / "lexical.json.gz").write_bytes(b"not gzip")
    with pytest.raises(CheckpointError, match="lexical.json.gz"):
        LexicalEncoder.load(LexicalConfig(dim=32), tmp_path)
    with pytest.raises(ConfigError, match="lexical"):
        override(tiny_config(), {"model": {"lexical": {"dim": 4, "nonzeros": 8}}})


def test_a_trained_model_serves_dense_and_lexical_in_one_vector(home: Home) -> None:
    tiny_catalog(home)
    cfg = override(tiny_config(), {"model": {"lexical": {"dim": 32, "weight": 0.5}}})
    result = Trainer(home, cfg, progress=False).run()
    model = encoders.load(result.out)
    assert model.spaces["model"] == 256 + 32
    with Catalog(home.catalog_db, read_only=True) as cat:
        rows = list(cat.entities())
    ent = model.embed_entities(rows)
    q = model.embed_queries(["iphone charger"])
    assert ent.shape == (len(rows), 288) and q.shape == (1, 288)
    assert np.allclose(np.linalg.norm(ent, axis=1), 1.0, atol=1e-5)
    # the served score is the dense cosine plus half the lexical cosine, over 1 + 0.5
    dense_only = encoders.load(result.out)
    dense_only.lexical = None
    d_ent, d_q = dense_only.embed_entities(rows), dense_only.embed_queries(["iphone charger"])
    assert d_ent.shape[1] == 256 and model.lexical is not None
    lex_q = model.lexical.embed(["iphone charger"])
    lex_e = model.lexical.embed([passage_text(r, model.cfg.entity.fields) for r in rows])
    assert lex_q.any() and (lex_e @ lex_q[0]).max() > 0.2
    has = lex_e.any(axis=1)
    assert np.allclose((q @ ent.T)[0, has] * 1.5, (d_q @ d_ent.T)[0, has] + 0.5 * (lex_e @ lex_q[0])[has], atol=1e-4)
    # related searches: queries as items carry no lexical block unless asked to, so they rank by dense cosine
    related = model.embed_related(["iphone charger", "gato"])
    assert related.shape == (2, 288) and not related[:, 256:].any()
    assert np.allclose(related[:, :256], dense_only.embed_queries(["iphone charger", "gato"]), atol=1e-5)
    model.cfg = override(cfg, {"model": {"lexical": {"related_queries": True}}}).model
    assert np.array_equal(model.embed_related(["iphone charger"]), q)
