"""What every training run shares, the acoustic model's and the language model's: seeding, the
learning-rate schedule, and the layout of an experiment folder."""

from __future__ import annotations

import contextlib
import math
import os
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import torch

from asr_s2s.errors import TrainingError

CHECKPOINT_DIR = "checkpoints"  # EXP_DIR/checkpoints/epoch-N.pt and step-N.pt
LOG_FILE = "train_log.jsonl"  # EXP_DIR/train_log.jsonl: one JSON row per logged step and per epoch
LOCK_FILE = ".lock"  # EXP_DIR/.lock: held by the run training in the folder


def seed_everything(seed: int) -> None:
    """Seed Python's, numpy's and torch's generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(warmup_steps: int, total_steps: int, final_ratio: float) -> Callable[[int], float]:
    """LR multiplier: linear warm-up over ``warmup_steps``, then cosine decay to ``final_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


@contextlib.contextmanager
def lock_experiment(exp_dir: str | os.PathLike) -> Iterator[None]:
    """Hold ``EXP_DIR/.lock`` while a run trains there, so that a second run on the same folder (a scheduler's
    requeue while the first still runs) is refused instead of interleaving logs and deleting checkpoints.

    The lock is an ``flock``: the system drops it when its process ends, however it ends, so a killed run
    never leaves a stale lock. (Some network filesystems do not honour ``flock``.)

    :raises TrainingError: naming the process that holds the folder.
    """
    import fcntl

    path = Path(exp_dir) / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode("utf-8", "replace").strip() or "another process"
            raise TrainingError(
                f"{exp_dir}: another run is training in this experiment folder ({holder}); wait for it to end, "
                "stop it, or give another --exp-dir"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {os.uname().nodename}, since {time.strftime('%Y-%m-%d %H:%M:%S')}\n"
                  .encode(), 0)
        yield
    finally:
        os.close(fd)  # releases the lock
