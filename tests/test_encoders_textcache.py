"""The per-text embedding memo: any grouping of texts reuses what another computed; torn writes are ignored."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from encoders.textcache import memoised, store_name, text_keys


class CountingEncoder:
    """A deterministic stand-in for a backbone that records which texts it was asked to embed."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> np.ndarray:
        self.seen += texts
        return np.array([[len(t), sum(map(ord, t)) % 97, 1.0] for t in texts], np.float32)


def test_texts_are_embedded_once_whatever_the_grouping(tmp_path: Path) -> None:
    enc = CountingEncoder()
    store = store_name("minilm", 256, "passages")
    whole = [f"text {i}" for i in range(10)]
    first = memoised(whole, enc, tmp_path, store)
    assert sorted(enc.seen) == sorted(whole) and np.array_equal(first, enc(whole))
    enc.seen = enc.seen[:10]
    # chunks in another order, with repeats and two new texts: only the new ones are embedded
    chunk = ["text 7", "new a", "text 2", "text 7", "new b", "new a"]
    again = memoised(chunk, enc, tmp_path, store)
    assert sorted(enc.seen[10:]) == ["new a", "new b"]
    assert np.array_equal(again, enc(chunk))
    assert np.array_equal(memoised(whole[::-1], enc, tmp_path, store), first[::-1])
    assert len(enc.seen) == 10 + 2 + 6  # the direct call above only
    # another backbone or role is another store
    memoised(["text 1"], enc, tmp_path, store_name("e5", 256, "passages"))
    assert enc.seen[-1] == "text 1"


def test_a_pair_without_its_keys_file_is_not_read(tmp_path: Path) -> None:
    enc = CountingEncoder()
    store = store_name("minilm", 256, "passages")
    memoised(["a", "b"], enc, tmp_path, store)
    for keys in tmp_path.glob("*.keys.npy"):
        keys.unlink()  # as if the writer died between the two files
    out = memoised(["a", "b"], enc, tmp_path, store)
    assert sorted(enc.seen) == ["a", "a", "b", "b"] and out.shape == (2, 3)
    # a keys file that disagrees with its vectors is skipped too
    (keys,) = tmp_path.glob("*.keys.npy")
    np.save(keys, text_keys(["a", "b", "c"]))
    n = len(enc.seen)
    memoised(["a"], enc, tmp_path, store)
    assert enc.seen[n:] == ["a"]


def test_many_pairs_are_merged_into_one_and_old_orphans_go(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os
    import time

    from encoders import textcache

    monkeypatch.setattr(textcache, "COMPACT_AT", 4)
    enc = CountingEncoder()
    store = store_name("minilm", 256, "passages")
    orphan = tmp_path / f"{store}-deadbeef0000.npy"
    np.save(orphan, np.zeros((1, 3), np.float32))
    os.utime(orphan, (time.time() - 2 * textcache.ORPHAN_AGE_S,) * 2)
    fresh = tmp_path / f"{store}-feedface0000.npy"  # a write in progress elsewhere: too young to remove
    np.save(fresh, np.zeros((1, 3), np.float32))
    other = store_name("e5", 256, "passages")
    memoised(["x"], enc, tmp_path, other)
    for i in range(5):  # the fifth pair triggers the merge
        memoised([f"t{i}", "shared"], enc, tmp_path, store)
    assert len(list(tmp_path.glob(f"{store}-*.keys.npy"))) == 1
    assert not orphan.exists() and fresh.exists()
    assert len(list(tmp_path.glob(f"{other}-*.keys.npy"))) == 1  # other stores are left alone
    n = len(enc.seen)
    texts = ["shared", *(f"t{i}" for i in range(5))]
    out = memoised(texts, enc, tmp_path, store)
    assert len(enc.seen) == n  # everything still found after the merge
    assert np.array_equal(out, enc(texts))


def test_compaction_skips_while_another_process_holds_the_lock(tmp_path: Path) -> None:
    import fcntl

    from encoders.textcache import compact

    enc = CountingEncoder()
    store = store_name("minilm", 256, "passages")
    for t in ("a", "b", "c"):
        memoised([t], enc, tmp_path, store)
    with open(tmp_path / f".{store}.lock", "a+") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        # flock locks belong to the open file: a second open in this process contends like another process
        assert compact(tmp_path, store) == 0
    assert len(list(tmp_path.glob(f"{store}-*.keys.npy"))) == 3
    assert compact(tmp_path, store) == 3
    assert len(list(tmp_path.glob(f"{store}-*.keys.npy"))) == 1
