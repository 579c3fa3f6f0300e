"""rebuild --checkpoint: the catalog embedded by a real (untrained, tiny) OmniSearchSage checkpoint."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from indexer_fixtures import catalog_home

from catalog import Catalog, Home
from indexer.build import rebuild
from indexer.sharded import ShardedIndex

model_mod = pytest.importorskip("encoders.model")  # the model package; skipped where it is not installed


def _tiny_checkpoint(home: Home, legacy: dict[str, int]) -> str:
    """A real checkpoint with the MiniLM backbone and a small entity tower (untrained weights embed alike)."""
    try:
        from encoders.backbones import resolve_backbone
        from encoders.config import EntityConfig, ModelConfig
        from encoders.tokenize import EntityTokenizer
    except ImportError as exc:  # pragma: no cover - depends on the encoders package's progress
        pytest.skip(f"encoders API not complete: {exc}")
    sizes = {"unigram": 512, "bigram": 512, "trigram": 512}
    ec = EntityConfig(unigram_vocab=512, bigram_vocab=512, trigram_vocab=512, oov_buckets=64, hash_buckets=2048,
                      hash_dim=32, hidden=(64,), min_count=1, engaged_queries=False)
    with Catalog(home.catalog_db, read_only=True) as cat:
        texts = [str(r["title"]) for r in cat.entities() if r.get("title")]
    tokenizer = EntityTokenizer.build(texts, sizes, ec.oov_buckets, ec.min_count, ec.max_tokens_per_field)
    model = model_mod.OmniSearchSage(ModelConfig(entity=ec), resolve_backbone("minilm"), tokenizer, legacy=legacy)
    out = home.checkpoints / "tiny"
    model.save(out)
    return str(out)


def test_rebuild_with_a_checkpoint_embeds_entities_and_queries(home: Home) -> None:
    catalog_home(home.root, n=400, dims={"pinsage": 24})
    ckpt = _tiny_checkpoint(home, {"pinsage": 24})
    model = model_mod.load(ckpt)
    gen = rebuild(home, checkpoint="tiny", backend="flat", progress=False)  # a name in <home>/checkpoints
    assert set(gen.indices) == {"pins", "queries", "legacy-pinsage"}
    assert gen.checkpoint == str(Path(ckpt).resolve()) and gen.checkpoint_id == model.checkpoint_id
    pins = gen.indices["pins"]
    assert pins.space == "model" and pins.entity_kind == "pin" and pins.count == 400
    assert pins.dim == model.spaces["model"] and pins.recall == 1.0  # flat: exact by construction
    assert gen.indices["queries"].count == 20 and gen.indices["legacy-pinsage"].dim == 24

    # the indexed vectors are the model's own embeddings: an entity's vector finds the entity
    with Catalog(home.catalog_db, read_only=True) as cat:
        rows = list(cat.entities("pin"))[:5]
    xq = model.embed_entities(rows)
    _, found = ShardedIndex.load(pins).search(xq, 1)
    assert [f[0] for f in found] == [r["id"] for r in rows]
    # and a text query lands in the same space
    scores, hits = ShardedIndex.load(pins).search(model.embed_queries(["pin number 7"]), 3)
    assert len(hits[0]) == 3 and np.isfinite(scores).all()

    # a legacy-only rebuild keeps the model indices and their checkpoint
    again = rebuild(home, indices=["legacy-pinsage"], backend="flat", progress=False)
    assert set(again.indices) == {"pins", "queries", "legacy-pinsage"}
    assert again.checkpoint_id == model.checkpoint_id and again.indices["pins"].carried_from == gen.id
