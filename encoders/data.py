"""Training pairs from the catalog: tasks, graded positives, and the train-split engaged-queries enrichment.

Grades: sources grade on their own scales (Home Depot 1-3, Crowdflower 1-4). A graded pair counts as a positive
when its grade is at least halfway up its source's observed range, (g - min) / (max - min) >= 0.5 by default:
Home Depot 2 ("somewhat relevant") and up, Crowdflower 3 and 4. Ungraded pairs (and sources whose grades are all
equal, e.g. XQuAD's 1.0) are positives.
"""

from __future__ import annotations

import logging
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from catalog import Catalog

log = logging.getLogger(__name__)

Row = dict[str, Any]


def grade_ranges(cat: Catalog) -> dict[str, tuple[float, float]]:
    """Observed (min, max) grade per engagement source."""
    sql = "select coalesce(source, ''), min(grade), max(grade) from engagements where grade is not null group by 1"
    return {str(s): (float(lo), float(hi)) for s, lo, hi in cat.db.execute(sql)}


def is_positive(row: Row, ranges: dict[str, tuple[float, float]], min_relative_grade: float) -> bool:
    grade = row.get("grade")
    if grade is None:
        return True
    lo, hi = ranges.get(str(row.get("source") or ""), (grade, grade))
    if hi <= lo:
        return True
    return (float(grade) - lo) / (hi - lo) >= min_relative_grade - 1e-9


@dataclass
class TaskData:
    """The training pairs of one task."""

    name: str  # "query->pin", "query->query", "query->legacy-<space>"
    target: str  # "entity", "query" or "legacy"
    kind: str  # entity kind, "query", or the legacy space name
    pairs: list[tuple[str, str]] = field(default_factory=list)  # (query id, target id)
    weight: float = 1.0  # share of each batch and of the loss


def split_exists(cat: Catalog) -> bool:
    return cat.db.execute("select count(*) from engagements where split = 'train'").fetchone()[0] > 0


def load_tasks(
    cat: Catalog,
    weights: dict[str, float],
    min_relative_grade: float,
    legacy_spaces: dict[str, list[str]] | None = None,
    split: str = "train",
    pivot: str = "",
) -> list[TaskData]:
    """Tasks with their positive pairs of one split; tasks weighted 0 or without pairs are left out (logged).

    Args:
        weights: task name -> weight; "query->legacy" applies to every legacy space without its own entry.
        legacy_spaces: space name -> ids that have a vector (pairs to other entities are not usable there).
        pivot: a language; each query is also paired with the entities its group's queries in that language
            engaged with (`pivot_pairs`). Empty: none.
    """
    ranges = grade_ranges(cat)
    by_kind: dict[str, list[tuple[str, str]]] = defaultdict(list)
    qq: list[tuple[str, str]] = []
    for row in cat.engagements(split=split):
        if not is_positive(row, ranges, min_relative_grade):
            continue
        if row["target_type"] == "query":
            qq.append((row["query_id"], row["target_id"]))
        elif row["entity_kind"]:
            by_kind[row["entity_kind"]].append((row["query_id"], row["target_id"]))
    if pivot:
        for kind, pairs in by_kind.items():
            extra = pivot_pairs(cat, pairs, pivot)
            pairs.extend(extra)
            if extra:
                log.info("query->%s: %d pairs to what the %r query of the group engaged with", kind, len(extra),
                         pivot)
    tasks: list[TaskData] = []
    for kind in sorted(set(by_kind) | {k for k in cat.entity_kinds()}):
        tasks.append(TaskData(f"query->{kind}", "entity", kind, sorted(set(by_kind.get(kind, [])))))
    tasks.append(TaskData("query->query", "query", "query", sorted(set(qq))))
    for space, ids in sorted((legacy_spaces or {}).items()):
        have = set(ids)
        pairs = sorted({p for kind_pairs in by_kind.values() for p in kind_pairs if p[1] in have})
        tasks.append(TaskData(f"query->legacy-{space}", "legacy", space, pairs))
    kept: list[TaskData] = []
    for task in tasks:
        w = weights.get(task.name)
        if w is None and task.target == "legacy":
            w = weights.get("query->legacy")
        if w is None:
            w = 1.0
            if task.pairs:
                log.info("task %s has no configured weight; using 1.0", task.name)
        task.weight = float(w)
        if not task.pairs:
            log.info("task %s skipped: no %s pairs in the catalog", task.name, split)
        elif task.weight <= 0:
            log.info("task %s skipped: weight 0", task.name)
        else:
            kept.append(task)
    return kept


