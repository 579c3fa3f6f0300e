"""`engine` command line: serve, query, embed, status, reload, rollback, generations."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
from collections.abc import Callable
from typing import Any, TypeVar

# Before torch or faiss load OpenMP: idle OpenMP threads must sleep, not spin. On 2 cores shared with gRPC
# threads (and other processes) spinning workers starve the thread they wait for; measured on this machine
# a 2-thread encoder call went from ~13 ms to ~500 ms under load with the default (spinning) policy.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import click  # noqa: E402
import grpc  # noqa: E402
from google.protobuf.json_format import MessageToDict  # noqa: E402

from catalog import Home, home_option  # noqa: E402
from catalog.errors import OmniSearchError  # noqa: E402
from engine.client import EngineClient, find_admin_token  # noqa: E402
from engine.config import EngineConfig  # noqa: E402

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_TARGET = "127.0.0.1:50051"


def _target_option(func: F) -> F:
    return click.option(
        "--target", default=DEFAULT_TARGET, show_default=True, metavar="HOST:PORT", help="Engine address."
    )(func)


def _token_option(func: F) -> F:
    return click.option(
        "--token", envvar="OMNISEARCH_ADMIN_TOKEN", default=None,
        help="Admin bearer token (env OMNISEARCH_ADMIN_TOKEN; default: the token file in --home).",
    )(func)


def _client(target: str, home: Home | None = None, token: str | None = None, timeout: float = 10.0) -> EngineClient:
    return EngineClient(target, admin_token=token or find_admin_token(home.root if home else None), timeout=timeout)


def _rpc_error(err: grpc.RpcError) -> click.ClickException:
    return click.ClickException(f"{err.code().name}: {err.details()}")  # type: ignore[attr-defined]


@click.group()
@click.option("--log-level", default="INFO", show_default=True, help="Logging level of the server and tools.")
def cli(log_level: str) -> None:
    """The OmniSearchSage gRPC search server and its client commands."""
    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@cli.command()
@home_option
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False), default=None,
              help="TOML file with [engine] keys of EngineConfig (flags below win).")
@click.option("--host", default=None, help="Listen address (default 127.0.0.1).")
@click.option("--port", type=int, default=None, help="gRPC port (default 50051; 0 picks a free one).")
@click.option("--metrics-port", type=int, default=None, help="Prometheus /metrics port (0 = off).")
@click.option("--workers", type=int, default=None, help="gRPC handler threads.")
@click.option("--poll-interval", type=float, default=None, help="Manifest poll seconds (0 = only Admin.Reload).")
@click.option("--samples", "samples", default=None, metavar="FILE|builtin",
              help="Once serving, send these Search calls and print the results ('builtin': a multilingual set).")
@click.option("--exit-after-samples", is_flag=True, help="Stop after printing the samples (with --samples).")
@click.option("--wait", "wait_s", type=float, default=600.0, show_default=True,
              help="Seconds to wait for a generation before sending samples.")
def serve(
    home: Home,
    config_path: str | None,
    host: str | None,
    port: int | None,
    metrics_port: int | None,
    workers: int | None,
    poll_interval: float | None,
    samples: str | None,
    exit_after_samples: bool,
    wait_s: float,
) -> None:
    """Serve the home's active generation until SIGTERM/Ctrl-C, following the manifest for new ones.

    Example: engine serve --home ./.omnisearch --port 50051 --metrics-port 9100
    """
    from engine.server import serve as run_server

    overrides: dict[str, Any] = {"host": host, "port": port, "metrics_port": metrics_port, "workers": workers,
                 "poll_interval_s": poll_interval}
    try:
        if config_path:
            config = EngineConfig.from_toml(config_path, home, **overrides)
        else:
            config = EngineConfig(home=home, **{k: v for k, v in overrides.items() if v is not None})
    except OmniSearchError as err:
        raise click.ClickException(str(err)) from err
    if exit_after_samples and not samples:
        raise click.UsageError("--exit-after-samples needs --samples")
    if not samples:
        try:
            run_server(config)
        except (OmniSearchError, OSError) as err:
            raise click.ClickException(str(err)) from err
        return
    _serve_with_samples(config, samples, exit_after_samples, wait_s)


def _serve_with_samples(config: EngineConfig, samples: str, exit_after: bool, wait_s: float) -> None:
    from engine.samples import DEFAULT_SAMPLES, format_results, load_samples, run_samples
    from engine.server import create_server

    try:
        chosen = list(DEFAULT_SAMPLES) if samples == "builtin" else load_samples(samples)
        server, port = create_server(config)
    except (OmniSearchError, OSError, ValueError) as err:
        raise click.ClickException(str(err)) from err
    server.start()
    stop = threading.Event()
    try:
        client = EngineClient(f"127.0.0.1:{port}", admin_token=config.resolve_admin_token(), timeout=30.0)
        try:
            client.wait_until_serving(wait_s)
        except TimeoutError as err:
            raise click.ClickException(f"{err}; {server.engine.status().last_error}") from err
        indices = [ix.name for ix in client.status().indices]
        click.echo(format_results(run_samples(client, chosen, indices)))
        client.close()
        if exit_after:
            return
        click.echo(f"serving on {config.host}:{port}; Ctrl-C to stop", err=True)
        import signal

        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, lambda *_: stop.set())
        while not stop.wait(0.5):
            pass
    finally:
        server.stop(config.grace_s).wait(config.grace_s + 10)


@cli.command()
@click.argument("text", required=False)
@click.option("--index", default="products", show_default=True, help="Index to search.")
@click.option("-k", "k", type=int, default=10, show_default=True, help="Hits to return.")
@click.option("--vector", "vector_json", default=None, help="A JSON list of floats instead of TEXT.")
@click.option("--kind", "kinds", multiple=True, help="Keep only hits of this entity kind (repeatable).")
@click.option("--lang", "languages", multiple=True, help="Keep only hits in this language (repeatable).")
@click.option("--ef", type=int, default=0, help="HNSW search breadth (0 = index default).")
@click.option("--nprobe", type=int, default=0, help="IVF lists to visit (0 = index default).")
@click.option("--no-fields", is_flag=True, help="Do not fetch display fields from the catalog.")
@click.option("--json", "as_json", is_flag=True, help="Print the raw response as JSON.")
@click.option("--timeout", type=float, default=10.0, show_default=True, help="Deadline in seconds.")
@_target_option
@home_option
def query(
    text: str | None,
    index: str,
    k: int,
    vector_json: str | None,
    kinds: tuple[str, ...],
    languages: tuple[str, ...],
    ef: int,
    nprobe: int,
    no_fields: bool,
    as_json: bool,
    timeout: float,
    target: str,
    home: Home,
) -> None:
    """Search an index with a text (or a vector) and print the hits with timings.

    Example: engine query "cordless drill" --index products -k 10
    """
    if (text is None) == (vector_json is None):
        raise click.UsageError("give TEXT or --vector, not both")
    vector = json.loads(vector_json) if vector_json else None
    from engine.samples import SampleResult, format_results

    with _client(target, home, timeout=timeout) as client:
        try:
            resp = client.search(index=index, k=k, text=text, vector=vector, kinds=kinds, languages=languages,
                                 ef=ef, nprobe=nprobe, include_fields=not no_fields)
        except grpc.RpcError as err:
            raise _rpc_error(err) from err
    if as_json:
        click.echo(json.dumps(MessageToDict(resp, preserving_proto_field_name=True), indent=1, ensure_ascii=False))
        return
    t = resp.timings
    res = SampleResult(
        sample={"text": text, "vector": vector}, index=index, generation=int(resp.generation),
        timings={"embed_ms": t.embed_ms, "search_ms": t.search_ms, "hydrate_ms": t.hydrate_ms,
                 "total_ms": t.total_ms, "cache_hit": float(t.cache_hit)},
        hits=[{"id": h.id, "score": h.score, "kind": h.kind, "fields": dict(h.fields)} for h in resp.hits],
    )
    click.echo(format_results([res]))


@cli.command()
@click.argument("texts", nargs=-1, required=True)
@click.option("--space", default="model", show_default=True, help='"model" or "legacy-<name>".')
@_target_option
@home_option
def embed(texts: tuple[str, ...], space: str, target: str, home: Home) -> None:
    """Print query embeddings of TEXTS as JSON lines.

    Example: engine embed "red shoes" "zapatos rojos" --space model
    """
    with _client(target, home) as client:
        try:
            vecs = client.embed(list(texts), space=space)
        except grpc.RpcError as err:
            raise _rpc_error(err) from err
    for text, vec in zip(texts, vecs, strict=True):
        click.echo(json.dumps({"text": text, "vector": [round(float(x), 6) for x in vec]}))


def _admin_call(home: Home, token: str | None, target: str, call: Callable[[EngineClient], Any]) -> None:
    with _client(target, home, token, timeout=120.0) as client:
        try:
            resp = call(client)
        except grpc.RpcError as err:
            raise _rpc_error(err) from err
    click.echo(json.dumps(MessageToDict(resp, preserving_proto_field_name=True), indent=1, ensure_ascii=False))


@cli.command()
@home_option
@_token_option
@_target_option
def status(home: Home, token: str | None, target: str) -> None:
    """Show the served generation, indices, last load error, cache and batching counters.

    Example: engine status --home ./.omnisearch
    """
    _admin_call(home, token, target, lambda c: c.status())


@cli.command()
@home_option
@_token_option
@_target_option
@click.option("--force", is_flag=True, help="Reload even if the active generation is already served.")
def reload(home: Home, token: str | None, target: str, force: bool) -> None:
    """Load the manifest's active generation now (the server also polls for it).

    Example: engine reload --home ./.omnisearch
    """
    _admin_call(home, token, target, lambda c: c.reload(force=force))


@cli.command()
@home_option
@_token_option
@_target_option
def rollback(home: Home, token: str | None, target: str) -> None:
    """Go back one generation: the previous ready one becomes active and is served.

    Example: engine rollback --home ./.omnisearch
    """
    _admin_call(home, token, target, lambda c: c.rollback())


@cli.command()
@home_option
@_token_option
@_target_option
def generations(home: Home, token: str | None, target: str) -> None:
    """List the manifest's generations and which one is served.

    Example: engine generations --home ./.omnisearch
    """
    _admin_call(home, token, target, lambda c: c.list_generations())


@cli.command()
@_target_option
@click.option("--service", default="", help="Service name ('' = the whole server).")
@home_option
def health(target: str, service: str, home: Home) -> None:
    """Print the grpc.health.v1 status (exit code 1 unless SERVING).

    Example: engine health --target 127.0.0.1:50051
    """
    with _client(target, home) as client:
        try:
            state = client.health(service)
        except grpc.RpcError as err:
            raise _rpc_error(err) from err
    click.echo(state)
    if state != "SERVING":
        sys.exit(1)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()


