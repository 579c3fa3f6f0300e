"""Parameter grids: per backend, lists of build and search parameter values whose product is measured.

A grid file is TOML:

    [settings]
    runs = 3
    modes = ["batch-1t", "batch-2t", "single-1t", "single-2t"]

    [backends.hnswlib]
    build = { M = [16, 32], ef_construction = [200] }
    search = { ef = [10, 20, 40, 80] }

Bundled grids live in `benchmarks/grids/` and are named without the suffix (`default`, `quick`).
"""

from __future__ import annotations

import itertools
import tomllib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from benchmarks.errors import GridError

GRIDS_DIR = Path(__file__).resolve().parent / "grids"
MODES = ("batch-1t", "batch-2t", "single-1t", "single-2t")


@dataclass(frozen=True)
class Settings:
    """How each point is measured."""

    runs: int = 3  # timed repetitions per point; the best (highest QPS) counts, as in ann-benchmarks
    single_queries: int = 1000  # queries timed one per call (the first ones of xq), bounding the time it takes
    modes: tuple[str, ...] = MODES  # batched / one query per call, with 1 or 2 threads
    raw: bool = True  # also measure the libraries called directly at the same parameters
    build_threads: int = -1  # threads used to build (-1: all cores)
    max_queries: int | None = None  # use at most this many queries of the data set (None: all)

    def __post_init__(self) -> None:
        bad = [m for m in self.modes if m not in MODES]
        if bad:
            raise GridError(f"unknown modes {bad}; known: {list(MODES)}")
        if self.runs < 1 or self.single_queries < 1:
            raise GridError("runs and single_queries must be >= 1")


@dataclass(frozen=True)
class BackendGrid:
    """One backend's build x search parameter lists."""

    backend: str  # a name of the indexer's backend registry
    build: dict[str, list[Any]] = field(default_factory=dict)  # parameter -> values to build with
    search: dict[str, list[Any]] = field(default_factory=dict)  # parameter -> values to search with

    def builds(self) -> list[dict[str, Any]]:
        return _product(self.build)

    def searches(self) -> list[dict[str, Any]]:
        return _product(self.search)


@dataclass(frozen=True)
class Grid:
    """A named grid file, parsed."""

    name: str  # bundled name or file path
    settings: Settings
    backends: dict[str, BackendGrid]

    def for_backends(self, names: list[str] | None) -> list[BackendGrid]:
        """The grids of `names` (all of the file when None); a backend the file lacks runs its defaults."""
        if not names:
            return list(self.backends.values())
        return [self.backends.get(n, BackendGrid(n)) for n in names]


def _product(spec: dict[str, list[Any]]) -> list[dict[str, Any]]:
    if not spec:
        return [{}]
    keys = list(spec)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*(spec[k] for k in keys))]


def _as_lists(where: str, table: Any) -> dict[str, list[Any]]:
    if not isinstance(table, dict):
        raise GridError(f"{where} must be a table of parameter = [values]")
    out: dict[str, list[Any]] = {}
    for key, value in table.items():
        values = value if isinstance(value, list) else [value]
        if not values:
            raise GridError(f"{where}.{key} has no values")
        out[str(key)] = values
    return out


def _check_params(grid: BackendGrid) -> None:
    from indexer.backends import backend_class
    from indexer.errors import UnknownBackend

    try:
        cls = backend_class(grid.backend)
    except UnknownBackend as exc:
        raise GridError(str(exc)) from None
    aliases = getattr(cls, "ALIASES", {})
    build_known = set(getattr(cls, "BUILD_DEFAULTS", {}))
    search_known = set(getattr(cls, "SEARCH_DEFAULTS", {}))
    for what, spec, known in (("build", grid.build, build_known), ("search", grid.search, search_known)):
        for key in spec:
            if aliases.get(key, key) not in known:
                raise GridError(f"{grid.backend}: {key!r} is not a {what} parameter; known: {sorted(known)}")


def parse_grid(text: str, name: str) -> Grid:
    """Parse TOML text into a Grid, checking every parameter name against the backend registry."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise GridError(f"{name}: {exc}") from None
    raw_settings = data.get("settings", {})
    known = {f.name for f in fields(Settings)}
    unknown = set(raw_settings) - known
    if unknown:
        raise GridError(f"{name}: unknown settings {sorted(unknown)}; known: {sorted(known)}")
    if "modes" in raw_settings:
        raw_settings["modes"] = tuple(raw_settings["modes"])
    settings = Settings(**raw_settings)
    backends: dict[str, BackendGrid] = {}
    for backend, table in data.get("backends", {}).items():
        if not isinstance(table, dict):
            raise GridError(f"{name}: [backends.{backend}] must be a table")
        extra = set(table) - {"build", "search"}
        if extra:
            raise GridError(f"{name}: [backends.{backend}] takes build and search, not {sorted(extra)}")
        grid = BackendGrid(
            backend,
            _as_lists(f"backends.{backend}.build", table.get("build", {})),
            _as_lists(f"backends.{backend}.search", table.get("search", {})),
        )
        _check_params(grid)
        backends[backend] = grid
    return Grid(name, settings, backends)


def load_grid(name_or_path: str) -> Grid:
    """A bundled grid by name (`default`, `quick`) or a TOML file by path."""
    path = Path(name_or_path)
    if not path.suffix and (GRIDS_DIR / f"{name_or_path}.toml").exists():
        path = GRIDS_DIR / f"{name_or_path}.toml"
    if not path.exists():
        bundled = sorted(p.stem for p in GRIDS_DIR.glob("*.toml"))
        raise GridError(f"no grid file {name_or_path!r}; bundled grids: {bundled}")
    return parse_grid(path.read_text(), name_or_path)
