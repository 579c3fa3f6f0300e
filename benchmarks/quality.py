"""Retrieval quality of the model against its baselines, through the encoders' own evaluation function.

The evaluation itself (tasks from the catalog's dev split, exact search over every candidate, Recall@10, nDCG@10,
MRR per task and language, BM25 and the untuned backbone as baselines) belongs to `encoders.evaluate`; this module
only runs it for a home and writes the table and JSON beside the other results.
"""

from __future__ import annotations

import inspect
from pathlib import Path
from typing import Any

from benchmarks.errors import NotReady
from benchmarks.machine import machine_info
from benchmarks.results import command_line, now_utc, write_json
from catalog import Home

ENTRY_POINTS = ("evaluate", "run_evaluation", "evaluate_home")  # names the library function may carry


def _entry_point() -> Any:
    try:
        import encoders.evaluate as ev
    except ImportError as exc:
        raise NotReady(f"encoders.evaluate cannot be imported yet ({exc}); `benchmarks quality` needs it") from exc
    for name in ENTRY_POINTS:
        fn = getattr(ev, name, None)
        if callable(fn):
            return fn, getattr(ev, "markdown", None)
    raise NotReady(
        "the model evaluation is not ready: encoders.evaluate has no library function "
        f"({' / '.join(ENTRY_POINTS)}) behind `encoders evaluate` yet. The harness calls it as "
        "fn(home=..., checkpoint=...) and expects {system: results}; until then run `encoders evaluate` directly."
    )


def quality_benchmark(home: Home, checkpoint: str | None, out_dir: Path) -> tuple[dict[str, Any], Path, Path]:
    """Run the evaluation over the home's catalog; write quality.json and quality.md into `out_dir`."""
    fn, to_markdown = _entry_point()
    params = inspect.signature(fn).parameters
    kwargs: dict[str, Any] = {}
    if "home" in params:
        kwargs["home"] = home
    if "checkpoint" in params:
        kwargs["checkpoint"] = checkpoint
    started = now_utc()
    results = fn(**kwargs)
    data = {"kind": "quality", "date": started, "command": command_line(), "home": str(home.root),
            "checkpoint": checkpoint, "machine": machine_info(), "results": results}
    json_path = write_json(out_dir / "quality.json", data)
    table = to_markdown(results) if callable(to_markdown) else ""
    md_path = out_dir / "quality.md"
    md_path.write_text(f"Quality table, {started[:10]}, `{data['command']}`\n\n{table}")
    return data, json_path, md_path
