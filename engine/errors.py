"""Domain exceptions of the engine; only engine/servicer.py turns them into gRPC status codes."""

from __future__ import annotations

from catalog.errors import OmniSearchError


class EngineError(OmniSearchError):
    """Base class of engine errors."""


class InvalidRequest(EngineError):
    """The request itself is wrong: unknown index, bad dimension, NaN, k out of range, bad text or filter."""


class NotServing(EngineError):
    """No generation is loaded yet (or the engine is shutting down)."""


class TextQueriesUnsupported(EngineError):
    """The served generation has no encoder checkpoint (user vectors) or no head for the index's space."""


class Overloaded(EngineError):
    """The encoder queue is full; the request is shed instead of queued without bound."""


class DeadlineExceeded(EngineError):
    """The caller's deadline passed before an expensive step could start or finish."""


class GenerationLoadFailed(EngineError):
    """A generation could not be loaded (missing files, checksum mismatch, no memory headroom)."""


class ManifestUnavailable(EngineError):
    """The manifest database does not exist or cannot be read."""
