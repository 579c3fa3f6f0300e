"""`indexer` command line: rebuild, status, verify, publish, rollback, gc, backends."""

from __future__ import annotations

import dataclasses
import json
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import click

from catalog import Home, home_option
from catalog.errors import OmniSearchError
from indexer import lifecycle
from indexer.backends import REGISTRY
from indexer.build import rebuild as rebuild_generation
from indexer.manifest import GenerationRecord, Manifest
from indexer.sharding import DEFAULT_SHARD_VECTORS


@contextmanager
def _domain_errors() -> Iterator[None]:
    """Domain errors become a one-line message and exit code 1."""
    try:
        yield
    except OmniSearchError as exc:
        raise click.ClickException(str(exc)) from exc


def _parse_params(pairs: tuple[str, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected key=value, got {pair!r}", param_hint="--param")
        try:
            value = json.loads(raw)  # numbers, true/false, null
        except ValueError:
            value = raw  # plain strings such as an index-factory description
        out[key.strip()] = value
    return out


def _describe(gen: GenerationRecord) -> str:
    head = f"generation {gen.id} [{gen.state}] created {gen.created_at}"
    if gen.published_at:
        head += f", published {gen.published_at}"
    if gen.checkpoint_id:
        head += f", checkpoint {gen.checkpoint_id}"
    lines = [head]
    if gen.message:
        lines.append(f"  {gen.message}")
    for rec in gen.indices.values():
        recall = f"{rec.recall:.3f}" if rec.recall is not None else "-"
        carried = f" (files from generation {rec.carried_from})" if rec.carried_from else ""
        lines.append(
            f"  {rec.name:<20} {rec.count:>9} x {rec.dim:<4} {rec.metric} {rec.backend:<15} "
            f"shards {len(rec.shards)} recall@10 {recall}{carried}"
        )
    return "\n".join(lines)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("-v", "--verbose", count=True, help="Log progress (-v) or debug details (-vv).")
def cli(verbose: int) -> None:
    """Build, check and publish the sharded ANN indices the engine serves.

    \b
    Example:
      indexer --verbose rebuild --checkpoint quick
      indexer status
    """
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@home_option
@click.option("--index", "indices", multiple=True, metavar="NAME",
              help="Index to build (repeatable): pins, products, docs, queries, legacy-<space>, or a name for "
                   "--vectors. Default: everything the catalog supports. Others are carried over.")
@click.option("--checkpoint", metavar="DIR|NAME",
              help="Model checkpoint to embed with: a folder, or the name of one in <home>/checkpoints.")
@click.option("--vectors", type=click.Path(exists=True, dir_okay=False),
              help="Vectors to index instead of the catalog (.npy, .fvecs, .parquet).")
@click.option("--ids", type=click.Path(exists=True, dir_okay=False),
              help="Ids of --vectors: one per line, a .json list or a parquet `id` column.")
@click.option("--backend", default="hnswlib", show_default=True, type=click.Choice(sorted(REGISTRY)),
              help="ANN backend.")
@click.option("--param", "params", multiple=True, metavar="KEY=VALUE",
              help="Backend parameter (repeatable), e.g. --param ef=128 --param M=32.")
@click.option("--shards", type=click.IntRange(min=1),
              help="Shards per index. Default: one per --shard-vectors vectors (a single shard below that).")
@click.option("--shard-vectors", default=DEFAULT_SHARD_VECTORS, show_default=True, type=click.IntRange(min=1),
              help="Most vectors per shard when --shards is not given.")
@click.option("--threads", default=2, show_default=True, type=click.IntRange(min=1),
              help="Thread budget of the build.")
@click.option("--gate", default=0.9, show_default=True, type=click.FloatRange(0.0, 1.0),
              help="Minimum recall@10 against exact search; below it nothing is published.")
@click.option("--metric", type=click.Choice(["ip", "l2"]), help="Metric of --vectors (default: ip if unit-norm).")
@click.option("--no-publish", is_flag=True, help="Build and verify but leave the generation ready, not active.")
@click.option("--quiet", is_flag=True, help="No progress bars.")
def rebuild(
    home: Home, indices: tuple[str, ...], checkpoint: str | None, vectors: str | None, ids: str | None,
    backend: str, params: tuple[str, ...], shards: int | None, shard_vectors: int, threads: int, gate: float,
    metric: str | None, no_publish: bool, quiet: bool,
) -> None:
    """Build a new generation of indices, check recall, publish it.

    \b
    Examples:
      indexer rebuild --checkpoint quick
      indexer rebuild --index legacy-minilm --backend faiss-ivf-flat --param nprobe=32
      indexer rebuild --vectors emb.npy --ids ids.txt --index mine --shards 4
    """
    with _domain_errors():
        gen = rebuild_generation(
            home, indices=list(indices) or None, checkpoint=checkpoint, vectors=vectors, ids=ids,
            backend=backend, params=_parse_params(params), shards=shards, publish=not no_publish, gate=gate,
            shard_vectors=shard_vectors, threads=threads, metric=metric, progress=not quiet,
        )
    click.echo(_describe(gen))


@cli.command()
@home_option
@click.option("--json", "as_json", is_flag=True, help="Print the manifest as JSON.")
def status(home: Home, as_json: bool) -> None:
    """Show every generation and its indices (the active one is marked [active]).

    \b
    Example:
      indexer status --json
    """
    with _domain_errors(), Manifest(home.manifest_db, read_only=True) as manifest:
        gens = manifest.list_generations()
    if as_json:
        click.echo(json.dumps([dataclasses.asdict(g) for g in gens], indent=1))
        return
    if not gens:
        click.echo(f"no generations in {home.manifest_db}; run `indexer rebuild`")
        return
    for gen in gens:
        click.echo(_describe(gen))


@cli.command()
@home_option
@click.option("--generation", "gen_id", type=int, help="Generation to verify (default: the active one).")
@click.option("--all", "all_gens", is_flag=True, help="Verify every ready, active and retired generation.")
def verify(home: Home, gen_id: int | None, all_gens: bool) -> None:
    """Recompute every shard checksum and compare with the manifest; exit 1 on any mismatch.

    \b
    Example:
      indexer verify --all
    """
    with _domain_errors(), Manifest(home.manifest_db, read_only=True) as manifest:
        if all_gens:
            gens = manifest.generations_in("ready", "active", "retired")
        elif gen_id is not None:
            gens = [manifest.generation(gen_id)]
        else:
            active = manifest.active_generation()
            if active is None:
                raise click.ClickException("no active generation to verify")
            gens = [active]
        bad = 0
        for gen in gens:
            result = lifecycle.verify_generation(gen)
            click.echo(f"generation {gen.id}: {result.shards} shard{'' if result.shards == 1 else 's'}, "
                       f"{'ok' if result.ok else f'{len(result.problems)} problem(s)'}")
            for problem in result.problems:
                click.echo(f"  {problem}")
            bad += len(result.problems)
    if bad:
        raise click.ClickException(f"{bad} corrupt or missing shard(s)")


@cli.command()
@home_option
@click.argument("generation", type=int)
def publish(home: Home, generation: int) -> None:
    """Make a ready (or retired) generation active, e.g. one built with --no-publish.

    \b
    Example:
      indexer publish 7
    """
    with _domain_errors(), Manifest(home.manifest_db) as manifest:
        result = lifecycle.verify_generation(manifest.generation(generation))
        if not result.ok:
            raise click.ClickException("; ".join(result.problems))
        gen = manifest.publish(generation)
    click.echo(_describe(gen))


@cli.command()
@home_option
def rollback(home: Home) -> None:
    """Make the previous ready/retired generation active again; the current one retires.

    \b
    Example:
      indexer rollback
    """
    with _domain_errors():
        gen = lifecycle.rollback(home)
    click.echo(f"rolled back: {_describe(gen)}")


@cli.command()
@home_option
@click.option("--keep", default=3, show_default=True, type=click.IntRange(min=1),
              help="How many of the newest usable generations to keep (the active one always stays).")
def gc(home: Home, keep: int) -> None:
    """Delete failed generations and all but the newest --keep usable ones (rows and folders).

    \b
    Example:
      indexer gc --keep 2
    """
    with _domain_errors():
        deleted = lifecycle.gc(home, keep)
    click.echo(f"deleted generations: {', '.join(map(str, deleted)) or 'none'}")


@cli.command()
@home_option
def backends(home: Home) -> None:
    """List the ANN backends and their parameters with defaults (the same for every home).

    \b
    Example:
      indexer backends
    """
    for name, cls in sorted(REGISTRY.items()):
        build = " ".join(f"{k}={v}" for k, v in cls.BUILD_DEFAULTS.items()) or "-"
        search = " ".join(f"{k}={v}" for k, v in cls.SEARCH_DEFAULTS.items()) or "-"
        click.echo(f"{name:<15} build: {build}\n{'':<15} search: {search}")


def main() -> None:
    cli()

