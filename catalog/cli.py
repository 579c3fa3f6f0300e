"""`catalog` command line: import data sets, split train/dev, print stats."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import click

from catalog.errors import ImportRejected, OmniSearchError
from catalog.home import Home, home_option
from catalog.importers.runner import IMPORTERS, run_import
from catalog.split import split_by_query
from catalog.store import Catalog

SHOW_REJECTS = 20  # rejections printed to stderr; --rejects FILE keeps them all


@click.group()
def cli() -> None:
    """The catalog: entities, queries, engagements and legacy vectors in HOME/catalog.db."""
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")


@cli.command("import")
@click.argument("source", type=click.Choice(sorted(IMPORTERS)))
@click.argument("path", required=False, type=click.Path(path_type=Path))
@click.option("--strict", is_flag=True, help="Fail the whole import (write nothing) if any row is rejected.")
@click.option("--source-name", default=None, help="Name recorded as the rows' source (jsonl: folder name).")
@click.option("--rejects", type=click.Path(path_type=Path), help="Write every rejected row (file:line: reason).")
@home_option
def import_cmd(source: str, path: Path | None, strict: bool, source_name: str | None, rejects: Path | None,
               home: Home) -> None:
    """Import SOURCE from PATH (default: the shipped copy in data/ where there is one).

    Example: catalog import homedepot ../shared/data/homedepot
    """
    started = time.perf_counter()
    try:
        report = run_import(home, source, path, strict=strict, source=source_name)
    except ImportRejected as exc:
        _print_rejects(exc.rejected, rejects)
        raise click.ClickException(str(exc)) from exc
    except (OmniSearchError, FileNotFoundError, ValueError) as exc:
        raise click.ClickException(str(exc)) from exc
    _print_rejects(report.rejected, rejects)
    click.echo(f"{report.summary()} in {time.perf_counter() - started:.1f} s")


def _print_rejects(rejected: list, path: Path | None) -> None:
    for item in rejected[:SHOW_REJECTS]:
        click.echo(f"rejected {item}", err=True)
    if len(rejected) > SHOW_REJECTS:
        click.echo(f"... and {len(rejected) - SHOW_REJECTS} more", err=True)
    if path is not None:
        path.write_text("".join(f"{item}\n" for item in rejected), encoding="utf-8")


@cli.command("split")
@click.option("--by", type=click.Choice(["query"]), default="query", show_default=True,
              help="Unit of the split; queries sharing a group (translations) stay together.")
@click.option("--dev", type=float, default=0.1, show_default=True, help="Share of query groups in dev.")
@click.option("--seed", type=int, default=0, show_default=True)
@home_option
def split_cmd(by: str, dev: float, seed: int, home: Home) -> None:
    """Assign engagements to train/dev by query.

    Example: catalog split --by query --dev 0.1 --seed 0
    """
    if not home.catalog_db.exists():
        raise click.ClickException(f"no catalog at {home.catalog_db}; run `catalog import ...` first")
    try:
        with Catalog.edit(home.catalog_db) as cat:
            counts = split_by_query(cat, dev=dev, seed=seed)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(" ".join(f"{k}={v}" for k, v in sorted(counts.items())))


@cli.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
@home_option
def stats_cmd(as_json: bool, home: Home) -> None:
    """Counts per entity kind and language, query language, engagement kind and split, legacy spaces.

    Example: catalog stats --home ./.omnisearch
    """
    try:
        with Catalog(home.catalog_db, read_only=True) as cat:
            stats = cat.stats()
    except OmniSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    stats["file_bytes"] = home.catalog_db.stat().st_size
    if as_json:
        click.echo(json.dumps(stats, indent=2))
        return
    for section in ("entities", "queries", "engagements", "legacy_spaces"):
        click.echo(f"{section}:")
        rows = stats[section] or {"(none)": ""}
        for key, value in rows.items():
            click.echo(f"  {key:<40} {value}")
    click.echo(f"catalog.db: {stats['file_bytes'] / 1e6:.1f} MB")


def main() -> None:
    cli(prog_name="catalog")


if __name__ == "__main__":
    main()
