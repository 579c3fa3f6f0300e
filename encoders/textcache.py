"""A disk memo of untuned-backbone text embeddings, looked up text by text.

The stand-in legacy space, the entity tower's text input at training time and the indexer's embedding of every
entity all embed the same catalog texts with the same untuned backbone, but in different groupings (a whole
kind at once, or chunks of 2,048 rows). Keying the cache by each text, not by the list, lets every one of them
reuse what another computed: a build after training embeds no entity text again.

Layout: per store (backbone, max length, role), pairs of files `<store>-<id>.npy` (float32 vectors) and
`<store>-<id>.keys.npy` (int64 keys of their texts, in the same order). The keys file is written last, so a
pair whose keys file exists is complete; a crash leaves at most an orphan vectors file.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

Encode = Callable[[list[str]], NDArray[np.float32]]


def text_keys(texts: Sequence[str]) -> NDArray[np.int64]:
    """64-bit keys of the exact texts (blake2b; a collision among a catalog's texts is vanishingly unlikely)."""
    return np.array([int.from_bytes(hashlib.blake2b(t.encode("utf-8"), digest_size=8).digest(), "little",
                                    signed=True) for t in texts], dtype=np.int64)


def store_name(backbone: str, max_length: int, role: str) -> str:
    tag = hashlib.sha256(f"{backbone}|{max_length}".encode()).hexdigest()[:16]
    return f"{role}-{tag}"


def _save(path: Path, array: np.ndarray) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".npy", dir=path.parent)
    with os.fdopen(fd, "wb") as f:
        np.save(f, array)
    os.replace(tmp, path)


def lookup(
    cache_dir: Path, store: str, keys: NDArray[np.int64]
) -> tuple[NDArray[np.float32] | None, NDArray[np.bool_]]:
    """(vectors with the found rows filled, found mask); vectors is None when nothing was found."""
    found = np.zeros(len(keys), dtype=bool)
    out: NDArray[np.float32] | None = None
    if not cache_dir.is_dir() or not len(keys):
        return out, found
    for key_file in sorted(cache_dir.glob(f"{store}-*.keys.npy")):
        vec_file = key_file.with_name(key_file.name[: -len(".keys.npy")] + ".npy")
        try:
            stored = np.load(key_file)
            vecs = np.load(vec_file, mmap_mode="r")
        except (OSError, ValueError):  # an unreadable pair is skipped: its texts are embedded again
            continue
        if not len(stored) or len(vecs) != len(stored):
            continue
        order = np.argsort(stored, kind="stable")
        pos = np.minimum(np.searchsorted(stored[order], keys), len(stored) - 1)
        hit = (stored[order][pos] == keys) & ~found
        if not hit.any():
            continue
        if out is None:
            out = np.zeros((len(keys), vecs.shape[1]), np.float32)
        rows = np.flatnonzero(hit)
        out[rows] = vecs[order[pos[rows]]]
        found |= hit
        if found.all():
            break
    return out, found


def memoised(texts: Sequence[str], encode: Encode, cache_dir: Path | None, store: str) -> NDArray[np.float32]:
    """Embeddings of `texts`: those in the store are read, the rest computed by `encode` (once per distinct text)
    and added to the store."""
    texts = list(texts)
    if cache_dir is None:
        return encode(texts)
    keys = text_keys(texts)
    out, found = lookup(cache_dir, store, keys)
    if found.all() and out is not None:
        return out
    missing = np.flatnonzero(~found)
    uniq_keys, first, inverse = np.unique(keys[missing], return_index=True, return_inverse=True)
    vecs = np.asarray(encode([texts[missing[i]] for i in first]), dtype=np.float32)
    if out is None:
        out = np.zeros((len(texts), vecs.shape[1]), np.float32)
    out[missing] = vecs[inverse]
    cache_dir.mkdir(parents=True, exist_ok=True)
    base = cache_dir / f"{store}-{uuid.uuid4().hex[:12]}"
    _save(base.with_name(base.name + ".npy"), vecs)
    _save(base.with_name(base.name + ".keys.npy"), uniq_keys)  # last: marks the pair complete
    return out
