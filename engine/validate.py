"""Request checks of the query path: text normalisation, vectors, k and filters."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from engine.errors import InvalidRequest

_SPACES = re.compile(r"\s+")
_LANG = re.compile(r"^[A-Za-z]{2,3}([-_][A-Za-z0-9]{2,8})*$")


def normalise_text(text: str, max_chars: int) -> str:
    """NFKC, whitespace collapsed and stripped: the cache key of a query text.

    Case is kept: cased backbones (XLM-R, e5) embed "Apple" and "apple" differently, and an uncased tokenizer
    lowercases on its own.

    Raises:
        InvalidRequest: empty after normalisation, or longer than `max_chars`.
    """
    if len(text) > 4 * max_chars:  # refuse before spending time on normalising megabytes
        raise InvalidRequest(f"text has {len(text)} characters; the limit is {max_chars}")
    norm = _SPACES.sub(" ", unicodedata.normalize("NFKC", text)).strip()
    if not norm:
        raise InvalidRequest("text is empty")
    if len(norm) > max_chars:
        raise InvalidRequest(f"text has {len(norm)} characters; the limit is {max_chars}")
    return norm


def check_k(k: int, max_k: int) -> int:
    if k <= 0 or k > max_k:
        raise InvalidRequest(f"k must be between 1 and {max_k}, got {k}")
    return int(k)


def check_vector(values: Sequence[float] | NDArray[Any], dim: int, index: str) -> NDArray[np.float32]:
    """The query vector as float32 (1, dim).

    Raises:
        InvalidRequest: wrong dimension, NaN or infinity.
    """
    xq = query_matrix(values, dim, index)
    if not np.isfinite(xq).all():
        raise InvalidRequest("the vector holds NaN or infinite values")
    return xq


def query_matrix(values: Sequence[float] | NDArray[Any], dim: int, index: str) -> NDArray[np.float32]:
    """The query vector as float32 (1, dim), its dimension checked; NaN and infinity are left to the index.

    Every index search checks its queries for NaN and infinity (`indexer.backends.base.as_vectors`) and the
    engine turns that error into INVALID_ARGUMENT, so checking here as well would scan each query twice.

    Raises:
        InvalidRequest: wrong dimension.
    """
    xq = np.asarray(values, dtype=np.float32).reshape(1, -1)  # (1, d)
    if xq.shape[1] != dim:
        raise InvalidRequest(f"index {index!r} has dimension {dim}, the vector has {xq.shape[1]}")
    return xq


def check_filters(
    kinds: Sequence[str],
    languages: Sequence[str],
    known_kinds: frozenset[str] | None,
    known_languages: frozenset[str] | None,
    index_kind: str | None,
    index: str,
) -> tuple[frozenset[str], frozenset[str]]:
    """Validated filter sets (empty = no constraint).

    Raises:
        InvalidRequest: a malformed or unknown kind or language, a kind the index cannot hold, or filters while
            no catalog is available to check hits against.
    """
    ks = frozenset(k.strip() for k in kinds)
    ls = frozenset(lang.strip() for lang in languages)
    if not ks and not ls:
        return ks, ls
    if known_kinds is None or known_languages is None:
        raise InvalidRequest("filters need the catalog, which this server does not read")
    bad_lang = sorted(x for x in ls if not _LANG.match(x))
    if bad_lang:
        raise InvalidRequest(f"malformed language code(s) {bad_lang}; use codes like 'en' or 'pt-BR'")
    unknown_lang = sorted(ls - known_languages)
    if unknown_lang:
        raise InvalidRequest(
            f"unknown language(s) {unknown_lang}; the catalog has {sorted(known_languages)}"
        )
    unknown = sorted(ks - known_kinds)
    if unknown:
        raise InvalidRequest(f"unknown kind(s) {unknown}; the catalog has {sorted(known_kinds)}")
    if ks and index_kind and index_kind not in ks:
        raise InvalidRequest(f"index {index!r} holds only kind {index_kind!r}; filter asked for {sorted(ks)}")
    return ks, ls
