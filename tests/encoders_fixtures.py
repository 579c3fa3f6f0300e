"""A tiny real catalog (ESCI fragments, shipped) plus a few hand-made pins and translations, and a tiny config."""

from __future__ import annotations

from typing import Any

import numpy as np

from catalog import Catalog, Home
from catalog.importers.runner import run_import
from catalog.split import split_by_query
from encoders.config import RunConfig, override, preset

PINS = [
    ("pin-cat-en", "en", "Cats", "The domestic cat is a small carnivorous mammal kept as a pet."),
    ("pin-cat-es", "es", "Gatos", "El gato doméstico es un pequeño mamífero carnívoro."),
    ("pin-sun-en", "en", "Sun", "The Sun is the star at the center of the Solar System."),
    ("pin-sun-es", "es", "Sol", "El Sol es la estrella en el centro del sistema solar."),
]
QUESTIONS = [
    ("q-cat", "what is a domestic cat", "¿qué es un gato doméstico?", "pin-cat"),
    ("q-sun", "what is at the center of the solar system", "¿qué hay en el centro del sistema solar?", "pin-sun"),
    ("q-pet", "which small mammal is kept as a pet", "¿qué pequeño mamífero es una mascota?", "pin-cat"),
    ("q-star", "which star is the sun", "¿qué estrella es el sol?", "pin-sun"),
]


def tiny_catalog(home: Home, legacy: bool = True) -> None:
    """ESCI fragments (products, en/es) + 4 pins in 2 languages with questions and translations, split 80/20."""
    run_import(home, "esci")
    with Catalog.edit(home.catalog_db) as cat:
        cat.upsert_entities(
            {"id": pid, "kind": "pin", "lang": lang, "source": "tiny", "title": title, "description": text}
            for pid, lang, title, text in PINS
        )
        queries: list[dict[str, Any]] = []
        engagements: list[dict[str, Any]] = []
        for gid, en, es, pin in QUESTIONS:
            queries += [
                {"id": f"{gid}-en", "text": en, "lang": "en", "group_id": gid, "source": "tiny"},
                {"id": f"{gid}-es", "text": es, "lang": "es", "group_id": gid, "source": "tiny"},
            ]
            for lang in ("en", "es"):
                engagements.append({"query_id": f"{gid}-{lang}", "target_id": f"{pin}-{lang}", "target_type": "entity",
                                    "kind": "engaged", "grade": 1.0, "weight": 1.0, "source": "tiny"})
            engagements.append({"query_id": f"{gid}-es", "target_id": f"{gid}-en", "target_type": "query",
                                "kind": "translation", "grade": None, "weight": 1.0, "source": "tiny"})
        cat.upsert_queries(queries)
        cat.upsert_engagements(engagements)
        split_by_query(cat, dev=0.2, seed=0)
        if legacy:
            ids = [r["id"] for r in cat.entities("product")]
            rng = np.random.default_rng(0)
            cat.put_legacy_vectors("toy", ids, rng.normal(size=(len(ids), 12)).astype(np.float32), "random test space")


def tiny_config(**train: Any) -> RunConfig:
    """MiniLM with its top layer trained, a small entity tower, a few steps."""
    return override(
        preset("quick"),
        {
            "model": {
                "query": {"train_layers": 1},
                "entity": {"hash_buckets": 4096, "hash_dim": 32, "hidden": [64], "unigram_vocab": 2000,
                           "bigram_vocab": 2000, "trigram_vocab": 2000, "oov_buckets": 64},
            },
            "train": {"steps": 4, "batch_size": 24, "warmup_steps": 2, "final_eval": False,
                      "checkpoint_every_s": 1e9, "name": "tiny", **train},
        },
    )
