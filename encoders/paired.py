"""Paired comparison of two systems on the same queries: mean difference, bootstrap interval, wins and losses.

Two systems scored on the same dev queries differ by far less than either's spread over queries, so their
per-query differences are what to resample (a paired bootstrap, Efron and Tibshirani 1993, ch. 16; the usual
test of IR evaluation, Sakai 2006). A per-language Recall@1 over ~95 questions moves by 0.011 per question: the
interval says whether a lead or a loss of a question or two is more than the sample's noise. The percentile
interval comes from a fixed seed, so a table is reproducible.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from encoders.metrics import METRICS

ROWS = "_rows"  # per-query metric rows an evaluation keeps for this comparison (evaluate_system keep_rows)
HITS = "_hits"  # per-language {metric: per-query 0/1} of the cross-lingual Recall@1 columns


def paired_difference(
    a: Sequence[float], b: Sequence[float], resamples: int = 2000, level: float = 0.95, seed: int = 0
) -> dict[str, float | int]:
    """Mean of a - b over paired queries with a percentile bootstrap interval, plus per-query wins and losses.

    Raises:
        ValueError: the two lists differ in length or are empty, or level is not in (0, 1).
    """
    if len(a) != len(b) or not len(a):
        raise ValueError(f"paired scores must be non-empty and of one length, got {len(a)} and {len(b)}")
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    rng = np.random.default_rng(seed)
    means = d[rng.integers(0, len(d), size=(resamples, len(d)))].mean(axis=1)
    tail = (1.0 - level) / 2.0
    lo, hi = np.quantile(means, [tail, 1.0 - tail])
    return {"diff": float(d.mean()), "lo": float(lo), "hi": float(hi), "wins": int((d > 0).sum()),
            "losses": int((d < 0).sum()), "queries": len(d)}


def paired_table(reference: dict[str, Any], other: dict[str, Any]) -> dict[str, Any]:
    """{task: {metric: paired_difference, "languages": {lang: {metric: ...}}}} of two systems' evaluations.

    Both must have been evaluated with per-query rows kept (`evaluate_system(keep_rows=True)`) on the same
    tasks; tasks that only one of them has are left out.
    """
    out: dict[str, Any] = {}
    for task, ref in reference.get("tasks", {}).items():
        oth = other.get("tasks", {}).get(task)
        if oth is None or ROWS not in ref or ROWS not in oth:
            continue
        entry: dict[str, Any] = {
            m: paired_difference([r[m] for r in ref[ROWS]], [r[m] for r in oth[ROWS]]) for m in METRICS
        }
        langs: dict[str, Any] = {}
        for lang, ref_lang in ref.get("languages", {}).items():
            oth_hits = oth.get("languages", {}).get(lang, {}).get(HITS, {})
            cols = {m: paired_difference(hits, oth_hits[m]) for m, hits in ref_lang.get(HITS, {}).items()
                    if m in oth_hits}
            if cols:
                langs[lang] = cols
        if langs:
            entry["languages"] = langs
        out[task] = entry
    return out


def strip_rows(results: dict[str, dict[str, Any]]) -> None:
    """Drop the kept per-query rows from every system's evaluation, in place."""
    for system in results.values():
        for entry in system.get("tasks", {}).values():
            entry.pop(ROWS, None)
            for lang in entry.get("languages", {}).values():
                lang.pop(HITS, None)


def cell(p: dict[str, float | int]) -> str:
    """`+0.011 [-0.032, +0.053] 6/5`: difference, interval, queries won / lost."""
    return f"{p['diff']:+.3f} [{p['lo']:+.3f}, {p['hi']:+.3f}] {p['wins']}/{p['losses']}"
