"""Checkpoint averaging and model selection, as in icefall and ESPnet.

The weights of N epoch checkpoints (the last N, or the N best by a validation
metric from ``train_log.jsonl``) are averaged parameter by parameter and
written as a model package. ``--avg 1 --best-by valid_cer`` selects the single
best epoch.
"""

from __future__ import annotations

import json
import logging
import math
import os
from pathlib import Path

import torch

from asr_s2s.checkpoints import read_checkpoint
from asr_s2s.errors import AsrS2SError
from asr_s2s.files import write_text_atomically
from asr_s2s.package import load_package, save_package
from asr_s2s.registry import Registry
from asr_s2s.experiment import CHECKPOINT_DIR, LOG_FILE

log = logging.getLogger(__name__)

SELECTIONS = ("last", "valid_loss", "valid_cer")


class AverageError(AsrS2SError):
    """Too few checkpoints, or no validation results to select by."""


def epoch_checkpoints(exp_dir: str | os.PathLike) -> dict[int, Path]:
    """``{epoch: path}`` of every ``checkpoints/epoch-N.pt`` in ``exp_dir``."""
    folder = Path(exp_dir) / CHECKPOINT_DIR
    found = {}
    for path in folder.glob("epoch-*.pt") if folder.is_dir() else []:
        try:
            found[int(path.stem.split("-", 1)[1])] = path
        except ValueError:
            continue
    return dict(sorted(found.items()))


def epoch_metrics(exp_dir: str | os.PathLike) -> dict[int, dict]:
    """The last ``kind: epoch`` row per epoch of ``train_log.jsonl``."""
    path = Path(exp_dir) / LOG_FILE
    rows: dict[int, dict] = {}
    if path.is_file():
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue
            if row.get("kind") == "epoch":
                rows[int(row["epoch"])] = row
    return rows


def select_epochs(exp_dir: str | os.PathLike, n: int, best_by: str = "last") -> list[int]:
    """The epochs to average: the last ``n`` with checkpoints, or the ``n`` lowest by ``best_by``.

    :raises AverageError: if fewer than ``n`` checkpoints (with finite metrics) exist.
    """
    if best_by not in SELECTIONS:
        raise AverageError(f"--best-by must be one of {', '.join(SELECTIONS)}, got {best_by!r}")
    if n < 1:
        raise AverageError(f"--avg must be at least 1, got {n}")
    checkpoints = epoch_checkpoints(exp_dir)
    if best_by == "last":
        candidates = list(checkpoints)
    else:
        metrics = epoch_metrics(exp_dir)
        scored = [(metrics[e][best_by], e) for e in checkpoints
                  if e in metrics and isinstance(metrics[e].get(best_by), (int, float)) and math.isfinite(metrics[e][best_by])]
        candidates = sorted(e for _, e in sorted(scored)[:n])
    if len(candidates) < n:
        raise AverageError(
            f"{exp_dir}: asked to average {n} epochs by {best_by}, but only {len(candidates)} "
            f"checkpoint(s){'' if best_by == 'last' else ' with a finite ' + best_by} exist in {CHECKPOINT_DIR}/"
        )
    return candidates[-n:]


def average_state_dicts(paths: list[Path]) -> dict[str, torch.Tensor]:
    """Parameter-wise mean of the ``model`` weights of training checkpoints (float64 sums).

    Integer tensors (counters) are taken from the last checkpoint.
    """
    total: dict[str, torch.Tensor] = {}
    last: dict[str, torch.Tensor] = {}
    for path in paths:
        state = read_checkpoint(path, required=("model",))["model"]  # plain data only: nothing in it runs
        if last:
            shapes = {k: tuple(v.shape) for k, v in state.items()}
            if shapes != {k: tuple(v.shape) for k, v in last.items()}:
                raise AverageError(f"{path}: holds different weights (names or shapes) than {paths[0]}; "
                                   "only checkpoints of one model can be averaged")
        for key, value in state.items():
            if value.is_floating_point():
                total[key] = total[key] + value.double() if key in total else value.double()
            last[key] = value
    return {key: (total[key] / len(paths)).to(last[key].dtype) if key in total else last[key] for key in last}


def average_package(
    exp_dir: str | os.PathLike, n: int, best_by: str = "last", out: str | os.PathLike | None = None,
    registry: Registry | None = None,
) -> tuple[Path, list[int]]:
    """Write a model package of the averaged weights of the selected epochs.

    The model's config, tokens and CMVN come from ``exp_dir/model`` (written by
    ``asr-s2s train``); ``average.json`` in the new package records the epochs.

    :returns: the package path and the epochs averaged.
    """
    exp_dir = Path(exp_dir)
    epochs = select_epochs(exp_dir, n, best_by)
    registry = registry or Registry()
    model, config = load_package(exp_dir / "model", registry)
    paths = [epoch_checkpoints(exp_dir)[e] for e in epochs]
    try:
        model.load_state_dict(average_state_dicts(paths))
    except RuntimeError as exc:
        detail = str(exc).split("\n", 1)[-1].strip()
        raise AverageError(f"{exp_dir / 'model'}: its config does not match the checkpoints' weights: {detail}") from None
    out = Path(out) if out is not None else exp_dir / f"model_avg{n}_{best_by}"
    save_package(model, config.decode, out, registry)
    write_text_atomically(out / "average.json", json.dumps({"epochs": epochs, "best_by": best_by, "avg": n}) + "\n")
    log.info("averaged epochs %s (%s) into %s", epochs, best_by, out)
    return out, epochs
