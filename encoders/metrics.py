"""Ranking metrics of one query (Recall@k, nDCG@10 with graded gains, MRR@10) and their means."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

METRICS: tuple[str, ...] = ("nDCG@10", "Recall@10", "Recall@100", "MRR@10")


def ndcg_at(ranked: Sequence[str], gains: dict[str, float], k: int = 10) -> float:
    """DCG of the top k (linear gains, unjudged = 0) over the DCG of the ideal order of all judged gains."""
    dcg = sum(gains.get(doc, 0.0) / math.log2(i + 2) for i, doc in enumerate(ranked[:k]))
    ideal = sorted(gains.values(), reverse=True)[:k]
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg if idcg > 0 else 0.0


def recall_at(ranked: Sequence[str], relevant: set[str], k: int) -> float:
    if not relevant:
        return 0.0
    return len(relevant.intersection(ranked[:k])) / len(relevant)


def mrr_at(ranked: Sequence[str], relevant: set[str], k: int = 10) -> float:
    for i, doc in enumerate(ranked[:k]):
        if doc in relevant:
            return 1.0 / (i + 1)
    return 0.0


def query_metrics(ranked: Sequence[str], gains: dict[str, float], relevant: set[str]) -> dict[str, float]:
    """All metrics of one query. `gains` are the judged grades (nDCG), `relevant` the positives (recall, MRR)."""
    return {
        "nDCG@10": ndcg_at(ranked, gains, 10),
        "Recall@10": recall_at(ranked, relevant, 10),
        "Recall@100": recall_at(ranked, relevant, 100),
        "MRR@10": mrr_at(ranked, relevant, 10),
    }


def mean(rows: Iterable[dict[str, float]]) -> dict[str, float]:
    """Metric-wise mean of per-query dicts (empty input -> empty dict)."""
    rows = list(rows)
    if not rows:
        return {}
    return {m: sum(r[m] for r in rows) / len(rows) for m in rows[0]}
