"""Presets and the shipped ablation configs load and pass validation; bad files give a ConfigError."""

from __future__ import annotations

from pathlib import Path

import pytest

from encoders.config import PRESETS, load_toml, preset, validate
from encoders.errors import ConfigError

ABLATIONS = sorted((Path(__file__).parent.parent / "benchmarks" / "ablations").glob("*.toml"))


@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_validate(name: str) -> None:
    validate(preset(name))


@pytest.mark.parametrize("path", ABLATIONS, ids=[p.stem for p in ABLATIONS])
def test_ablation_configs_load_and_validate(path: Path) -> None:
    cfg = load_toml(path)
    validate(cfg)
    assert cfg.train.name == path.stem  # results are written under the run's name


def test_a_tasks_table_replaces_the_presets(tmp_path: Path) -> None:
    f = tmp_path / "one.toml"
    f.write_text('preset = "full"\n[train.tasks]\n"query->pin" = 1.0\n')
    assert load_toml(f).train.tasks == {"query->pin": 1.0}
    assert len(preset("full").train.tasks) == 5


@pytest.mark.parametrize("text, match", [
    ('preset = "huge"\n', "unknown preset 'huge'"),
    ("[train]\nnot_a_key = 1\n", "unknown key"),
    ("[train\n", "cannot read config"),
])
def test_bad_config_files(tmp_path: Path, text: str, match: str) -> None:
    f = tmp_path / "bad.toml"
    f.write_text(text)
    with pytest.raises(ConfigError, match=match):
        load_toml(f)
