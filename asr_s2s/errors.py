"""Exceptions users see. Each one names the file, line, key or plugin at fault."""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class AsrS2SError(Exception):
    """Base class for every error this toolkit raises on bad input."""


class AudioLoadError(AsrS2SError):
    """An audio file is missing, empty, corrupt or holds unusable samples."""


class ManifestError(AsrS2SError):
    """A manifest line or a corpus folder is malformed."""


class TokenizerError(AsrS2SError):
    """Text holds characters the vocabulary cannot represent."""


class ConfigError(AsrS2SError):
    """A config key is unknown, missing or has the wrong type."""


class PluginError(AsrS2SError):
    """A plugin failed to load, or a component name is unknown or claimed twice."""


class ScorerError(AsrS2SError):
    """A scorer raised during search, or returned scores of the wrong shape or dtype, or a NaN."""


class ModelPackageError(AsrS2SError):
    """A model package is missing files or does not match its weights."""


class CMVNError(AsrS2SError):
    """A CMVN statistics file is missing or malformed, or there were no frames to compute it from."""


class CheckpointError(AsrS2SError):
    """A training checkpoint is unreadable, unsafe, does not match the model, or cannot be written."""


class TranscriptionCancelled(AsrS2SError):
    """A transcription was stopped before it finished, because its caller no longer wants it."""


class TrainingError(AsrS2SError):
    """Training cannot go on: too many non-finite losses in a row, or no usable batch in an epoch."""


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """Return ' Did you mean X?' for the closest of ``known``, or ''."""
    close = difflib.get_close_matches(name, list(known), n=3, cutoff=0.6)
    if not close:
        return ""
    return " Did you mean " + " or ".join(repr(c) for c in close) + "?"
