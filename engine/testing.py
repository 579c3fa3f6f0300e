"""Small real artifacts for engine tests and benchmarks: a tiny catalog, vector generations, a live server."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from catalog import Catalog, Home
from engine.client import EngineClient
from engine.config import EngineConfig
from engine.server import EngineServer, create_server

if TYPE_CHECKING:
    from indexer.manifest import GenerationRecord

# Entities of the tiny catalog: (id, kind, lang, title). Ids double as the ids of vector generations built by
# `catalog_vector_generation`, so hydration and filters have real rows to read.
TINY_ENTITIES: tuple[tuple[str, str, str, str], ...] = (
    ("p-en-1", "pin", "en", "Red running shoes on a wooden floor"),
    ("p-en-2", "pin", "en", "Chocolate chip cookie recipe"),
    ("p-en-3", "pin", "en", "Nikola Tesla and the induction motor"),
    ("p-de-1", "pin", "de", "Rote Laufschuhe auf einem Holzboden"),
    ("p-de-2", "pin", "de", "Rezept für Schokoladenkekse"),
    ("p-es-1", "pin", "es", "Zapatillas rojas para correr"),
    ("p-es-2", "pin", "es", "Receta de galletas con chocolate"),
    ("d-en-1", "product", "en", "Cordless drill with two batteries"),
    ("d-en-2", "product", "en", "Garden hose, 50 ft, green"),
    ("d-es-1", "product", "es", "Taladro inalámbrico con batería"),
    ("d-es-2", "product", "es", "Manguera de jardín verde"),
    ("s-en-1", "doc", "en", "Vitamin D supplementation and fracture risk"),
)
TINY_QUERIES: tuple[tuple[str, str, str], ...] = (
    ("q-1", "red shoes", "en"),
    ("q-2", "cookie recipe", "en"),
    ("q-3", "rote schuhe", "de"),
    ("q-4", "taladro", "es"),
)


def write_tiny_catalog(home: Home, legacy_dim: int = 0, seed: int = 0) -> None:
    """The entities and queries above; with `legacy_dim`, a legacy space `pinsage` over every entity."""
    with Catalog.edit(home.catalog_db) as cat:
        cat.upsert_entities(
            {"id": i, "kind": k, "lang": lang, "source": "test", "title": t, "description": f"{t}."}
            for i, k, lang, t in TINY_ENTITIES
        )
        cat.upsert_queries(
            {"id": i, "text": t, "lang": lang, "group_id": i, "source": "test"} for i, t, lang in TINY_QUERIES
        )
        if legacy_dim:
            ids = [e[0] for e in TINY_ENTITIES]
            cat.put_legacy_vectors("pinsage", ids, unit_vectors(len(ids), legacy_dim, seed), "test vectors")


def unit_vectors(n: int, dim: int, seed: int = 0) -> NDArray[np.float32]:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dim)).astype(np.float32)  # (n, dim)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def vector_generation(
    home: Home,
    ids: list[str],
    vectors: NDArray[np.float32],
    index: str = "vectors",
    backend: str = "flat",
    shards: int | None = 2,
    publish: bool = True,
) -> GenerationRecord:
    """Build (and publish) a generation from vectors a user brought: no checkpoint, space "vectors".

    `shards` defaults to 2 so that tests exercise the merge over shards; None leaves it to the indexer (one
    shard per `indexer.sharding.DEFAULT_SHARD_VECTORS`).
    """
    from indexer.build import rebuild

    inputs = home.root / "inputs"
    inputs.mkdir(parents=True, exist_ok=True)
    tag = f"{index}-{len(list(inputs.iterdir()))}"
    vec_path, ids_path = inputs / f"{tag}.npy", inputs / f"{tag}.ids.json"
    np.save(vec_path, np.ascontiguousarray(vectors, dtype=np.float32))
    ids_path.write_text(json.dumps(ids))
    return rebuild(home, indices=[index], vectors=vec_path, ids=ids_path, backend=backend, shards=shards,
                   publish=publish, gate=0.0, progress=False, metric="ip")


def loopback_config(home: Home, **overrides: Any) -> EngineConfig:
    """A config for loopback tests: free ports, fast polling, small pools, a fixed admin token."""
    base = EngineConfig(
        home=home, port=0, metrics_port=None, workers=16, poll_interval_s=0.1, admin_token="test-token",
        warmup_queries=1, grace_s=2.0, cache_ttl_s=60.0,
        encoder_bf16=False,  # exact fp32, so tests can compare with the checkpoint's own embeddings
    )
    return replace(base, **overrides)


@contextlib.contextmanager
def running_server(
    config: EngineConfig, wait_serving: bool = True, timeout: float = 60.0
) -> Iterator[tuple[EngineServer, EngineClient]]:
    """A started server and a client with the admin token; stopped (grace 0) on exit."""
    server, port = create_server(config)
    server.start()
    client = EngineClient(f"127.0.0.1:{port}", admin_token=config.resolve_admin_token(), timeout=30.0)
    try:
        if wait_serving:
            client.wait_until_serving(timeout)
        yield server, client
    finally:
        client.close()
        server.stop(0).wait(15)


def tiny_checkpoint(home: Home, name: str = "tiny", seed: int = 0, legacy: dict[str, int] | None = None) -> str:
    """An untrained but real OmniSearchSage checkpoint (MiniLM backbone, small entity tower); returns its dir.

    Untrained weights embed as fast as trained ones, so this is what engine tests and server benchmarks need;
    `seed` changes the projection (another checkpoint id).
    """
    from encoders.backbones import resolve_backbone
    from encoders.config import EntityConfig, ModelConfig
    from encoders.model import OmniSearchSage
    from encoders.tokenize import EntityTokenizer

    sizes = {"unigram": 512, "bigram": 512, "trigram": 512}
    ec = EntityConfig(
        unigram_vocab=sizes["unigram"], bigram_vocab=sizes["bigram"], trigram_vocab=sizes["trigram"],
        oov_buckets=64, hash_buckets=2048, hash_dim=32, hidden=(64,), min_count=1, engaged_queries=False,
    )
    with Catalog(home.catalog_db, read_only=True) as cat:
        texts = [str(r["title"]) for r in cat.entities() if r.get("title")]
    tokenizer = EntityTokenizer.build(texts, sizes, ec.oov_buckets, ec.min_count, ec.max_tokens_per_field)
    model = OmniSearchSage(ModelConfig(entity=ec, seed=seed), resolve_backbone("minilm"), tokenizer,
                           legacy=legacy or {})
    out = home.checkpoints / name
    model.save(out)
    return str(out)


def model_generation(home: Home, checkpoint: str, backend: str = "flat", shards: int = 2) -> GenerationRecord:
    """Embed the catalog with `checkpoint` and publish every index it supports (pins, products, ..., legacy)."""
    from indexer.build import rebuild

    return rebuild(home, checkpoint=checkpoint, backend=backend, shards=shards, gate=0.0, progress=False)
