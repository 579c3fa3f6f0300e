"""Baselines measured beside the model: BM25 (bm25s, plain and English-stemmed) and the untuned backbone."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from numpy.typing import NDArray
from tqdm import tqdm
from transformers import AutoModel, AutoTokenizer

from catalog import TEXT_FIELDS, text_of
from encoders.backbones import Backbone
from encoders.errors import EncoderError
from encoders.query import mean_pool
from encoders.retrieval import DenseRetriever, Pool, Pools
from encoders.textcache import memoised, store_name

log = logging.getLogger(__name__)


def pool_texts(pool: Pool, fields: Sequence[str] = TEXT_FIELDS) -> list[str]:
    if pool.kind == "query":
        return [str(r["text"]) for r in pool.rows]
    return [text_of(r, fields) for r in pool.rows]


class BM25Retriever:
    """bm25s (k1 1.5, b 0.75) over each pool's text; `stem=True` adds English Snowball stemming + stopwords."""

    def __init__(self, pools: Pools, stem: bool = False, k1: float = 1.5, b: float = 0.75) -> None:
        try:
            import bm25s
        except ImportError as exc:  # optional dependency of the `bench` extra
            raise EncoderError("BM25 needs bm25s: pip install 'omnisearchsage[bench]'") from exc
        self._bm25s = bm25s
        self.pools, self.stem, self.k1, self.b = pools, stem, k1, b
        self.name = "bm25-stemmed" if stem else "bm25"
        self._stemmer = None
        if stem:
            import Stemmer

            self._stemmer = Stemmer.Stemmer("english")
        self._indices: dict[tuple[str, str | None], tuple[object, list[str]]] = {}

    def _tokenize(self, texts: list[str]) -> object:
        return self._bm25s.tokenize(
            texts, stopwords="en" if self.stem else None, stemmer=self._stemmer, show_progress=False
        )

    def _index(self, kind: str, lang: str | None) -> tuple[object, list[str]]:
        key = (kind, lang)
        if key not in self._indices:
            pool = self.pools.get(kind)
            texts = pool_texts(pool)
            keep = [n for n in range(len(texts)) if lang is None or pool.langs[n] == lang]
            retriever = self._bm25s.BM25(k1=self.k1, b=self.b)
            retriever.index(self._tokenize([texts[n] for n in keep]), show_progress=False)
            self._indices[key] = (retriever, [pool.ids[n] for n in keep])
        return self._indices[key]

    def search(self, texts: list[str], kind: str, k: int, lang: str | None = None) -> list[list[str]]:
        retriever, ids = self._index(kind, lang)
        if not ids:
            return [[] for _ in texts]
        k = min(k, len(ids))
        docs, scores = retriever.retrieve(  # type: ignore[attr-defined]
            self._tokenize(texts), k=k, show_progress=False, n_threads=1
        )
        # bm25s ranks documents without any query term arbitrarily at score 0; drop them.
        return [
            [ids[d] for d, s in zip(row, srow, strict=True) if s > 0] for row, srow in zip(docs, scores, strict=True)
        ]


class PlainEncoder:
    """The untuned backbone, mean pooled and L2-normalised, with the backbone's query/passage prefixes."""

    def __init__(self, backbone: Backbone, max_length: int = 256, batch_size: int = 64) -> None:
        self.backbone = backbone
        self.tokenizer = AutoTokenizer.from_pretrained(backbone.path, local_files_only=True)
        self.model = AutoModel.from_pretrained(backbone.path, local_files_only=True).eval()
        self.max_length, self.batch_size = max_length, batch_size

    @torch.inference_mode()
    def encode(self, texts: list[str], passage: bool, progress: bool = False) -> NDArray[np.float32]:
        prefix = self.backbone.passage_prefix if passage else self.backbone.query_prefix
        max_length = self.max_length if passage else 64
        dim = int(self.model.config.hidden_size)
        out = np.zeros((len(texts), dim), np.float32)
        order = np.argsort([len(t) for t in texts], kind="stable")
        starts = range(0, len(texts), self.batch_size)
        for start in tqdm(starts, desc=f"embedding with {self.backbone.name}", disable=not progress, leave=False):
            idx = order[start : start + self.batch_size]
            enc = self.tokenizer(
                [prefix + texts[i] for i in idx],
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            )
            with torch.autocast("cpu", dtype=torch.bfloat16):
                hidden = self.model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"])
            pooled = mean_pool(hidden.last_hidden_state.float(), enc["attention_mask"])
            out[idx] = F.normalize(pooled, dim=-1).numpy()
        return out


def cached_passages(
    encoder: PlainEncoder, texts: list[str], cache_dir: Path | None, progress: bool = False, passage: bool = True
) -> NDArray[np.float32]:
    """Embeddings of texts, memoised on disk text by text per (backbone, max length, role) (encoders/textcache.py)."""
    store = store_name(encoder.backbone.name, encoder.max_length, "passages" if passage else "queries")
    return memoised(texts, lambda t: encoder.encode(t, passage=passage, progress=progress), cache_dir, store)


class BackboneRetriever(DenseRetriever):
    """Exact search with the untuned backbone on both sides (the paper's starting point)."""

    def __init__(self, pools: Pools, backbone: Backbone, cache_dir: Path | None = None, progress: bool = False):
        super().__init__(pools)
        self.encoder = PlainEncoder(backbone)
        self.cache_dir, self.progress = cache_dir, progress
        self.name = "backbone"

    def embed_pool(self, pool: Pool) -> tuple[list[str], NDArray[np.float32]]:
        texts = pool_texts(pool)
        if pool.kind == "query":  # related-search candidates are queries: embed them as queries
            return pool.ids, cached_passages(self.encoder, texts, self.cache_dir, self.progress, passage=False)
        return pool.ids, cached_passages(self.encoder, texts, self.cache_dir, self.progress)

    def embed_texts(self, texts: list[str], kind: str) -> NDArray[np.float32]:
        return self.encoder.encode(texts, passage=False)
