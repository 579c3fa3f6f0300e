"""`encoders` command line: train, evaluate, embed, and make a stand-in legacy space."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import click
import numpy as np

from catalog import Catalog, Home, home_option
from catalog.errors import OmniSearchError


def _setup(verbose: bool) -> None:
    level = logging.INFO if verbose else logging.WARNING
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()


@click.group()
def cli() -> None:
    """The OmniSearchSage model: train on the catalog, evaluate against baselines, embed for other tools."""


@cli.command()
@click.option("--preset", type=click.Choice(["quick", "full"]), default=None, help="Named configuration.")
@click.option("--config", "config_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML file (may name a base with `preset = \"quick\"`).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Checkpoint directory (default HOME/checkpoints/<name>).")
@click.option("--steps", type=int, default=None, help="Override the number of optimizer steps.")
@click.option("--quiet", is_flag=True, help="No progress bar and no log lines.")
@home_option
def train(preset: str | None, config_file: Path | None, out: Path | None, steps: int | None, quiet: bool,
          home: Home) -> None:
    """Train on the catalog's train split and save a checkpoint; resumes an interrupted run of the same --out.

    Example: encoders train --preset quick
    """
    _setup(not quiet)
    from encoders import config as cfgmod
    from encoders.train import train as run_train

    if preset and config_file:
        raise click.UsageError("give --preset or --config, not both")
    try:
        cfg = cfgmod.load_toml(config_file) if config_file else cfgmod.preset(preset or "quick")
        if steps is not None:
            cfg = cfgmod.override(cfg, {"train": {"steps": steps}})
        result = run_train(home, cfg, out, progress=not quiet)
    except OmniSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"checkpoint {result.out} ({result.checkpoint_id})")
    click.echo(f"{result.steps} steps, {result.pairs} pairs in {result.train_seconds:.0f} s "
               f"({result.pairs_per_second:.0f} pairs/s), preparation {result.prep_seconds:.0f} s")
    for task, n in result.tasks.items():
        click.echo(f"  {task}: {n} train pairs")


@cli.command()
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Checkpoint directory (default: the latest under HOME/checkpoints).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Write {system: {metric: value, tasks: ..., languages: ...}} here.")
@click.option("--task", "only", multiple=True, help="Only tasks whose name contains this (repeatable).")
@click.option("--baselines", default="bm25,bm25-stemmed,backbone", show_default=True,
              help="Comma-separated baselines to run beside the model ('' for none).")
@click.option("--backbone", default=None, help="Backbone of the 'backbone' baseline (default: the model's).")
@click.option("--max-queries", type=int, default=None, help="Evaluate at most this many queries per task.")
@click.option("--queries", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="BEIR queries.jsonl instead of the dev split (with --qrels and --corpus-kind).")
@click.option("--qrels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="BEIR/TREC qrels.tsv (query-id, corpus-id, score).")
@click.option("--corpus-kind", default=None, help="Entity kind searched for BEIR queries.")
@click.option("--no-model", is_flag=True, help="Baselines only.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
@home_option
def evaluate(checkpoint: Path | None, json_file: Path | None, only: tuple[str, ...], baselines: str,
             backbone: str | None, max_queries: int | None, queries: Path | None, qrels: Path | None,
             corpus_kind: str | None, no_model: bool, quiet: bool, home: Home) -> None:
    """Recall@10/100, nDCG@10, MRR@10 per task and language, model vs BM25 vs the untuned backbone.

    The model is also compared with each baseline query by query: mean difference, paired bootstrap 95%
    interval, queries won/lost (per language too), under "paired" in the JSON.

    Example: encoders evaluate --json quality.json
    """
    _setup(False)
    from encoders.evaluate import markdown
    from encoders.quality import run_evaluation, write_json

    beir = None
    if queries or qrels or corpus_kind:
        if not (queries and qrels and corpus_kind):
            raise click.UsageError("--queries, --qrels and --corpus-kind go together")
        beir = (queries, qrels, corpus_kind)
    names = tuple(b for b in baselines.split(",") if b.strip())
    try:
        results = run_evaluation(home, checkpoint, list(only) or None, names, backbone, beir, max_queries,
                                 progress=not quiet, use_model=not no_model)
    except OmniSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(markdown(results))
    if json_file:
        write_json(results, json_file)
        click.echo(f"wrote {json_file}")


@cli.command()
@click.option("--what", type=click.Choice(["queries", "entities"]), required=True)
@click.option("--kind", default=None, help="Entity kind (entities only; default all kinds).")
@click.option("--space", default="model", show_default=True, help="Query space: model or legacy-<name>.")
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Checkpoint directory (default: the latest under HOME/checkpoints).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), required=True,
              help="Vectors FILE.npy; ids go to FILE.ids.txt (one per line, same order).")
@home_option
def embed(what: str, kind: str | None, space: str, checkpoint: Path | None, out: Path, home: Home) -> None:
    """Embed the catalog's queries or entities with a checkpoint.

    Example: encoders embed --what entities --kind product --out products.npy
    """
    _setup(False)
    from encoders.model import load
    from encoders.quality import latest_checkpoint

    try:
        model = load(checkpoint or latest_checkpoint(home))
        with Catalog(home.catalog_db, read_only=True) as cat:
            if what == "queries":
                rows = list(cat.queries())
                vecs = model.embed_queries([r["text"] for r in rows], space=space)
            else:
                rows = list(cat.entities(kind))
                vecs = model.embed_entities(rows)
    except OmniSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}-", suffix=".npy", dir=out.parent)
    with os.fdopen(fd, "wb") as f:
        np.save(f, vecs)
    os.replace(tmp, out)
    ids_path = out.with_suffix(".ids.txt")
    ids_path.write_text("".join(f"{r['id']}\n" for r in rows))
    click.echo(f"wrote {vecs.shape[0]} x {vecs.shape[1]} vectors to {out} and ids to {ids_path}")


@cli.command("fit-compat")
@click.option("--checkpoint", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Checkpoint directory (default: the latest under HOME/checkpoints).")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to save the result (default: replace the checkpoint, atomically).")
@click.option("--space", "spaces", multiple=True, help="Legacy space to fit (repeatable; default all).")
@click.option("--steps", type=click.IntRange(min=1), default=300, show_default=True, help="Steps per space.")
@click.option("--lr", type=click.FloatRange(min=0.0, min_open=True), default=1e-3, show_default=True,
              help="Peak learning rate (cosine decay to a tenth).")
@click.option("--pseudo", type=click.IntRange(min=0), default=0, show_default=True,
              help="Pseudo-queries per legacy item cut from its own text, half of each batch (0: none).")
@click.option("--quiet", is_flag=True, help="No progress bars and no log lines.")
@home_option
def fit_compat(checkpoint: Path | None, out: Path | None, spaces: tuple[str, ...], steps: int, lr: float,
               pseudo: int, quiet: bool, home: Home) -> None:
    """Fit the compatibility heads of a trained checkpoint alone, against the catalog's legacy vectors.

    The query tower stays as it is; a legacy space the checkpoint has never seen gets a new head, so its index
    answers text queries without re-embedding any item. Re-run `indexer rebuild` afterwards: the checkpoint id
    changes and a generation always serves the checkpoint it was built with.

    Example: encoders fit-compat --checkpoint .omnisearch/checkpoints/full --steps 300
    """
    _setup(not quiet)
    from encoders.compat import fit_checkpoint
    from encoders.quality import latest_checkpoint

    try:
        source = checkpoint or latest_checkpoint(home)
        ckpt_id, fits = fit_checkpoint(home, source, out, steps, spaces, lr=lr, progress=not quiet,
                                       pseudo_per_item=pseudo)
    except OmniSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    for f in fits:
        click.echo(f"legacy-{f.space}: {f.steps} steps over {f.pairs} pairs and {f.pseudo} pseudo-queries "
                   f"({f.queries} queries) in "
                   f"{f.seconds:.1f} s, loss {f.loss_first:.3f} -> {f.loss_last:.3f}")
    click.echo(f"checkpoint {out or source} ({ckpt_id})")


@cli.command("legacy-standin")
@click.option("--kind", default="pin", show_default=True, help="Entity kind to embed.")
@click.option("--name", default=None, help="Legacy space name (default standin-<kind>).")
@click.option("--backbone", default="minilm", show_default=True, help="Untuned backbone that makes the vectors.")
@home_option
def legacy_standin(kind: str, name: str | None, backbone: str, home: Home) -> None:
    """Store a STAND-IN legacy space: the untuned backbone's embeddings of each entity's text.

    The shipped data has no pre-existing (PinSage/ItemSage-like) vectors; this makes one so the compatibility
    task can be trained and measured. Its catalog description says it is a stand-in.

    Example: encoders legacy-standin --kind product
    """
    _setup(False)
    from encoders.legacy import make_standin

    try:
        space, n, dim = make_standin(home, kind, name, backbone)
    except OmniSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"legacy space {space}: {n} vectors of dim {dim} (stand-in, untuned {backbone})")


def main() -> None:
    cli()
