"""Retrieval quality on the dev split (or BEIR/TREC files): per task, per language, for several systems.

A task is (target kind, engagement source), e.g. `query->product/homedepot`. Each dev query with at least one
positive target is searched exactly over ALL candidates of the kind. Gains for nDCG@10 are the judged grades as
given (1.0 for ungraded pairs); Recall and MRR count positives (see encoders/data.py for the grade rule).
Task-level numbers are means over queries; a system's top-level numbers are means over its tasks.

XQuAD-style tasks (targets `<id>-<lang>` in the query's language) also get Recall@1 against paragraphs of the
query's own language ("same-language") and against the English version of the target ("to-en").
"""

from __future__ import annotations

import csv
import json
import logging
import random
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tqdm import tqdm

from catalog import Catalog
from encoders.data import grade_ranges, is_positive
from encoders.errors import EvaluationError
from encoders.metrics import METRICS, mean, query_metrics
from encoders.paired import HITS, ROWS, cell
from encoders.retrieval import Pools, Retriever

log = logging.getLogger(__name__)

SAME = "Recall@1 same-language"
TO_EN = "Recall@1 to-en"


@dataclass
class EvalTask:
    """Dev queries of one task with their judgments."""

    name: str  # "query->product/homedepot"
    kind: str  # entity kind searched, or "query"
    qids: list[str] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    langs: list[str] = field(default_factory=list)
    gains: list[dict[str, float]] = field(default_factory=list)  # judged grade per target
    relevant: list[set[str]] = field(default_factory=list)  # positive targets

    def subset(self, n: int, seed: int = 0) -> EvalTask:
        if len(self.qids) <= n:
            return self
        keep = sorted(random.Random(seed).sample(range(len(self.qids)), n))
        return EvalTask(
            self.name,
            self.kind,
            [self.qids[i] for i in keep],
            [self.texts[i] for i in keep],
            [self.langs[i] for i in keep],
            [self.gains[i] for i in keep],
            [self.relevant[i] for i in keep],
        )


def _make_tasks(
    cat: Catalog, rows: Iterable[dict[str, Any]], min_relative_grade: float, only: Sequence[str] | None
) -> list[EvalTask]:
    ranges = grade_ranges(cat)
    judged: dict[tuple[str, str], dict[str, dict[str, float]]] = defaultdict(lambda: defaultdict(dict))
    positive: dict[tuple[str, str], dict[str, set[str]]] = defaultdict(lambda: defaultdict(set))
    for row in rows:
        kind = "query" if row["target_type"] == "query" else row["entity_kind"]
        if not kind:
            continue  # the target entity is not in the catalog
        key = (kind, str(row.get("source") or ""))
        grade = float(row["grade"]) if row["grade"] is not None else 1.0
        judged[key][row["query_id"]][row["target_id"]] = grade
        if is_positive(row, ranges, min_relative_grade):
            positive[key][row["query_id"]].add(row["target_id"])
    tasks: list[EvalTask] = []
    for (kind, source), by_query in sorted(judged.items()):
        name = f"query->{kind}/{source}" if source else f"query->{kind}"
        if only and not any(o in name for o in only):
            continue
        qids = sorted(q for q in by_query if positive[(kind, source)].get(q))
        queries = cat.get_queries(qids)
        task = EvalTask(name, kind)
        for qid in qids:
            if qid in queries:
                task.qids.append(qid)
                task.texts.append(str(queries[qid]["text"]))
                task.langs.append(str(queries[qid].get("lang") or ""))
                task.gains.append(dict(by_query[qid]))
                task.relevant.append(positive[(kind, source)][qid])
        if task.qids:
            tasks.append(task)
    return tasks


def dev_tasks(cat: Catalog, min_relative_grade: float = 0.5, only: Sequence[str] | None = None) -> list[EvalTask]:
    """Tasks of the dev split; `only` keeps tasks whose name contains one of the strings."""
    if cat.db.execute("select count(*) from engagements where split = 'dev'").fetchone()[0] == 0:
        raise EvaluationError("the catalog has no dev split; run `catalog split --by query --dev 0.1 --seed 0`")
    return _make_tasks(cat, cat.engagements(split="dev"), min_relative_grade, only)


