"""The optimizer side of a training step: the step plan (each rank's batch, accumulation, the schedule's
length), Adam with warm-up and cosine decay, bf16 autocast, gradients averaged over ranks by hand, and
the guard that turns running out of GPU memory into a skipped batch."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from asr_s2s.config import TrainConfig
from asr_s2s.experiment import warmup_cosine

log = logging.getLogger("asr_s2s.trainer")  # a training run's messages keep the trainer's logger name


# The bucket sampler fills a batch to about this share of its padded-seconds cap (its duration jitter pads
# the shorter utterances, and the next utterance rarely fits exactly): 0.92 at a 200 s cap, 0.94 at 400 s and
# above, on LibriSpeech-like durations (tests/test_step_plan.py). Only estimates use it; a run counts its batches.
PACKING = 0.94


@dataclass(frozen=True)
class StepPlan:
    """How a run turns its training audio into optimizer steps."""

    world_size: int  # ranks (GPUs) training together
    per_rank_batch_seconds: float  # the padded-audio cap of one batch on one rank
    accum_grad: int  # batches of each rank per optimizer step
    global_batch_seconds: float  # the padded-audio cap of one optimizer step, all ranks together
    steps_per_epoch: int
    epochs: int
    warmup_steps: int
    counted: bool = False  # steps_per_epoch counted from the epoch's batches; False: estimated from the audio

    @property
    def total_steps(self) -> int:
        return self.epochs * self.steps_per_epoch

    def describe(self) -> str:
        """The plan as the block a run logs at its start."""
        how = "counted from the batches" if self.counted else f"estimated at {PACKING:.0%} packing"
        share = self.warmup_steps / max(1, self.total_steps)
        return "\n".join([
            "step plan:",
            f"  world size             {self.world_size}",
            f"  per-rank batch         {self.per_rank_batch_seconds:g} padded audio-s",
            f"  accum_grad             {self.accum_grad}",
            f"  global batch           {self.global_batch_seconds:g} padded audio-s per optimizer step",
            f"  steps per epoch        {self.steps_per_epoch} ({how})",
            f"  total steps            {self.total_steps} ({self.epochs} epochs)",
            f"  warm-up steps          {self.warmup_steps} ({share:.1%} of the run)",
        ])


def batch_layout(config: TrainConfig, world_size: int) -> tuple[float, int]:
    """Each rank's batch cap in padded audio seconds, and ``accum_grad``, for ``world_size`` ranks.

    Without ``train.global_batch_seconds``: ``max_batch_seconds`` and ``accum_grad`` as configured. With it
    (G): ``accum_grad = ceil(G / (world_size * max_batch_seconds))``, the fewest batches per rank that keep
    each under ``max_batch_seconds``, and the per-rank batch is G's share, ``G / (world_size * accum_grad)``.
    """
    if config.global_batch_seconds is None:
        return config.max_batch_seconds, config.accum_grad
    share = config.global_batch_seconds / (world_size * config.max_batch_seconds)
    accum = max(1, math.ceil(share - 1e-9))
    return config.global_batch_seconds / (world_size * accum), accum


def plan_steps(
    config: TrainConfig, train_audio_seconds: float, world_size: int = 1, batches_per_rank: int | None = None,
) -> StepPlan:
    """The step plan of training ``train_audio_seconds`` of audio on ``world_size`` ranks with ``config``.

    :param batches_per_rank: the number of batches each rank takes in an epoch, where known (a run
        counts its sampler's); otherwise it is estimated from the audio at :data:`PACKING`.
    """
    per_rank, accum = batch_layout(config, world_size)
    global_batch = config.global_batch_seconds or per_rank * world_size * accum
    if batches_per_rank is not None:
        steps = math.ceil(batches_per_rank / accum)
    elif config.global_batch_seconds is not None:  # one cut batch per step, whatever the world size
        steps = math.ceil(train_audio_seconds / (global_batch * PACKING))
    else:
        steps = math.ceil(math.ceil(math.ceil(train_audio_seconds / (per_rank * PACKING)) / world_size) / accum)
    return StepPlan(world_size, per_rank, accum, global_batch, max(1, steps), config.epochs, config.warmup_steps,
                    counted=batches_per_rank is not None)


def log_plan(plan: StepPlan, config: TrainConfig) -> None:
    """Log ``plan`` at a run's start; warn where early stopping can cut the learning-rate schedule short."""
    log.info("%s", plan.describe())
    if config.early_stopping_patience is not None and config.final_lr_ratio < 1:
        log.warning("train.early_stopping_patience can end the run before the learning rate has decayed to its "
                    "minimum (train.final_lr_ratio x train.lr) at step %d, the end of train.epochs; the LibriSpeech "
                    "configs leave early stopping off", plan.total_steps)


def build_optimizer(
    model: torch.nn.Module, config: TrainConfig, total_steps: int,
) -> tuple[torch.optim.Adam, torch.optim.lr_scheduler.LambdaLR]:
    """Adam over ``model``'s parameters, and its schedule: linear warm-up, then cosine decay over ``total_steps``."""
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(config.warmup_steps, total_steps, config.final_lr_ratio)
    )
    return optimizer, scheduler


def autocast(device: torch.device, bf16: bool) -> torch.autocast:
    """bf16 autocast on ``device`` when ``bf16`` (training on CUDA); otherwise a no-op."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16)


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA's out-of-memory error (and other backends' "out of memory" RuntimeErrors)."""
    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(exc, oom_type) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def guarded(fn: Callable[..., Any], *args: Any) -> tuple[Any, bool]:
    """``(fn(*args), False)``, or ``(None, True)`` if it ran out of GPU memory (the error is gone by then)."""
    try:
        return fn(*args), False
    except RuntimeError as exc:
        if not is_out_of_memory(exc):
            raise
    return None, True


def release_memory(optimizer: torch.optim.Optimizer) -> None:
    """Free what an out-of-memory batch left behind: its gradients, and CUDA's cached blocks."""
    optimizer.zero_grad(set_to_none=True)
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def all_reduce_gradients(model: torch.nn.Module, world_size: int) -> None:
    """Average gradients over ranks by hand (when DDP's own reduction was skipped)."""
    import torch.distributed as dist

    for p in model.parameters():
        if p.grad is None:
            p.grad = torch.zeros_like(p)
        dist.all_reduce(p.grad)
        p.grad.div_(world_size)
