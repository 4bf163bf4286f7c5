"""The ``asr-s2s`` command: one module per command or family, shared flags in :mod:`asr_s2s.cli.options`.

Results go to stdout, logs to stderr. Exit codes: 0 success, 1 some inputs
failed (e.g. one bad audio file), 2 bad usage or bad input (config, manifest,
model, plugin), 141 stdout closed early.

========================  =====================================================
module                    commands
========================  =====================================================
:mod:`.plugins`           ``plugins``
:mod:`.data`              ``download``, ``prepare``, ``compute-cmvn``, ``augment``, ``tokens``, ``lm-text``
:mod:`.train`             ``train``
:mod:`.lm`                ``train-lm``
:mod:`.average`           ``average``
:mod:`.results`           ``results`` (a recipe's best weights, tables and RESULTS.md)
:mod:`.evaluate`          ``evaluate``
:mod:`.transcribe`        ``transcribe``
:mod:`.serve`             ``serve`` (the OpenAI-compatible server of :mod:`asr_s2s.server`)
:mod:`.options`           exit codes, ``--device``/``--threads``, the decode flags (``decode_overrides``)
:mod:`.main`              the parser, global flags, ``main``
========================  =====================================================
"""

from asr_s2s.cli.main import build_parser, main

__all__ = ["build_parser", "main"]
