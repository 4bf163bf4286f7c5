"""Core services a plugin may call, beyond the interfaces it implements (:mod:`asr_s2s.interfaces`).

A plugin reaches the core only through the modules in :data:`PLUGIN_FACING`: this one,
the interfaces and hooks, the errors, the building blocks plugins share (:mod:`asr_s2s.layers`
for models, :mod:`asr_s2s.augment`'s range checks and audio-folder reading for augmentations,
:mod:`asr_s2s.tokenizer`'s text normalisation, :mod:`asr_s2s.files`' atomic writes) and
:mod:`asr_s2s.model` for type hints. Everything else in ``asr_s2s`` may change without notice
(tests/test_architecture.py holds the built-in plugins to this).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from asr_s2s.interfaces import LanguageModel
    from asr_s2s.model import ASRModel

PLUGIN_FACING = (
    "asr_s2s.plugin_api", "asr_s2s.interfaces", "asr_s2s.hookspecs", "asr_s2s.errors", "asr_s2s.layers",
    "asr_s2s.augment", "asr_s2s.tokenizer", "asr_s2s.files", "asr_s2s.model",
)


def load_language_model(model: ASRModel, path: str | os.PathLike) -> LanguageModel:
    """The language-model package at ``path`` (``asr-s2s train-lm``'s ``EXP_DIR/lm``), ready to fuse with ``model``:
    the same tokens, on ``model``'s device, in eval mode.

    :raises ModelPackageError: for a broken package or a token list that differs from ``model``'s.
    """
    from asr_s2s.package import load_lm_package_for

    return load_lm_package_for(model, path)
