"""Pseudo-queries cut from an item's own text, as extra pairs for fitting compatibility heads.

A compatibility head learns a map from the query tower into a frozen legacy space from the train pairs alone; on
a small engagement log (XQuAD: ~860 questions per language over 2,880 paragraphs) it meets each item a handful
of times and fits those queries. The items' own text says much more about where each item sits: a sentence of a
paragraph, or a product's title, is a query whose answer is that item (the inverse cloze task of Lee et al.,
"Latent Retrieval for Weakly Supervised Open Domain Question Answering", ACL 2019). Cutting such pseudo-queries
from every item that has a legacy vector gives the head pairs over the whole space, in every language the
catalog holds. They come from item text only, never from queries, so no dev query leaks in.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterable, Sequence
from typing import Any

# Sentence ends of the scripts in the shipped data (Latin, Greek, Cyrillic, Arabic, Devanagari, CJK, Thai uses
# spaces between sentences); a split only needs to be good enough to give query-sized pieces.
_SENTENCE_END = re.compile(r"(?<=[.!?;。！？；؟।])\s+|(?<=[。！？；])|\n+")
# Shorter pieces ("Fig. 2", a lone number) name nothing. Counted in UTF-8 bytes, so that a Chinese sentence of
# six characters (18 bytes) counts as long as an English one of three words.
MIN_BYTES = 16
MAX_CHARS = 200  # about a query's 64 tokens


def pieces(text: str) -> list[str]:
    """Query-sized pieces of `text`: its sentences, long ones cut at MAX_CHARS on a space where there is one."""
    out: list[str] = []
    for sentence in _SENTENCE_END.split(text):
        s = " ".join(sentence.split())
        while len(s) > MAX_CHARS:
            cut = s.rfind(" ", 1, MAX_CHARS)
            cut = cut if cut > 0 else MAX_CHARS
            out.append(s[:cut])
            s = s[cut:].strip()
        if len(s.encode()) >= MIN_BYTES:
            out.append(s)
    return out


def pseudo_queries(
    rows: Iterable[dict[str, Any]], fields: Sequence[str], per_item: int, seed: int = 0
) -> list[tuple[str, str]]:
    """(text, item id) pairs: up to `per_item` pieces of each row's text fields, chosen at random (seeded).

    Args:
        rows: catalog entity rows (with "id" and text fields).
        fields: text fields to cut pieces from, in order.
        per_item: pieces per item at most (items with less text give fewer).
    """
    if per_item <= 0:
        return []
    rng = random.Random(seed)
    out: list[tuple[str, str]] = []
    for row in rows:
        found: list[str] = []
        for f in fields:
            value = row.get(f)
            if value:
                found.extend(pieces(str(value)))
        unique = list(dict.fromkeys(found))
        chosen = unique if len(unique) <= per_item else rng.sample(unique, per_item)
        out.extend((text, str(row["id"])) for text in chosen)
    return out
