"""Domain exceptions of the indexer; the CLI turns them into messages, the engine into status codes."""

from __future__ import annotations

from catalog.errors import DimensionMismatch, InvalidVector, OmniSearchError

__all__ = [
    "BuildGateFailed",
    "DimensionMismatch",
    "IndexNotReady",
    "IndexerError",
    "InsufficientMemory",
    "InvalidParameter",
    "InvalidVector",
    "ManifestError",
    "ShardCorrupt",
    "UnknownBackend",
]


class IndexerError(OmniSearchError):
    """Base class of the indexer's own errors."""


class ShardCorrupt(IndexerError):
    """A shard's files do not match the checksum recorded in the manifest, or are missing."""


class IndexNotReady(IndexerError):
    """No generation (or no such index) is available, or an index was searched before it was built."""


class BuildGateFailed(IndexerError):
    """A freshly built index missed the recall threshold of the build gate; it was not published."""


class InsufficientMemory(IndexerError):
    """Building or loading would need more memory than the machine has available."""


class UnknownBackend(IndexerError):
    """No ANN backend is registered under the requested name, or a parameter is not understood."""


class InvalidParameter(IndexerError):
    """A backend parameter, metric or k is not valid (unknown name, wrong value)."""


class ManifestError(IndexerError):
    """The manifest is missing, locked by another build, or asked for an impossible transition."""
