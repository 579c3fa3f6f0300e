"""The deployment home folder: where catalog.db, checkpoints, the manifest and generations live."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

ENV_VAR = "OMNISEARCH_HOME"
DEFAULT_HOME = ".omnisearch"

F = TypeVar("F", bound=Callable[..., Any])


@dataclass(frozen=True)
class Home:
    """Paths of one deployment; every tool derives its files from here."""

    root: Path  # the folder given by --home / OMNISEARCH_HOME / ./.omnisearch

    @classmethod
    def resolve(cls, path: str | os.PathLike[str] | None = None) -> Home:
        """Pick the home: explicit path, else $OMNISEARCH_HOME, else ./.omnisearch."""
        chosen = path if path is not None else os.environ.get(ENV_VAR, DEFAULT_HOME)
        return cls(Path(chosen).expanduser().resolve())

    def ensure(self) -> Home:
        """Create the folder (and parents) if it does not exist yet."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self

    @property
    def catalog_db(self) -> Path:
        return self.root / "catalog.db"

    @property
    def checkpoints(self) -> Path:
        return self.root / "checkpoints"

    @property
    def manifest_db(self) -> Path:
        return self.root / "manifest.db"

    @property
    def generations(self) -> Path:
        return self.root / "generations"

    @property
    def cache(self) -> Path:
        """Derived, re-creatable files (converted backbones, stand-in legacy spaces, ground truth)."""
        return self.root / "cache"


def home_option(func: F) -> F:
    """Click decorator adding `--home DIR` and passing a resolved `home: Home` to the command."""

    def _convert(ctx: click.Context, param: click.Parameter, value: str | None) -> Home:
        return Home.resolve(value)

    return click.option(
        "--home",
        "home",
        envvar=ENV_VAR,
        default=None,
        callback=_convert,
        metavar="DIR",
        help=f"Deployment folder (catalog.db, checkpoints, manifest, generations). "
        f"Env {ENV_VAR}; default ./{DEFAULT_HOME}.",
    )(func)