def pivot_pairs(cat: Catalog, pairs: list[tuple[str, str]], pivot: str) -> list[tuple[str, str]]:
    """(query, entity) pairs that tie each query to what its group's `pivot`-language queries engaged with.

    A query and its translations (`queries.group_id`) ask the same thing, so an item engaged from one language
    answers the others too: an XQuAD question in Thai also gets the English paragraph its English twin engaged
    with, the cross-lingual pair a multilingual catalog's users would make. Only groups present in `pairs`
    (one split) contribute, so dev queries neither gain pairs nor lend theirs.
    """
    rows = cat.get_queries(sorted({q for q, _ in pairs}))
    group = {q: str(r["group_id"]) for q, r in rows.items() if r.get("group_id")}
    engaged: dict[str, set[str]] = defaultdict(set)  # group -> entities its pivot-language queries engaged with
    for q, item in pairs:
        if q in group and rows[q].get("lang") == pivot:
            engaged[group[q]].add(item)
    have = set(pairs)
    return [
        (q, item)
        for q in sorted(group)
        if rows[q].get("lang") != pivot
        for item in sorted(engaged.get(group[q], ()))
        if (q, item) not in have
    ]


def engaged_queries(
    cat: Catalog, min_relative_grade: float, max_per_entity: int, translations: bool = False
) -> dict[str, list[str]]:
    """Entity id -> texts of its positive TRAIN-split queries, best grade first (the paper's enrichment).

    Dev engagements never contribute, so the dev split stays unseen by the entity features too. With
    `translations`, the entity also gets the other queries of each engaged query's group (its translations,
    `queries.group_id`) that are train-split queries themselves, after its own queries: a pin engaged in one
    language then carries the words people use for it in the others, as a pin engaged from many locales does.
    """
    ranges = grade_ranges(cat)
    found: dict[str, list[tuple[float, str, str]]] = defaultdict(list)
    for row in cat.engagements(split="train", target_type="entity"):
        if is_positive(row, ranges, min_relative_grade):
            grade = float(row["grade"]) if row["grade"] is not None else 0.0
            found[row["target_id"]].append((-grade, row["query_id"], row["target_id"]))
    qids = sorted({q for rows in found.values() for _, q, _ in rows})
    rows_of = cat.get_queries(qids)
    texts = {qid: r["text"] for qid, r in rows_of.items()}
    members: dict[str, list[str]] = defaultdict(list)  # group -> its train queries' texts, by query id
    if translations:
        groups = {str(r["group_id"]) for r in rows_of.values() if r.get("group_id")}
        train = {str(r["query_id"]) for r in cat.engagements(split="train")}
        for r in sorted(cat.queries(), key=lambda r: str(r["id"])):
            if r.get("group_id") in groups and r["id"] in train and r.get("text"):
                members[str(r["group_id"])].append(str(r["text"]))
    out: dict[str, list[str]] = {}
    for eid, rows in found.items():
        rows.sort()
        seen: set[str] = set()
        chosen: list[str] = []
        own = [qid for _, qid, _ in rows]
        extra = [t for qid in own for t in members.get(str(rows_of.get(qid, {}).get("group_id") or ""), [])]
        for text in [texts.get(qid) for qid in own] + extra:
            if text and text not in seen:
                seen.add(text)
                chosen.append(text)
        out[eid] = chosen[:max_per_entity]
    return out
