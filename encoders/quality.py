"""One evaluation run: the trained model, its legacy spaces and the baselines on the same queries."""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

from catalog import Catalog, Home
from encoders.backbones import cache_root, resolve_backbone
from encoders.baselines import BackboneRetriever, BM25Retriever
from encoders.errors import EvaluationError
from encoders.evaluate import EvalTask, beir_task, dev_tasks, evaluate_system
from encoders.model import OmniSearchSage, load, read_config
from encoders.paired import paired_table, strip_rows
from encoders.retrieval import Pools, Retriever
from encoders.systems import LegacyRetriever, ModelRetriever

log = logging.getLogger(__name__)

BASELINES = ("bm25", "bm25-stemmed", "backbone")


def latest_checkpoint(home: Home) -> Path:
    """The most recently written checkpoint under home.checkpoints."""
    found = [p for p in home.checkpoints.glob("*/config.json") if not p.parent.name.endswith(".resume")]
    if not found:
        raise EvaluationError(f"no checkpoint under {home.checkpoints}; run `encoders train` or pass --checkpoint")
    return max(found, key=lambda p: p.stat().st_mtime).parent


def run_evaluation(
    home: Home,
    checkpoint: Path | None = None,
    only: list[str] | None = None,
    baselines: tuple[str, ...] = BASELINES,
    backbone: str | None = None,
    beir: tuple[Path, Path, str] | None = None,
    max_queries: int | None = None,
    progress: bool = True,
    model: OmniSearchSage | None = None,
    use_model: bool = True,
) -> dict[str, dict[str, Any]]:
    """{system: {metric: value, "tasks": ..., "languages": ...}} for the model, legacy spaces and baselines.

    Args:
        checkpoint: model directory (default: the latest under home.checkpoints, if any).
        only: keep tasks whose name contains one of these strings.
        backbone: backbone of the "backbone" baseline (default: the checkpoint's backbone, else minilm).
        beir: (queries.jsonl, qrels.tsv, corpus kind) instead of the catalog's dev split.
        model: an already loaded model (tests, training); use_model=False evaluates baselines only.
    """
    cat = Catalog(home.catalog_db, read_only=True)
    try:
        if model is None and use_model:
            ckpt = checkpoint
            if ckpt is None:
                try:
                    ckpt = latest_checkpoint(home)
                except EvaluationError:
                    if not baselines:
                        raise
            if ckpt is not None:
                model = load(ckpt)
                log.info("evaluating %s (%s)", ckpt, model.checkpoint_id)
                backbone = backbone or str(read_config(ckpt)["backbone"]["name"])
        if beir is not None:
            tasks = [beir_task(*beir)]
        else:
            min_grade = 0.5
            tasks = dev_tasks(cat, min_grade, only)
        if max_queries:
            tasks = [t.subset(max_queries) for t in tasks]
        if not tasks:
            raise EvaluationError("no task to evaluate (check --task and the dev split)")
        pools = Pools(cat)
        systems: list[tuple[Retriever, list[EvalTask]]] = []
        if model is not None:
            systems.append((ModelRetriever(model, pools), tasks))
            for space in model.legacy if model.cfg.compat_mode != "off" else []:
                legacy = LegacyRetriever(model, pools, cat, space)
                usable = [t for t in tasks if legacy.covers(t.kind)]
                if usable:
                    systems.append((legacy, usable))
        for name in baselines:
            if name == "bm25":
                systems.append((BM25Retriever(pools, stem=False), tasks))
            elif name == "bm25-stemmed":
                systems.append((BM25Retriever(pools, stem=True), tasks))
            elif name == "backbone":
                bb = resolve_backbone(backbone or "minilm")
                systems.append((BackboneRetriever(pools, bb, cache_root() / "embeddings", progress), tasks))
            else:
                raise EvaluationError(f"unknown baseline {name!r}; known: {BASELINES}")
        results: dict[str, dict[str, Any]] = {}
        for system, system_tasks in systems:
            results[system.name] = evaluate_system(system, system_tasks, pools, progress=progress, keep_rows=True)
        if "model" in results:  # the model against each baseline, query by query (encoders/paired.py)
            paired = {name: paired_table(results["model"], results[name]) for name in results
                      if name in BASELINES}
            if paired:
                results["model"]["paired"] = paired
        strip_rows(results)
        return results
    finally:
        cat.close()


def write_json(results: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
    with os.fdopen(fd, "w") as f:
        json.dump(results, f, indent=2, sort_keys=True)
    os.replace(tmp, path)
