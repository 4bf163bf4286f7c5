"""The optimizer side of a training step: Adam with warm-up and cosine decay, bf16 autocast, gradients
averaged over ranks by hand, and the guard that turns running out of GPU memory into a skipped batch."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from asr_s2s.config import TrainConfig
from asr_s2s.experiment import warmup_cosine


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
