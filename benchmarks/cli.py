"""`benchmarks` command line: ann, serve, echo-floor, quality."""

from __future__ import annotations

import logging
from pathlib import Path

import click
from tqdm import tqdm

from benchmarks.errors import BenchmarkError
from benchmarks.results import RESULTS_DIR
from catalog import Home, home_option
from catalog.errors import OmniSearchError


def _split(value: str | None) -> list[str] | None:
    if not value:
        return None
    return [v.strip() for v in value.split(",") if v.strip()]


@click.group()
@click.option("--log-level", default="WARNING", show_default=True, help="Logging level.")
def cli(log_level: str) -> None:
    """Benchmarks of the ANN backends, the server under load, and retrieval quality."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@home_option
@click.option("--dataset", required=True,
              help="glove-50, wordnet, catalog:<index> (active generation), or synthetic[:N[xD]].")
@click.option("--backends", default=None, help="Comma-separated backend names (default: all in the grid).")
@click.option("--grid", "grid_name", default=None, metavar="NAME|FILE.toml",
              help="Parameter grid: a bundled name (default, quick) or a TOML file.  [default: default]")
@click.option("--quick", is_flag=True, help="Use the quick grid (same as --grid quick).")
@click.option("-k", "--k", "k", type=int, default=10, show_default=True, help="Neighbours per query (recall@k).")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR,
              show_default=True, help="Folder for ann-<dataset>.json and .png.")
def ann(home: Home, dataset: str, backends: str | None, grid_name: str | None, quick: bool, k: int,
        out_dir: Path) -> None:
    """Recall@k, QPS, build time and memory of ANN backends over a parameter grid, beside the raw libraries.

    Exact ground truth is cached under <home>/cache/benchmarks. Writes ann-<dataset>.json and a Pareto plot
    ann-<dataset>.png (recall against QPS, log scale).

    Example:

        benchmarks ann --dataset glove-50 --quick

        benchmarks ann --dataset glove-50 --backends hnswlib,faiss-hnsw --grid my-grid.toml --out /tmp/res
    """
    from benchmarks.ann import ann_benchmark
    from benchmarks.datasets import cache_dir, load_dataset
    from benchmarks.grids import load_grid

    if quick and grid_name:
        raise click.UsageError("give --quick or --grid, not both")
    try:
        grid = load_grid("quick" if quick else grid_name or "default")
        ds = load_dataset(dataset, home)
        click.echo(f"{ds.name}: {len(ds.xb):,} x {ds.dim} vectors, {len(ds.xq):,} queries, metric {ds.metric}")
        result, json_path, png_path = ann_benchmark(ds, grid, cache_dir(home), out_dir, _split(backends), k,
                                                    progress=tqdm.write)
    except (OmniSearchError, BenchmarkError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"{len(result['points'])} points in {result['seconds']:.0f} s; {result['machine']['note']}")
    for row in result["overhead"]:
        if row["mode"] in ("batch-1t", "single-1t"):
            click.echo(f"  {row['backend']:<15} {row['search']} {row['mode']:<9} project/raw QPS = {row['ratio']:.3f}")
    click.echo(f"wrote {json_path}\nwrote {png_path}")


def _concurrency(value: str) -> list[int]:
    try:
        out = [int(v) for v in value.split(",") if v.strip()]
    except ValueError:
        raise click.BadParameter(f"expected comma-separated integers, got {value!r}") from None
    if not out or min(out) < 1:
        raise click.BadParameter("concurrency values must be >= 1")
    return out


@cli.command()
@home_option
@click.option("--target", default="127.0.0.1:50051", show_default=True,
              help="HOST:PORT of a running engine; loopback only.")
@click.option("--concurrency", default="1,8,32", show_default=True, help="Requests in flight, comma-separated.")
@click.option("--duration", "duration_s", type=float, default=10.0, show_default=True,
              help="Measured seconds per concurrency (after a warm-up).")
@click.option("--mix", type=click.Choice(["vector", "text-hit", "text-miss"]), default="vector",
              show_default=True, help="vector: random vectors; text-hit: repeated texts (cache); text-miss: unique.")
@click.option("--index", default=None, help="Index to query (default: the first one the engine serves).")
@click.option("--dim", type=int, default=None, help="Vector dimension, when the engine's Status is not reachable.")
@click.option("-k", "--k", "k", type=int, default=10, show_default=True, help="Hits per request.")
@click.option("--swap-every", "swap_every", type=float, default=None, metavar="S",
              help="Publish a new generation of the index every S seconds during the run (needs the engine's "
                   "--home).")
@click.option("--swap-backend", default="hnswlib", show_default=True, help="Backend of the swapped-in generations.")
@click.option("--floor/--no-floor", default=True, show_default=True,
              help="Also measure the echo floor (bare gRPC server, same reply bytes) at the same concurrencies.")
@click.option("--warmup", "warmup_s", type=float, default=1.0, show_default=True, help="Warm-up seconds per setting.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR,
              show_default=True, help="Folder for serve-<mix>.json and .png.")
def serve(home: Home, target: str, concurrency: str, duration_s: float, mix: str, index: str | None,
          dim: int | None, k: int, swap_every: float | None, swap_backend: str, floor: bool, warmup_s: float,
          out_dir: Path) -> None:
    """Load a running engine: QPS, p50/p95/p99 latency and errors per concurrency, beside the gRPC floor.

    The generator runs on asyncio (grpc.aio), keeps N requests in flight for --duration seconds per setting and
    stops by itself. With --swap-every it publishes new generations of the index during the run (through the
    indexer, against --home) and reports failed requests and latency while swapping.

    Example:

        engine serve --home ./demo &

        benchmarks serve --home ./demo --target 127.0.0.1:50051 --concurrency 1,8,32 --duration 10 --mix vector

        benchmarks serve --home ./demo --mix vector --swap-every 5 --duration 30 --concurrency 8
    """
    from benchmarks.plots import latency_plot, swap_timeline_plot
    from benchmarks.results import slug, write_json
    from benchmarks.serve import serve_benchmark

    try:
        result = serve_benchmark(target, home, _concurrency(concurrency), duration_s, mix, index, dim, k, swap_every,
                                 floor, warmup_s, swap_backend, progress=click.echo)
    except (OmniSearchError, BenchmarkError) as exc:
        raise click.ClickException(str(exc)) from exc
    name = f"serve-{slug(mix)}" + ("-swap" if swap_every else "")
    json_path = write_json(out_dir / f"{name}.json", result)
    png_path = latency_plot(result, out_dir / f"{name}.png")
    timeline_path = swap_timeline_plot(result, out_dir / f"{name}-timeline.png")
    for row in result["floor_ratio"]:
        click.echo(f"c={row['concurrency']:<3} engine/floor QPS = {row['qps_ratio']:.3f}, "
                   f"p50 engine/floor = {row['p50_ratio']}")
    for row in result["runs"]:
        if "swap" in row:
            sw = row["swap"]
            click.echo(f"c={row['concurrency']:<3} swaps={len(sw['swaps'])} failed requests={sw['failed_requests']} "
                       f"generations seen={sw['generations_seen']}")
    click.echo(f"wrote {json_path}\nwrote {png_path}" + (f"\nwrote {timeline_path}" if timeline_path else ""))


@cli.command("echo-floor")
@home_option
@click.option("--concurrency", default="1,8,32", show_default=True, help="Requests in flight, comma-separated.")
@click.option("--duration", "duration_s", type=float, default=10.0, show_default=True,
              help="Measured seconds per concurrency.")
@click.option("--mix", type=click.Choice(["vector", "text-hit", "text-miss"]), default="vector", show_default=True,
              help="Request shape (the echo server answers all alike).")
@click.option("--dim", type=int, default=256, show_default=True, help="Vector size of the vector mix's requests.")
@click.option("-k", "--k", "k", type=int, default=10, show_default=True, help="Hits in the canned reply.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR,
              show_default=True, help="Folder for echo-floor.json and .png.")
def echo_floor(home: Home, concurrency: str, duration_s: float, mix: str, dim: int, k: int, out_dir: Path) -> None:
    """The gRPC floor: a bare server (generic handler, Search-sized reply) under the same load generator.

    Nothing the engine does (encoding, ANN, catalog lookups) happens here, so engine latency divided by this
    latency is the cost of the engine's work. The server runs in its own process on 127.0.0.1.

    Example:

        benchmarks echo-floor --concurrency 1,8,32 --duration 10
    """
    from benchmarks.plots import latency_plot
    from benchmarks.results import write_json
    from benchmarks.serve import echo_floor_benchmark

    result = echo_floor_benchmark(_concurrency(concurrency), duration_s, mix, dim, k, progress=click.echo)
    json_path = write_json(out_dir / "echo-floor.json", result)
    png_path = latency_plot(result, out_dir / "echo-floor.png")
    click.echo(f"wrote {json_path}\nwrote {png_path}")


@cli.command("prepare-serve")
@home_option
@click.option("--vectors", "n", type=int, default=None, metavar="N",
              help="Publish an index `vectors` of N clustered unit vectors (for the vector mix and swaps).")
@click.option("--dim", type=int, default=256, show_default=True, help="Dimension of those vectors.")
@click.option("--model", is_flag=True,
              help="Publish pins/products/queries indices of the ESCI catalog embedded with an untrained MiniLM "
                   "checkpoint (for the text mixes).")
@click.option("--backend", default="hnswlib", show_default=True, help="ANN backend of the generation.")
def prepare_serve(home: Home, n: int | None, dim: int, model: bool, backend: str) -> None:
    """Create a deployment in --home for `benchmarks serve` to load (then start `engine serve` on it).

    Example:

        benchmarks prepare-serve --home /tmp/serve-vec --vectors 100000 --dim 256

        benchmarks prepare-serve --home /tmp/serve-text --model
    """
    from benchmarks.deploy import model_deployment, vectors_deployment

    if (n is None) == (not model):
        raise click.UsageError("give exactly one of --vectors N or --model")
    try:
        rec = vectors_deployment(home, n, dim, backend) if n is not None else model_deployment(home, backend)
    except OmniSearchError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"generation {rec.id} active in {home.root}: {sorted(rec.indices)}")


@cli.command()
@home_option
@click.argument("result", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def table(home: Home, result: Path) -> None:
    """Print the Markdown tables of a result JSON file (ann-*.json, serve-*.json, echo-floor.json).

    Example:

        benchmarks table benchmarks/results/ann-glove-50.json
    """
    import json

    from benchmarks.tables import markdown

    try:
        click.echo(markdown(json.loads(result.read_text())), nl=False)
    except (ValueError, KeyError) as exc:
        raise click.ClickException(f"{result}: not a benchmark result ({exc})") from exc


@cli.command()
@home_option
@click.option("--checkpoint", default=None, metavar="DIR",
              help="Model checkpoint to evaluate (default: the latest under <home>/checkpoints).")
@click.option("--task", "tasks", multiple=True, help="Only tasks whose name contains this (repeatable).")
@click.option("--baselines", default="bm25,bm25-stemmed,backbone", show_default=True,
              help="Comma-separated baselines measured beside the model ('' for none).")
@click.option("--max-queries", type=int, default=None, help="At most this many queries per task.")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=RESULTS_DIR,
              show_default=True, help="Folder for <name>.json and <name>.md.")
@click.option("--name", default="quality", show_default=True, help="File name stem of the results.")
def quality(home: Home, checkpoint: str | None, tasks: tuple[str, ...], baselines: str, max_queries: int | None,
            out_dir: Path, name: str) -> None:
    """Retrieval quality (Recall@10, nDCG@10, MRR per task and language) of the model and its baselines.

    Runs the encoders' evaluation (the one behind `encoders evaluate`) over every data set imported into the
    catalog in --home (one task per target kind and source, dev split) and writes the quality table.

    Example:

        benchmarks quality --home ./.omnisearch --checkpoint ./.omnisearch/checkpoints/run1
    """
    from benchmarks.quality import quality_benchmark

    names = tuple(b.strip() for b in baselines.split(",") if b.strip())
    try:
        _, json_path, md_path, png_path = quality_benchmark(home, checkpoint, out_dir, list(tasks) or None, names,
                                                            max_queries, name=name)
    except (OmniSearchError, BenchmarkError) as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(md_path.read_text())
    click.echo(f"wrote {json_path}\nwrote {md_path}" + (f"\nwrote {png_path}" if png_path else ""))


def main() -> None:
    cli()
