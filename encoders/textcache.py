"""A disk memo of untuned-backbone text embeddings, looked up text by text.

The stand-in legacy space, the entity tower's text input at training time and the indexer's embedding of every
entity all embed the same catalog texts with the same untuned backbone, but in different groupings (a whole
kind at once, or chunks of 2,048 rows). Keying the cache by each text, not by the list, lets every one of them
reuse what another computed: a build after training embeds no entity text again.

Layout: per store (backbone, max length, role), pairs of files `<store>-<id>.npy` (float32 vectors) and
`<store>-<id>.keys.npy` (int64 keys of their texts, in the same order). The keys file is written last, so a
pair whose keys file exists is complete; a crash leaves at most an orphan vectors file.

Every call that embeds something adds a pair, and a lookup reads every pair of its store, so once a store holds
more than `COMPACT_AT` pairs the writer merges them into one (under a lock; another writer skips) and removes
orphan files older than `ORPHAN_AGE_S`.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
from numpy.typing import NDArray

log = logging.getLogger(__name__)

Encode = Callable[[list[str]], NDArray[np.float32]]

COMPACT_AT = 32  # pairs per store before they are merged into one
ORPHAN_AGE_S = 3600.0  # a vectors file without keys this old is a crashed write, not one in progress


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
        vec_file = _vectors_of(key_file)
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
    if len(list(cache_dir.glob(f"{store}-*.keys.npy"))) > COMPACT_AT:
        compact(cache_dir, store)
    return out


def _vectors_of(key_file: Path) -> Path:
    return key_file.with_name(key_file.name[: -len(".keys.npy")] + ".npy")


def compact(cache_dir: Path, store: str) -> int:
    """Merge the store's pairs into one and drop orphan vectors files; returns the pairs merged (0: skipped).

    Safe beside readers and writers: the merged pair is complete before any old pair goes, and an old pair loses
    its keys file first, so a reader either reads it whole or skips it (and embeds those texts again).
    """
    lock_path = cache_dir / f".{store}.lock"
    with open(lock_path, "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:  # another process is compacting this store
            return 0
        pairs = sorted(cache_dir.glob(f"{store}-*.keys.npy"))
        keys_parts: list[NDArray[np.int64]] = []
        vec_parts: list[NDArray[np.float32]] = []
        merged: list[Path] = []
        for key_file in pairs:
            try:
                k, v = np.load(key_file), np.load(_vectors_of(key_file))
            except (OSError, ValueError):
                continue
            if len(k) and len(k) == len(v) and (not vec_parts or v.shape[1] == vec_parts[0].shape[1]):
                keys_parts.append(k)
                vec_parts.append(np.asarray(v, np.float32))
                merged.append(key_file)
        count = len(merged) if len(merged) > 1 else 0
        if count:
            all_keys, first = np.unique(np.concatenate(keys_parts), return_index=True)
            base = cache_dir / f"{store}-{uuid.uuid4().hex[:12]}"
            _save(base.with_name(base.name + ".npy"), np.concatenate(vec_parts)[first])
            _save(base.with_name(base.name + ".keys.npy"), all_keys)
            for key_file in merged:
                key_file.unlink(missing_ok=True)  # keys first: the pair stops being read
                _vectors_of(key_file).unlink(missing_ok=True)
        now = time.time()
        for vec_file in cache_dir.glob(f"{store}-*.npy"):
            if vec_file.name.endswith(".keys.npy"):
                continue
            keys_file = vec_file.with_name(vec_file.name[: -len(".npy")] + ".keys.npy")
            try:
                if not keys_file.exists() and now - vec_file.stat().st_mtime > ORPHAN_AGE_S:
                    vec_file.unlink()
            except OSError:
                pass
        log.info("embedding cache %s: %d pairs merged", store, count)
        return count
