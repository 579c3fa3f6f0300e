"""Entity text tokenizers (word unigrams, word bigrams, character trigrams) and their catalog-built vocabularies.

Every tokenizer owns a separate id range: its vocabulary first, then `oov_buckets` ids that out-of-vocabulary
tokens reach through a stable hash (crc32, not Python's salted `hash`). The concatenated ranges are the token
ids the hash-embedding bag consumes.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import unicodedata
import zlib
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

from encoders.errors import CheckpointError

KINDS: tuple[str, ...] = ("unigram", "bigram", "trigram")
_WORD = re.compile(r"\w+")
VOCAB_VERSION = 1


def words(text: str) -> list[str]:
    """Lower-cased, NFKC-normalised word tokens (Unicode letters, digits, underscore)."""
    return _WORD.findall(unicodedata.normalize("NFKC", text).lower())


def unigrams(ws: list[str]) -> list[str]:
    return ws


def bigrams(ws: list[str]) -> list[str]:
    return [f"{a} {b}" for a, b in zip(ws, ws[1:], strict=False)]


def trigrams(ws: list[str]) -> list[str]:
    """Character trigrams of each word with boundary marks, so 'ab' gives '#ab', 'ab#'."""
    out: list[str] = []
    for w in ws:
        s = f"#{w}#"
        out.extend(s[i : i + 3] for i in range(len(s) - 2))
    return out


_SPLITTERS = {"unigram": unigrams, "bigram": bigrams, "trigram": trigrams}


def stable_hash(token: str) -> int:
    return zlib.crc32(token.encode("utf-8"))


class EntityTokenizer:
    """Maps text to token ids of the three tokenizers, each in its own id range."""

    def __init__(self, vocabs: dict[str, list[str]], oov_buckets: int, max_tokens: int) -> None:
        if set(vocabs) != set(KINDS):
            raise CheckpointError(f"vocabularies must be {KINDS}, got {sorted(vocabs)}")
        self.vocabs = vocabs
        self.oov_buckets = oov_buckets
        self.max_tokens = max_tokens
        self._index = {k: {t: i for i, t in enumerate(v)} for k, v in vocabs.items()}
        self.offsets: dict[str, int] = {}
        start = 0
        for k in KINDS:
            self.offsets[k] = start
            start += len(vocabs[k]) + oov_buckets
        self.num_ids = start  # size of the whole id space

    # ------------------------------------------------------------------ building
    @classmethod
    def build(
        cls,
        texts: Iterable[str],
        sizes: dict[str, int],
        oov_buckets: int,
        min_count: int,
        max_tokens: int,
    ) -> EntityTokenizer:
        """Vocabularies of the most frequent tokens in `texts` (ties broken by the token, so it is deterministic)."""
        counts = {k: Counter[str]() for k in KINDS}
        for text in texts:
            ws = words(text)
            for k in KINDS:
                counts[k].update(_SPLITTERS[k](ws))
        vocabs: dict[str, list[str]] = {}
        for k in KINDS:
            kept = [(t, c) for t, c in counts[k].items() if c >= min_count]
            kept.sort(key=lambda tc: (-tc[1], tc[0]))
            vocabs[k] = [t for t, _ in kept[: sizes[k]]]
        return cls(vocabs, oov_buckets, max_tokens)

    # ------------------------------------------------------------------ encoding
    def token_id(self, kind: str, token: str) -> int:
        i = self._index[kind].get(token)
        if i is None:
            i = len(self.vocabs[kind]) + stable_hash(token) % self.oov_buckets
        return self.offsets[kind] + i

    def encode(self, text: str) -> NDArray[np.int64]:
        """Token ids of all three tokenizers (each cut at `max_tokens`), concatenated."""
        ws = words(text)
        ids: list[int] = []
        for k in KINDS:
            index, base, n_vocab = self._index[k], self.offsets[k], len(self.vocabs[k])
            for t in _SPLITTERS[k](ws)[: self.max_tokens]:
                i = index.get(t)
                if i is None:
                    i = n_vocab + stable_hash(t) % self.oov_buckets
                ids.append(base + i)
        return np.asarray(ids, dtype=np.int64)

    # ------------------------------------------------------------------ files
    def save(self, path: str | Path) -> None:
        """Write the vocabularies as JSON (temp file, then rename)."""
        data = {
            "version": VOCAB_VERSION,
            "oov_buckets": self.oov_buckets,
            "max_tokens": self.max_tokens,
            "vocabs": self.vocabs,
        }
        path = Path(path)
        fd, tmp = tempfile.mkstemp(prefix=".vocab-", dir=path.parent)
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, ensure_ascii=False)
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: str | Path) -> EntityTokenizer:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot read vocabularies {path}: {exc}") from exc
        if data.get("version") != VOCAB_VERSION:
            raise CheckpointError(f"vocabulary file {path} has version {data.get('version')}, expected 1")
        return cls(data["vocabs"], int(data["oov_buckets"]), int(data["max_tokens"]))
