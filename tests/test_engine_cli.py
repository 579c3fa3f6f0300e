"""The `engine` CLI as a user runs it: serve in a subprocess, query, status, health, SIGTERM, samples."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from catalog import Home
from engine.cli import cli
from engine.client import EngineClient
from engine.testing import TINY_ENTITIES, unit_vectors, vector_generation, write_tiny_catalog

ENGINE = [sys.executable, "-m", "engine.cli"]


def test_every_command_has_help_with_an_example() -> None:
    runner = CliRunner()
    assert isinstance(cli.commands, dict) and cli.commands
    for name in cli.commands:
        res = runner.invoke(cli, [name, "--help"])
        assert res.exit_code == 0, name
        assert "Example:" in res.output and f"engine {name}" in res.output, name


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def home(tmp_path: Path) -> Home:
    h = Home(tmp_path / "home").ensure()
    write_tiny_catalog(h)
    ids = [e[0] for e in TINY_ENTITIES]
    vector_generation(h, ids, unit_vectors(len(ids), 8), index="items")
    return h


def _env(home: Home) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "OMNISEARCH_ADMIN_TOKEN"}
    env["OMNISEARCH_HOME"] = str(home.root)
    return env


def test_serve_query_status_and_graceful_sigterm(home: Home) -> None:
    port = _free_port()
    env = _env(home)
    proc = subprocess.Popen([*ENGINE, "serve", "--port", str(port), "--poll-interval", "0.2"], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        with EngineClient(f"127.0.0.1:{port}") as c:
            c.wait_until_serving(60)
        q = json.dumps(unit_vectors(len(TINY_ENTITIES), 8)[3].tolist())
        out = subprocess.run([*ENGINE, "query", "--vector", q, "--index", "items", "-k", "2",
                              "--target", f"127.0.0.1:{port}"], env=env, capture_output=True, text=True, timeout=60)
        assert out.returncode == 0, out.stderr
        assert TINY_ENTITIES[3][0] in out.stdout and "generation 1" in out.stdout
        assert TINY_ENTITIES[3][3] in out.stdout  # the title, hydrated from the catalog

        bad = subprocess.run([*ENGINE, "query", "--vector", q, "--index", "nope", "--target", f"127.0.0.1:{port}"],
                             env=env, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 1 and "INVALID_ARGUMENT" in bad.stderr and "unknown index" in bad.stderr

        # The server wrote its admin token into the home; `engine status --home` finds it there.
        st = subprocess.run([*ENGINE, "status", "--target", f"127.0.0.1:{port}"], env=env, capture_output=True,
                            text=True, timeout=60)
        assert st.returncode == 0, st.stderr
        status = json.loads(st.stdout)
        assert status["serving"] is True and status["generation"] == "1"
        denied = subprocess.run([*ENGINE, "status", "--target", f"127.0.0.1:{port}", "--token", "wrong"],
                                env=env, capture_output=True, text=True, timeout=60)
        assert denied.returncode == 1 and "PERMISSION_DENIED" in denied.stderr
        health = subprocess.run([*ENGINE, "health", "--target", f"127.0.0.1:{port}"], env=env,
                                capture_output=True, text=True, timeout=60)
        assert health.returncode == 0 and health.stdout.strip() == "SERVING"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, err = proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert proc.returncode == 0, err
    assert "stopped" in err


def test_serve_samples_and_exit(home: Home, tmp_path: Path) -> None:
    x = unit_vectors(len(TINY_ENTITIES), 8)
    samples = tmp_path / "samples.jsonl"
    samples.write_text(
        json.dumps({"vector": x[0].tolist(), "index": "items", "k": 2}) + "\n"
        + json.dumps({"text": "red shoes", "index": "items", "k": 2}) + "\n"
        + json.dumps({"text": "x", "index": "legacy-*", "k": 2}) + "\n"
    )
    t0 = time.monotonic()
    out = subprocess.run([*ENGINE, "serve", "--port", "0", "--samples", str(samples), "--exit-after-samples"],
                         env=_env(home), capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert time.monotonic() - t0 < 60
    assert TINY_ENTITIES[0][0] in out.stdout and TINY_ENTITIES[0][3] in out.stdout
    assert "FAILED_PRECONDITION" in out.stdout  # a text sample on a vectors-only generation
    assert "skipped" in out.stdout  # no legacy index in this generation
