"""The command lines: every command has help with an example; catalog commands run for real."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

import click
import pytest
from click.testing import CliRunner

from catalog import Home

GROUPS = ["catalog", "encoders", "indexer", "engine", "benchmarks"]


def _commands(group: click.Group, prefix: str = "") -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    for name, cmd in sorted(group.commands.items()):
        out.append((f"{prefix}{name}", cmd))
        if isinstance(cmd, click.Group):
            out.extend(_commands(cmd, f"{prefix}{name} "))
    return out


@pytest.mark.parametrize("package", GROUPS)
def test_every_command_has_help_and_home(package: str) -> None:
    group = importlib.import_module(f"{package}.cli").cli
    assert isinstance(group, click.Group)
    for name, cmd in _commands(group):
        if isinstance(cmd, click.Group):
            continue
        assert cmd.help and len(cmd.help.strip()) > 10, f"{package} {name} has no help"
        assert "Example" in cmd.help, f"{package} {name} help has no example"
        result = CliRunner().invoke(group, [*name.split(), "--help"])
        assert result.exit_code == 0, result.output
        assert "--home" in result.output, f"{package} {name} does not take --home"


def _run(*args: str, home: Home) -> subprocess.CompletedProcess[str]:
    exe = Path(sys.executable).with_name("catalog")
    return subprocess.run([str(exe), *args, "--home", str(home.root)], capture_output=True, text=True, timeout=300)


def test_catalog_commands_end_to_end(home: Home, tmp_path: Path) -> None:
    assert _run("import", "esci", home=home).returncode == 0
    split = _run("split", "--by", "query", "--dev", "0.5", "--seed", "1", home=home)
    assert split.returncode == 0 and "train=" in split.stdout
    stats = _run("stats", "--json", home=home)
    data = json.loads(stats.stdout)
    assert data["entities"]["product/es"] > 0 and data["entities"]["product/en"] > 0
    assert any(key.endswith("/dev") for key in data["engagements"])


def test_catalog_errors_exit_nonzero_with_message(home: Home, tmp_path: Path) -> None:
    missing = _run("import", "homedepot", home=home)
    assert missing.returncode == 1 and "needs PATH" in missing.stderr
    nowhere = _run("import", "jsonl", str(tmp_path / "nope"), home=home)
    assert nowhere.returncode == 1 and "does not exist" in nowhere.stderr
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "queries.jsonl").write_text('{"id": "q", "text": ""}\n', encoding="utf-8")
    strict = _run("import", "jsonl", str(bad), "--strict", home=home)
    assert strict.returncode == 1 and "queries.jsonl:1: query 'q' has empty text" in strict.stderr
    assert "nothing imported" in strict.stderr
    assert _run("stats", home=home).returncode == 1  # no catalog was created by the failed import
