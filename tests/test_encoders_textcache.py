"""The per-text embedding memo: any grouping of texts reuses what another computed; torn writes are ignored."""

from __future__ import annotations

from pathlib import Path

import numpy as np

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
