"""What every training run shares, the acoustic model's and the language model's: seeding, the
learning-rate schedule, and the layout of an experiment folder."""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import numpy as np
import torch

CHECKPOINT_DIR = "checkpoints"  # EXP_DIR/checkpoints/epoch-N.pt and step-N.pt
LOG_FILE = "train_log.jsonl"  # EXP_DIR/train_log.jsonl: one JSON row per logged step and per epoch


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
