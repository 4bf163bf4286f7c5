"""torch.distributed from torchrun's environment, and helpers that do nothing in one process.

``torchrun --nproc_per_node=N`` (or ``--nnodes`` with a rendezvous endpoint for
several machines) starts N copies of a command and sets ``RANK``,
``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` in each.
:func:`init_from_env` reads them: NCCL on CUDA devices (one GPU per local
rank), gloo on the CPU. Without them everything here is a no-op for one process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import torch
import torch.distributed as dist

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass(frozen=True)
class DistInfo:
    """This process's place: global ``rank`` of ``world_size``, ``local_rank`` on its machine, and its device."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: str = "cpu"

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def init_from_env(device: str = "cpu") -> DistInfo:
    """Join the process group that torchrun set up, if any.

    :param device: ``cpu``, ``cuda`` or ``cuda:K``; under torchrun a CUDA
        device becomes ``cuda:LOCAL_RANK``.
    :returns: this process's rank, world size, local rank and device.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistInfo(device=device)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    cuda = device.startswith("cuda")
    if cuda:
        device = f"cuda:{local_rank}"
        torch.cuda.set_device(local_rank)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    log.info("rank %d of %d (local rank %d) on %s", rank, world_size, local_rank, device)
    return DistInfo(rank, world_size, local_rank, device)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def is_main() -> bool:
    """True on rank 0, the one process that writes checkpoints, logs and packages."""
    return get_rank() == 0


def barrier() -> None:
    if is_distributed():
        dist.barrier()


def all_gather_objects(obj: Any) -> list[Any]:
    """Every rank's ``obj`` (picklable), in rank order; ``[obj]`` in one process."""
    if not is_distributed():
        return [obj]
    gathered: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(gathered, obj)
    return gathered


def any_rank(flag: bool) -> bool:
    """True if ``flag`` is true on any rank, so that every rank takes the same branch."""
    if not is_distributed():
        return flag
    return any(all_gather_objects(bool(flag)))


def cleanup() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def all_true(flag: bool) -> bool:
    """True only if ``flag`` is true on every rank."""
    return not any_rank(not flag)


def on_main(fn: Callable[[], T], failure: Callable[[str], Exception]) -> T | None:
    """Run ``fn`` on rank 0 alone, and fail on every rank at once if it fails there.

    Rank 0 broadcasts whether ``fn`` succeeded before any rank goes on, so that a failure there (a full
    disk under a checkpoint) stops the other ranks with its message at once, instead of leaving them
    waiting in their next collective until the NCCL timeout. In one process it just calls ``fn``.

    :param failure: builds the error the other ranks raise from rank 0's message.
    :returns: ``fn()``'s result on rank 0, None on the others.
    :raises: on rank 0, ``fn``'s own error; on the others, ``failure(message)``.
    """
    if not is_distributed():
        return fn()
    result, error, outcome = None, None, [None]
    if is_main():
        try:
            result = fn()
        except Exception as exc:  # noqa: BLE001 - every failure is passed on to the other ranks, then re-raised
            error, outcome = exc, [f"{type(exc).__name__}: {exc}"]
    dist.broadcast_object_list(outcome, src=0)
    if error is not None:
        raise error
    if outcome[0] is not None:
        raise failure(outcome[0])
    return result


def gather_or_fail(fn: Callable[[], T], failure: Callable[[int, str], Exception],
                   catch: tuple[type[BaseException], ...] = (Exception,)) -> list[T]:
    """Run ``fn`` on every rank and gather the results, or fail on every rank at once if it failed on any.

    Each rank passes on its result, or the message of a ``catch`` error, before any rank goes on, so that
    one rank's failure (a full disk under its outputs) stops the others with its message instead of leaving
    them waiting in their next collective. In one process it is ``[fn()]``.

    :param failure: builds the error a rank raises from another rank's number and message.
    :returns: every rank's result, in rank order.
    :raises: on a rank where ``fn`` failed, its own error; on the others, ``failure(rank, message)`` for the
        first rank that failed.
    """
    if not is_distributed():
        return [fn()]
    result, error, message = None, None, None
    try:
        result = fn()
    except catch as exc:
        error, message = exc, f"{type(exc).__name__}: {exc}"
    outcomes = all_gather_objects((result, message))
    if error is not None:
        raise error
    for rank, (_, other) in enumerate(outcomes):
        if other is not None:
            raise failure(rank, other)
    return [outcome for outcome, _ in outcomes]
