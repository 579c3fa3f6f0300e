"""The `indexer` command line: every command has help; rebuild/status/verify/publish/rollback/gc for real."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from indexer_fixtures import write_vectors

from catalog import Home
from indexer.cli import cli


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args), catch_exceptions=False)
    return result.exit_code, result.output


@pytest.mark.parametrize("command", sorted(cli.commands))
def test_every_command_has_help_with_an_example(command: str) -> None:
    code, out = run(command, "--help")
    assert code == 0
    assert "Example" in out and f"indexer {command}" in out


def test_rebuild_status_verify_rollback_gc(home: Home, tmp_path: Path) -> None:
    vec, ids, _ = write_vectors(tmp_path)
    h = str(home.root)
    code, out = run("rebuild", "--home", h, "--vectors", str(vec), "--ids", str(ids), "--index", "mine",
                    "--backend", "faiss-hnsw", "--param", "efSearch=48", "--shards", "3", "--quiet")
    assert code == 0, out
    assert "generation 1 [active]" in out and "faiss-hnsw" in out
    code, out = run("rebuild", "--home", h, "--vectors", str(vec), "--ids", str(ids), "--index", "mine",
                    "--backend", "faiss-ivf-flat", "--param", "nprobe=1", "--param", "nlist=64", "--gate", "0.99",
                    "--quiet")
    assert code == 1 and "below the gate 0.99" in out
    code, out = run("rebuild", "--home", h, "--vectors", str(vec), "--ids", str(ids), "--index", "mine",
                    "--backend", "flat", "--no-publish", "--quiet")
    assert code == 0 and "generation 3 [ready]" in out
    code, out = run("status", "--home", h, "--json")
    gens = json.loads(out)
    assert [g["state"] for g in gens] == ["active", "failed", "ready"]
    assert gens[0]["indices"]["mine"]["params"]["efSearch"] == 48
    assert len(gens[0]["indices"]["mine"]["shards"]) == 3
    code, out = run("publish", "--home", h, "3")
    assert code == 0 and "generation 3 [active]" in out
    code, out = run("verify", "--home", h, "--all")
    # generation 3 left the shard count to the build: one shard for an index this small
    assert code == 0 and "generation 1: 3 shards, ok" in out and "generation 3: 1 shard, ok" in out
    code, out = run("rollback", "--home", h)
    assert code == 0 and "generation 1 [active]" in out
    code, out = run("rollback", "--home", h)
    assert code == 1 and "no older" in out
    code, out = run("gc", "--home", h, "--keep", "1")
    assert code == 0 and "deleted generations: 2" in out
    code, out = run("status", "--home", h)
    assert "generation 1 [active]" in out and "generation 3 [retired]" in out and "generation 2" not in out


def test_shard_vectors_option_sizes_the_shards(home: Home, tmp_path: Path) -> None:
    vec, ids, _ = write_vectors(tmp_path, n=1200)
    code, out = run("rebuild", "--home", str(home.root), "--vectors", str(vec), "--ids", str(ids), "--backend",
                    "flat", "--shard-vectors", "500", "--quiet")
    assert code == 0, out
    code, out = run("verify", "--home", str(home.root))
    assert code == 0 and "generation 1: 3 shards, ok" in out


def test_verify_reports_a_corrupt_shard(home: Home, tmp_path: Path) -> None:
    vec, ids, _ = write_vectors(tmp_path)
    h = str(home.root)
    assert run("rebuild", "--home", h, "--vectors", str(vec), "--ids", str(ids), "--backend", "flat", "--quiet")[0] == 0
    victim = home.generations / "1" / "vectors" / "0" / "ids.json"
    victim.write_text(victim.read_text().replace("e0", "x0", 1))
    code, out = run("verify", "--home", h)
    assert code == 1 and "checksum" in out and "1 corrupt" in out


def test_bad_arguments_are_messages_not_tracebacks(home: Home, tmp_path: Path) -> None:
    vec, ids, _ = write_vectors(tmp_path)
    h = str(home.root)
    code, out = run("rebuild", "--home", h, "--vectors", str(vec), "--param", "bogus=1", "--quiet")
    assert code == 1 and "no parameter 'bogus'" in out
    code, out = run("rebuild", "--home", h, "--vectors", str(vec), "--param", "novalue", "--quiet")
    assert code == 2 and "key=value" in out
    code, out = run("status", "--home", h)
    assert code == 0 and "no generations" in out
    code, out = run("verify", "--home", h)
    assert code == 1 and "no active generation" in out


def test_console_script_runs_in_a_subprocess(home: Home, tmp_path: Path) -> None:
    vec, ids, _ = write_vectors(tmp_path, n=500)
    exe = Path(sys.executable).with_name("indexer")
    out = subprocess.run([str(exe), "rebuild", "--home", str(home.root), "--vectors", str(vec), "--ids", str(ids),
                          "--backend", "flat", "--quiet"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    status = subprocess.run([str(exe), "status", "--json"], capture_output=True, text=True, timeout=60,
                            env={**__import__("os").environ, "OMNISEARCH_HOME": str(home.root)})
    assert json.loads(status.stdout)[0]["state"] == "active"
