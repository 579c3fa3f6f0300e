"""Domain exceptions of the encoders package."""

from __future__ import annotations

from catalog.errors import OmniSearchError


class EncoderError(OmniSearchError):
    """Base class of the encoders' errors."""


class ConfigError(EncoderError):
    """A training or model configuration is invalid (unknown key, bad value, unknown preset)."""


class CheckpointError(EncoderError):
    """A checkpoint directory is missing files, corrupt, or of another format version."""


class UnknownSpace(EncoderError):
    """A query embedding space was asked for that the model does not have."""


class NoTrainingData(EncoderError):
    """No task has training pairs (run `catalog import ...` and `catalog split ...` first)."""


class EvaluationError(EncoderError):
    """Evaluation input is missing or inconsistent (no dev split, unreadable qrels, ...)."""
