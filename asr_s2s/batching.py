"""Duration-bucketed batch sampling: utterances of similar length share a batch."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence

from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[int]]):
    """Batches of similar-duration utterances under a cap on padded audio seconds.

    Utterances are sorted by duration (with a little per-epoch jitter so that
    batches differ between epochs), cut greedily into batches whose
    ``len(batch) * longest`` stays within ``max_batch_seconds``, and the batch
    order is shuffled. An utterance longer than the cap gets a batch of its own.
    The order depends only on ``seed`` and the epoch (see :meth:`set_epoch`).
    During the first ``sortagrad_epochs`` epochs the batches come shortest first
    instead (SortaGrad, Amodei et al. 2016), which helps attention find its
    alignment early.

    **Sharding across ranks** (``world_size > 1``, as under ``torchrun``): every
    rank computes the same epoch's batch list (:meth:`global_batches`) and rank
    ``r`` takes batches ``r, r + W, r + 2W, ...``, so that training step ``k``
    of the ``W`` ranks together covers global batches ``kW .. kW + W - 1``. So
    that every rank gets the same number of batches (each step is one
    all-reduce on every rank) with no utterance duplicated or lost, the list is
    first evened out to a multiple of ``W`` (:func:`even_out`): up to the next
    multiple, by splitting the batch with the most utterances into two halves,
    again and again; only when there are too few utterances for that, down to
    the multiple below, by merging the two smallest batches (which can pass
    ``max_batch_seconds``). Fewer utterances than ranks is an error.
    """

    def __init__(
        self,
        durations_s: Sequence[float],
        max_batch_seconds: float,
        shuffle: bool = True,
        seed: int = 0,
        max_batch_size: int | None = None,
        jitter: float = 0.1,
        sortagrad_epochs: int = 0,
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        if max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be positive, got {max_batch_seconds}")
        if world_size < 1 or not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} is not in a world of {world_size} process(es)")
        if len(durations_s) < world_size:
            raise ValueError(f"{len(durations_s)} utterance(s) cannot be shared among {world_size} ranks")
        self.durations_s = list(durations_s)
        self.max_batch_seconds = max_batch_seconds
        self.shuffle = shuffle
        self.seed = seed
        self.max_batch_size = max_batch_size
        self.jitter = jitter if shuffle else 0.0
        self.sortagrad_epochs = sortagrad_epochs
        self.rank = rank
        self.world_size = world_size
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = epoch

    def global_batches(self) -> list[list[int]]:
        """All batches of the current epoch over every rank, in order (a multiple of ``world_size``)."""
        rng = random.Random(self.seed * 1_000_003 + self.epoch)
        sorting = self.epoch < self.sortagrad_epochs
        jitter = 0.0 if sorting else self.jitter
        keys = [d * (1.0 + jitter * (rng.random() - 0.5)) for d in self.durations_s]
        order = sorted(range(len(keys)), key=keys.__getitem__)
        batches: list[list[int]] = []
        current: list[int] = []
        longest = 0.0
        for index in order:
            duration = self.durations_s[index]
            new_longest = max(longest, duration)
            full = self.max_batch_size is not None and len(current) >= self.max_batch_size
            if current and (new_longest * (len(current) + 1) > self.max_batch_seconds or full):
                batches.append(current)
                current, new_longest = [], duration
            current.append(index)
            longest = new_longest
        if current:
            batches.append(current)
        if self.shuffle and not sorting:
            rng.shuffle(batches)
        return even_out(batches, self.world_size, self.durations_s)

    def batches(self) -> list[list[int]]:
        """This rank's batches of the current epoch, in order."""
        return self.global_batches()[self.rank :: self.world_size]

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())


def even_out(batches: list[list[int]], world_size: int, durations_s: Sequence[float]) -> list[list[int]]:
    """``batches`` re-cut to a multiple of ``world_size`` batches, each utterance still exactly once.

    Up to the next multiple: the batch with the most utterances (the first such)
    is split into two halves in place, again and again. Only when there are too
    few utterances for that, down to the multiple below: the two batches with
    the fewest padded seconds are merged, again and again.
    """
    batches = [list(b) for b in batches]
    short = len(batches) % world_size
    if not short:
        return batches
    if sum(map(len, batches)) >= len(batches) + world_size - short:
        for _ in range(world_size - short):
            largest = max(range(len(batches)), key=lambda i: len(batches[i]))
            batch = batches[largest]
            half = (len(batch) + 1) // 2
            batches[largest : largest + 1] = [batch[:half], batch[half:]]
    else:
        for _ in range(short):
            padded = [len(b) * max(durations_s[i] for i in b) for b in batches]
            a, b = sorted(range(len(batches)), key=padded.__getitem__)[:2]
            batches[min(a, b)] = batches[min(a, b)] + batches[max(a, b)]
            del batches[max(a, b)]
    return batches
