"""The lexical channel: IDF-weighted bags of stemmed words, hashed into a fixed sparse random projection.

A dense tower ranks by meaning and misses what only an exact word tells apart: brands, product lines, model
numbers ("delta breez", "encore azalea"). This channel adds that evidence to the SAME vector, so one ANN search
still answers a query: each text becomes a bag of its known tokens weighted like BM25's term weights, tf-idf with
idf = ln(1 + (N - df + 0.5) / (df + 0.5)) and tf damped as 1 + ln(tf); the bag is projected into `dim` dims by a
sparse random sign projection (each token adds +-1/sqrt(nonzeros) at `nonzeros` hashed coordinates), and
normalised. Dot products of two such vectors estimate the tf-idf cosine of the two bags (Johnson-Lindenstrauss),
with noise of about 1/sqrt(dim). The served vector is normalise([dense, sqrt(weight) * lexical]), so an inner
product ranks by dense cosine + weight * lexical cosine.

Nothing here is trained: the document frequencies come from the catalog when the model is built and are saved with
the checkpoint. Tokens: NFKC-lowercased words (\\w+), Snowball-stemmed (PyStemmer; English rules on every word, so
both sides of a match are stemmed alike whatever their language), and character bigrams inside words of scripts
written without spaces (Chinese, Japanese, Korean, Thai). A token the catalog never had is left out: it can match
nothing and would add only noise.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import math
import os
import re
import unicodedata
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from encoders.config import LexicalConfig
from encoders.errors import CheckpointError, ConfigError

FILE = "lexical.json.gz"
_WORD = re.compile(r"\w+")
_UNSPACED = re.compile(r"[\u0e00-\u0e7f\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")


class Tokenizer:
    """Text -> lexical tokens (stemmed words; character bigrams in unspaced scripts)."""

    def __init__(self, stemmer: str) -> None:
        self._stem = None
        if stemmer:
            try:
                import Stemmer
            except ImportError as exc:  # a core dependency; a broken install is the only way here
                raise ConfigError("the lexical channel needs PyStemmer: pip install PyStemmer") from exc
            if stemmer not in Stemmer.algorithms():
                raise ConfigError(f"unknown stemmer {stemmer!r}; PyStemmer has {Stemmer.algorithms()}")
            self._stem = Stemmer.Stemmer(stemmer)

    def __call__(self, text: str) -> list[str]:
        words: list[str] = []
        grams: list[str] = []
        for word in _WORD.findall(unicodedata.normalize("NFKC", text).lower()):
            if _UNSPACED.search(word):
                grams += [a + b for a, b in zip(word, word[1:], strict=False)] or [word]
            else:
                words.append(word)
        if self._stem is not None:
            words = self._stem.stemWords(words)
        return words + grams


class LexicalEncoder:
    """Texts -> (n, dim) float32 unit rows (a zero row when no token is known) in the hashed tf-idf space."""

    def __init__(self, cfg: LexicalConfig, n_docs: int, df: dict[str, int]) -> None:
        if cfg.dim <= 0 or cfg.nonzeros <= 0 or cfg.nonzeros > cfg.dim:
            raise ConfigError(f"lexical.dim must be positive and lexical.nonzeros in 1..dim, got {cfg}")
        self.cfg, self.n_docs, self.df = cfg, int(n_docs), df
        self.tokenize = Tokenizer(cfg.stemmer)
        self._slots: dict[str, tuple[NDArray[np.int64], NDArray[np.float32]]] = {}

    @property
    def dim(self) -> int:
        return self.cfg.dim

    @classmethod
    def build(cls, cfg: LexicalConfig, texts: Iterable[str]) -> LexicalEncoder:
        """Document frequencies over `texts` (one per entity)."""
        tok = Tokenizer(cfg.stemmer)
        df: Counter[str] = Counter()
        n = 0
        for text in texts:
            df.update(set(tok(text)))
            n += 1
        return cls(cfg, n, dict(df))

    def idf(self, token: str) -> float:
        c = self.df.get(token, 0)
        return math.log(1.0 + (self.n_docs - c + 0.5) / (c + 0.5)) if c else 0.0

    def _slot(self, token: str) -> tuple[NDArray[np.int64], NDArray[np.float32]]:
        """The token's hashed coordinates and signed values (the same on every machine and run)."""
        found = self._slots.get(token)
        if found is None:
            s = self.cfg.nonzeros
            raw = np.frombuffer(hashlib.blake2b(token.encode(), digest_size=4 * s).digest(), dtype="<u4")
            idx = (raw % np.uint32(self.cfg.dim)).astype(np.int64)
            sign = np.where(raw & np.uint32(1 << 31), -1.0, 1.0).astype(np.float32) / math.sqrt(s)
            found = (idx, sign)
            self._slots[token] = found
        return found

    def embed(self, texts: Sequence[str]) -> NDArray[np.float32]:
        out = np.zeros((len(texts), self.cfg.dim), np.float32)
        for i, text in enumerate(texts):
            counts = Counter(t for t in self.tokenize(text) if t in self.df)
            row = out[i]
            for token, tf in counts.items():
                idx, val = self._slot(token)
                np.add.at(row, idx, val * ((1.0 + math.log(tf)) * self.idf(token)))
            norm = float(np.linalg.norm(row))
            if norm > 0:
                row /= norm
        return out

    def combine(self, dense: NDArray[np.float32], texts: Sequence[str]) -> NDArray[np.float32]:
        """(n, d) dense rows (a unit vector, or unit blocks each scaled by the root of its weight) -> (n, d + dim)
        unit vectors whose dot products are proportional to dense score + weight * lexical cosine (for rows with
        known tokens)."""
        lex = self.embed(texts) * np.float32(math.sqrt(self.cfg.weight))
        out = np.concatenate([dense.astype(np.float32, copy=False), lex], axis=1)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out

    # ------------------------------------------------------------------ files
    def save(self, directory: str | os.PathLike[str]) -> None:
        with gzip.open(Path(directory) / FILE, "wt", encoding="utf-8") as f:
            json.dump({"n_docs": self.n_docs, "df": self.df}, f, ensure_ascii=False, sort_keys=True)

    @classmethod
    def load(cls, cfg: LexicalConfig, directory: str | os.PathLike[str]) -> LexicalEncoder:
        path = Path(directory) / FILE
        try:
            with gzip.open(path, "rt", encoding="utf-8") as f:
                data = json.load(f)
            return cls(cfg, int(data["n_docs"]), {str(k): int(v) for k, v in data["df"].items()})
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise CheckpointError(f"checkpoint {directory}: unreadable {FILE}: {exc}") from exc