def beir_task(queries_path: Path, qrels_path: Path, kind: str) -> EvalTask:
    """A task from BEIR files: queries.jsonl ({"_id", "text"}) and qrels.tsv (query-id, corpus-id, score).

    Targets with score > 0 are positives; the scores are the nDCG gains.
    """
    texts: dict[str, str] = {}
    langs: dict[str, str] = {}
    try:
        with open(queries_path, encoding="utf-8") as f:
            for line in f:
                if line.strip():
                    obj = json.loads(line)
                    texts[str(obj["_id"])] = str(obj["text"])
                    langs[str(obj["_id"])] = str(obj.get("lang") or obj.get("metadata", {}).get("lang") or "")
        gains: dict[str, dict[str, float]] = defaultdict(dict)
        with open(qrels_path, encoding="utf-8") as f:
            for n, row in enumerate(csv.reader(f, delimiter="\t"), 1):
                if not row or (n == 1 and not _is_number(row[-1])):
                    continue  # header line
                gains[row[0]][row[1]] = float(row[-1])
    except (OSError, ValueError, KeyError, IndexError) as exc:
        raise EvaluationError(f"cannot read BEIR files: {exc}") from exc
    task = EvalTask(f"beir/{queries_path.stem}->{kind}", kind)
    for qid in sorted(gains):
        rel = {t for t, g in gains[qid].items() if g > 0}
        if qid in texts and rel:
            task.qids.append(qid)
            task.texts.append(texts[qid])
            task.langs.append(langs[qid])
            task.gains.append(gains[qid])
            task.relevant.append(rel)
    if not task.qids:
        raise EvaluationError(f"no query of {queries_path} has a positive judgment in {qrels_path}")
    return task


def _is_number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _xling_targets(task: EvalTask, pools: Pools) -> bool:
    """True when targets look like XQuAD pins (`<id>-<lang>` in the query's language) and English ones exist."""
    if task.kind == "query" or not task.langs or not all(task.langs):
        return False
    pool = pools.get(task.kind)
    for lang, rel in zip(task.langs, task.relevant, strict=True):
        if not all(t.endswith(f"-{lang}") for t in rel):
            return False
    return any(x == "en" for x in pool.langs)


def _to_en(target: str, lang: str) -> str:
    return target[: -len(lang)] + "en"


def evaluate_system(
    system: Retriever, tasks: Sequence[EvalTask], pools: Pools, k: int = 100, progress: bool = False,
    keep_rows: bool = False,
) -> dict[str, Any]:
    """{metric: macro mean over tasks, "tasks": {task: {...}}, "languages": {lang: {...}}} for one system.

    keep_rows: also keep each task's per-query rows (and per-language hits) for a paired comparison with
    another system (encoders/paired.py, which strips them again).
    """
    per_task: dict[str, Any] = {}
    by_lang: dict[str, list[dict[str, float]]] = defaultdict(list)
    for task in tqdm(tasks, desc=f"evaluating {system.name}", disable=not progress, leave=False):
        if task.kind == "query":  # a query is not its own related search: drop it from its results
            found = system.search(task.texts, task.kind, k + 1)
            ranked = [[x for x in r if x != qid][:k] for r, qid in zip(found, task.qids, strict=True)]
        else:
            ranked = system.search(task.texts, task.kind, k)
        rows = [query_metrics(r, g, rel) for r, g, rel in zip(ranked, task.gains, task.relevant, strict=True)]
        entry: dict[str, Any] = {**mean(rows), "queries": len(rows)}
        if keep_rows:
            entry[ROWS] = rows
        langs: dict[str, list[dict[str, float]]] = defaultdict(list)
        for lang, row in zip(task.langs, rows, strict=True):
            langs[lang].append(row)
            by_lang[lang].append(row)
        entry["languages"] = {lang: {**mean(v), "queries": len(v)} for lang, v in sorted(langs.items())}
        if _xling_targets(task, pools):
            for lang, (vals, hits) in _xling(system, task).items():
                entry["languages"].setdefault(lang, {}).update(vals)
                if keep_rows:
                    entry["languages"][lang][HITS] = hits
        xl_metrics = {m for v in entry["languages"].values() for m in v if m in (SAME, TO_EN)}
        for m in sorted(xl_metrics):
            values = [v[m] for v in entry["languages"].values() if m in v]
            entry[m] = sum(values) / len(values)
        per_task[task.name] = entry
    out: dict[str, Any] = {}
    for m in (*METRICS, SAME, TO_EN):
        values = [t[m] for t in per_task.values() if m in t]
        if values:
            out[m] = sum(values) / len(values)
    out["tasks"] = per_task
    out["languages"] = {lang: {**mean(rows), "queries": len(rows)} for lang, rows in sorted(by_lang.items())}
    return out


