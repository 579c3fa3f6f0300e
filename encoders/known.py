"""Known positives: the items the training pairs already tie to a query or its translations, as batch masks.

A sampled softmax treats every other item of the batch as a negative. When the training data pairs a query
with several items (several relevant products), or a question and its translations with one paragraph in each
language, some of those "negatives" are positives of the same query group, and the loss would push them away:
an XQuAD question in German would learn to avoid the English copy of its own paragraph. `KnownPositives`
answers, for a batch of queries and a list of candidate items, which candidates are known positives of each
query's group, so the loss can mask them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch


class KnownPositives:
    """(group, item) pairs of one task, looked up as (B, N) bool masks."""

    def __init__(self, pairs: Iterable[tuple[str, str]], group_of: Mapping[str, str]) -> None:
        """`pairs` are (query id, item id); `group_of` maps a query id to its group (itself when absent)."""
        self.group_of = group_of
        self.group_idx: dict[str, int] = {}
        self.item_idx: dict[str, int] = {}
        codes = set()
        for q, item in pairs:
            g = self.group_idx.setdefault(group_of.get(q, q), len(self.group_idx))
            i = self.item_idx.setdefault(item, len(self.item_idx))
            codes.add((g, i))
        self.n_items = max(1, len(self.item_idx))
        self.codes = torch.tensor(sorted(g * self.n_items + i for g, i in codes), dtype=torch.int64)

    def mask(self, queries: Sequence[str], items: Sequence[str]) -> torch.Tensor:
        """(B, N) bool: True where items[j] is a known positive of queries[i]'s group."""
        g = torch.tensor([self.group_idx.get(self.group_of.get(q, q), -1) for q in queries], dtype=torch.int64)
        it = torch.tensor([self.item_idx.get(x, -1) for x in items], dtype=torch.int64)
        codes = g[:, None] * self.n_items + it[None, :]  # (B, N)
        valid = (g[:, None] >= 0) & (it[None, :] >= 0)  # unknown groups or items are never positives
        return torch.isin(codes, self.codes) & valid
