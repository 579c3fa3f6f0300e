"""Domain exceptions of the benchmarks; the CLI turns them into messages."""

from __future__ import annotations

from catalog.errors import OmniSearchError


class BenchmarkError(OmniSearchError):
    """Base class of the benchmarks' own errors."""


class UnknownDataset(BenchmarkError):
    """The data set name is not one the harness knows, or its files are missing."""


class GridError(BenchmarkError):
    """A parameter grid file is missing, malformed, or names a parameter a backend does not have."""


class NotLoopback(BenchmarkError):
    """The load generator was pointed at a host other than this machine's loopback interface."""


class NotReady(BenchmarkError):
    """A part the benchmark needs (an index, a generation, the evaluation) is not available yet."""
