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


def ahead_in_every_group(
    groups: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]], resamples: int = 2000, seed: int = 0
) -> dict[str, dict[str, Any]]:
    """Is system a ahead of b (mean difference > 0, ties not) in every group, and how often on a new sample?

    `groups` is {group: {metric: (a scores, b scores)}}, e.g. XQuAD languages and their Recall@1 columns.
    Per metric and for all metrics at once ("all"): `observed` (ahead everywhere on these queries),
    `behind` (groups where it is not) and `probability`, the share of bootstrap resamples (each group's queries
    resampled independently, the same draw for every metric of a group) in which it is ahead everywhere:
    the chance a held-back sample of the same size shows it too, if these queries are the population. A claim
    over many groups of ~100 queries can fail on a new sample while every group's own interval looks fine.
    """
    rng = np.random.default_rng(seed)
    metrics = sorted({m for cols in groups.values() for m in cols})
    ahead = {m: np.ones(resamples, bool) for m in metrics}
    behind: dict[str, list[str]] = {m: [] for m in metrics}
    for group, cols in sorted(groups.items()):
        n = len(next(iter(cols.values()))[0])
        if not n:
            continue
        idx = rng.integers(0, n, size=(resamples, n))
        for m, (a, b) in cols.items():
            d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
            if len(d) != n:
                raise ValueError(f"group {group!r}: metric {m!r} has {len(d)} queries, another has {n}")
            ahead[m] &= d[idx].mean(axis=1) > 0
            if d.mean() <= 0:
                behind[m].append(group)
    out: dict[str, dict[str, Any]] = {
        m: {"observed": not behind[m], "behind": behind[m], "probability": float(ahead[m].mean())} for m in metrics
    }
    if metrics:
        every = np.logical_and.reduce([ahead[m] for m in metrics])
        lost = sorted({g for m in metrics for g in behind[m]})
        out["all"] = {"observed": not lost, "behind": lost, "probability": float(every.mean())}
    return out


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
        groups: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]] = {}
        for lang, ref_lang in ref.get("languages", {}).items():
            oth_hits = oth.get("languages", {}).get(lang, {}).get(HITS, {})
            pairs = {m: (hits, oth_hits[m]) for m, hits in ref_lang.get(HITS, {}).items() if m in oth_hits}
            if pairs:
                groups[lang] = pairs
                langs[lang] = {m: paired_difference(a, b) for m, (a, b) in pairs.items()}
        if langs:
            entry["languages"] = langs
            entry["every_language"] = ahead_in_every_group(groups)
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
