"""Domain exceptions shared by every package; CLIs and servicers translate them, nothing else does."""

from __future__ import annotations


class OmniSearchError(Exception):
    """Base class of every error the project raises on purpose."""


class CatalogError(OmniSearchError):
    """The catalog file is missing, of an unknown schema version, or inconsistent."""


class ImportRejected(OmniSearchError):
    """An import in strict mode met a bad row; nothing was written."""

    def __init__(self, message: str, rejected: list[object] | None = None) -> None:
        super().__init__(message)
        self.rejected = rejected or []  # the Rejection records, for the CLI to print


class IdClash(OmniSearchError):
    """An id already belongs to a record of another source."""


class DimensionMismatch(OmniSearchError):
    """A vector does not have the dimension its space or index declares."""


class InvalidVector(OmniSearchError):
    """A vector holds NaN or infinite values."""
