"""Pseudo-queries cut from item text: sentence pieces in several scripts, limits, seeded choice, compat fits."""

from __future__ import annotations

import json

import pytest
from encoders_fixtures import tiny_catalog, tiny_config

from catalog import Catalog, Home
from encoders.compat import fit_checkpoint, legacy_pseudo_queries, load_legacy
from encoders.pseudo import MAX_CHARS, pieces, pseudo_queries
from encoders.train import Trainer


def test_pieces_split_sentences_in_several_scripts_and_drop_fragments() -> None:
    text = "Der Rhein fließt nach Norden. Fig. 2. 北京是中国的首都。上海是最大的城市。 ¿Dónde está el gato negro?"
    assert pieces(text) == ["Der Rhein fließt nach Norden.", "北京是中国的首都。", "上海是最大的城市。",
                            "¿Dónde está el gato negro?"]  # "Fig." and "2." are too short to name anything
    long = pieces(" ".join(["word"] * 120))
    assert len(long) == 3 and all(len(p) <= MAX_CHARS for p in long)
    assert pieces("") == [] and pieces("ok") == []


def test_pseudo_queries_are_seeded_capped_and_never_read_engaged_queries() -> None:
    rows = [{"id": "a", "title": "A title long enough", "description": "One sentence here. Another one there. "
             "And a third one too.", "engaged_queries": "a secret query from the train split"},
            {"id": "b", "title": "short"}]
    fields = ("title", "description")
    pairs = pseudo_queries(rows, fields, per_item=2, seed=3)
    assert len(pairs) == 2 and {i for _, i in pairs} == {"a"}  # "b" has nothing long enough
    assert pairs == pseudo_queries(rows, fields, per_item=2, seed=3)
    assert all(t in "A title long enough One sentence here. Another one there. And a third one too." for t, _ in pairs)
    assert len(pseudo_queries(rows, fields, per_item=10)) == 4
    assert pseudo_queries(rows, fields, per_item=0) == []


@pytest.fixture
def trained(home: Home) -> Home:
    tiny_catalog(home)
    Trainer(home, tiny_config(), progress=False).run()
    return home


def test_fit_compat_with_pseudo_queries_records_them(trained: Home) -> None:
    ckpt = trained.checkpoints / "tiny"
    with Catalog(trained.catalog_db, read_only=True) as cat:
        ids, _, _ = load_legacy(cat)
        fields = tiny_config().model.entity.fields  # what fit_checkpoint reads: the model's fields
        assert "engaged_queries" in fields
        pseudo = legacy_pseudo_queries(cat, ids, fields, per_item=3)
        items = {r["id"]: r for r in cat.entities()}
    assert set(pseudo) == set(ids) and pseudo["toy"]
    for text, item in pseudo["toy"]:  # pieces of the item's own text, whitespace collapsed
        own = " ".join(" ".join(str(items[item].get(f) or "") for f in fields if f != "engaged_queries").split())
        assert item in ids["toy"] and text in own
    _, fits = fit_checkpoint(trained, ckpt, trained.checkpoints / "pseudo", steps=40, batch_size=16, lr=1e-2,
                             pseudo_per_item=3)
    (fit,) = fits
    assert fit.pseudo == len(pseudo["toy"]) and fit.queries > fit.pseudo  # real queries and pseudo ones
    assert fit.loss_last < fit.loss_first
    record = json.loads((trained.checkpoints / "pseudo" / "config.json").read_text())
    assert record["compat_fit"][-1]["pseudo"] == fit.pseudo
