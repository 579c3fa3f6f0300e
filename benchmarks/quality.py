"""Retrieval quality of the model against its baselines, through the encoders' own evaluation.

The evaluation itself (tasks from the catalog's dev split, one per target kind and source, i.e. per data set;
exact search over every candidate; Recall@10/100, nDCG@10 and MRR per task and language; BM25 and the untuned
backbone as baselines) belongs to `encoders.evaluate.run_evaluation`, the function behind `encoders evaluate`.
This module runs it for a home and writes the table and JSON beside the other results.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchmarks.errors import NotReady
from benchmarks.machine import machine_info
from benchmarks.results import command_line, now_utc, write_json
from catalog import Home

BASELINES = ("bm25", "bm25-stemmed", "backbone")  # as `encoders evaluate`


def quality_benchmark(
    home: Home,
    checkpoint: str | None,
    out_dir: Path,
    tasks: list[str] | None = None,
    baselines: tuple[str, ...] = BASELINES,
    max_queries: int | None = None,
    progress: bool = True,
    name: str = "quality",
) -> tuple[dict[str, Any], Path, Path, Path | None]:
    """Run the evaluation over the home's catalog; write <name>.json and <name>.md into `out_dir`, and
    <name>.png when the model is compared with a baseline per language (its path, else None).

    Args:
        checkpoint: model directory (None: the latest under the home's checkpoints).
        tasks: keep tasks whose name contains one of these strings.
        baselines: baseline systems measured in the same run.
        max_queries: at most this many queries per task.
        name: file name stem of the results (one per evaluated checkpoint, e.g. quality-full).
    """
    try:
        from encoders.evaluate import markdown, run_evaluation
    except ImportError as exc:
        raise NotReady(
            f"the model evaluation is not available ({exc}); `benchmarks quality` runs "
            "encoders.evaluate.run_evaluation, the library function behind `encoders evaluate`"
        ) from exc
    if not home.catalog_db.exists():
        raise NotReady(f"no catalog at {home.catalog_db}: import data sets and split them first "
                       "(catalog import ...; catalog split --by query)")
    started = now_utc()
    results = run_evaluation(home, checkpoint, only=tasks, baselines=tuple(baselines), max_queries=max_queries,
                             progress=progress)
    data = {"kind": "quality", "date": started, "command": command_line(), "home": str(home.root),
            "checkpoint": checkpoint, "machine": machine_info(), "results": results}
    json_path = write_json(out_dir / f"{name}.json", data)
    md_path = out_dir / f"{name}.md"
    tmp = md_path.with_name(md_path.name + ".tmp")
    tmp.write_text(f"Quality, {started[:10]}: `{data['command']}`\n\n{markdown(results)}")
    tmp.replace(md_path)
    from benchmarks.plots import paired_plot  # matplotlib is imported only when results exist

    png_path = paired_plot(data, out_dir / f"{name}.png")
    return data, json_path, md_path, png_path