def _xling(system: Retriever, task: EvalTask) -> dict[str, tuple[dict[str, float], dict[str, list[float]]]]:
    """Recall@1 per language against same-language candidates and against English candidates, with the hits."""
    out: dict[str, tuple[dict[str, float], dict[str, list[float]]]] = {}
    for lang in sorted(set(task.langs)):
        idx = [i for i, x in enumerate(task.langs) if x == lang]
        texts = [task.texts[i] for i in idx]
        same = system.search(texts, task.kind, 1, lang=lang)
        to_en = system.search(texts, task.kind, 1, lang="en")
        hit_same = [bool(r) and r[0] in task.relevant[i] for r, i in zip(same, idx, strict=True)]
        hit_en = [
            bool(r) and r[0] in {_to_en(t, lang) for t in task.relevant[i]} for r, i in zip(to_en, idx, strict=True)
        ]
        out[lang] = ({SAME: sum(hit_same) / len(idx), TO_EN: sum(hit_en) / len(idx)},
                     {SAME: [float(h) for h in hit_same], TO_EN: [float(h) for h in hit_en]})
    return out


def markdown(results: dict[str, dict[str, Any]], languages: bool = True) -> str:
    """A Markdown table per task (systems as rows), plus per-language tables for multilingual tasks."""
    lines: list[str] = []
    systems = list(results)
    task_names = list(next(iter(results.values()))["tasks"]) if results else []
    for task in task_names:
        first = results[systems[0]]["tasks"][task]
        metrics = [m for m in (*METRICS, SAME, TO_EN) if m in first]
        lines.append(f"\n**{task}** ({first['queries']} queries)\n")
        lines.append("| system | " + " | ".join(metrics) + " |")
        lines.append("|---" * (len(metrics) + 1) + "|")
        for s in systems:
            entry = results[s]["tasks"].get(task, {})
            lines.append(f"| {s} | " + " | ".join(_fmt(entry.get(m)) for m in metrics) + " |")
        langs = first.get("languages", {})
        if languages and len(langs) > 1:
            metric = SAME if SAME in first else "Recall@10"
            cols = sorted(langs)
            lines.append(f"\n{task}, {metric} per language\n")
            lines.append("| system | " + " | ".join(cols) + " |")
            lines.append("|---" * (len(cols) + 1) + "|")
            for s in systems:
                per = results[s]["tasks"].get(task, {}).get("languages", {})
                lines.append(f"| {s} | " + " | ".join(_fmt(per.get(c, {}).get(metric)) for c in cols) + " |")
            if TO_EN in first:
                lines.append(f"\n{task}, {TO_EN} per language\n")
                lines.append("| system | " + " | ".join(cols) + " |")
                lines.append("|---" * (len(cols) + 1) + "|")
                for s in systems:
                    per = results[s]["tasks"].get(task, {}).get("languages", {})
                    lines.append(f"| {s} | " + " | ".join(_fmt(per.get(c, {}).get(TO_EN)) for c in cols) + " |")
    lines.extend(_paired_markdown(results))
    return "\n".join(lines).strip() + "\n"


def _paired_markdown(results: dict[str, dict[str, Any]]) -> list[str]:
    """Tables of `model` minus each baseline per task (and per language), from results["model"]["paired"]."""
    lines: list[str] = []
    for base, table in results.get("model", {}).get("paired", {}).items():
        for task, entry in table.items():
            lines.append(f"\n{task}, model minus {base}: mean difference [paired bootstrap 95% interval] "
                         "queries won/lost\n")
            lines.append("| metric | difference |")
            lines.append("|---|---|")
            lines.extend(f"| {m} | {cell(entry[m])} |" for m in METRICS if m in entry)
            langs = entry.get("languages", {})
            metrics = sorted({m for v in langs.values() for m in v})
            if langs and metrics:
                lines.append("\n| language | " + " | ".join(metrics) + " |")
                lines.append("|---" * (len(metrics) + 1) + "|")
                for lang, cols in sorted(langs.items()):
                    lines.append(f"| {lang} | " + " | ".join(cell(cols[m]) if m in cols else "-" for m in metrics)
                                 + " |")
            every = entry.get("every_language", {})
            if every:
                lines.append("\nAhead in every language (not behind or tied in any), on these queries and in the "
                             "share of bootstrap resamples:\n")
                lines.extend(f"- {m}: {'yes' if e['observed'] else 'no, not in ' + ', '.join(e['behind'])}; "
                             f"{e['probability']:.3f}" for m, e in every.items())
    return lines


def _fmt(v: object) -> str:
    return f"{v:.3f}" if isinstance(v, float) else "-"


def run_evaluation(home: Any, checkpoint: str | Path | None = None, **kwargs: Any) -> dict[str, dict[str, Any]]:
    """The full evaluation of `encoders evaluate` (model, legacy spaces, baselines); see encoders.quality."""
    from encoders.quality import run_evaluation as run

    return run(home, Path(checkpoint) if checkpoint else None, **kwargs)
