"""Duration-bucketed batch sampling: utterances of similar length share a batch."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence

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
        return even_out(self._cut(), self.world_size, self.durations_s)

    def _cut(self, regroup: Callable[[list[list[int]]], list[list[int]]] | None = None) -> list[list[int]]:
        """The epoch's batches under ``max_batch_seconds``, ``regroup``-ed in duration order, then shuffled."""
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
        if regroup is not None:
            batches = regroup(batches)
        if self.shuffle and not sorting:
            rng.shuffle(batches)
        return batches

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


class GlobalBatchSampler(BucketBatchSampler):
    """Batches cut for all ranks at once: one batch of at most ``global_batch_seconds`` per optimizer step.

    The epoch's step batches are cut exactly as :class:`BucketBatchSampler` cuts batches (duration
    buckets, seed and epoch, SortaGrad) with ``global_batch_seconds`` as the cap, so they do not depend
    on the number of ranks. Each is split into ``world_size * accum_grad`` consecutive parts of
    near-equal size (:func:`split_step`), and rank ``r`` takes part ``a * world_size + r`` as its
    ``a``-th batch of the step. 1 GPU with ``accum_grad: 8`` and 8 GPUs with 1 thus train on the same
    step batches in the same order, and an epoch has the same number of steps on any number of GPUs.
    A part holds at most one utterance more than its share, so it can pass ``global_batch_seconds /
    (world_size * accum_grad)`` by one utterance. A step batch with fewer utterances than ranks (the
    longest utterances) is merged into its neighbour in duration order first (:func:`merge_short`), so that
    every rank's last batch of a step, the one DDP all-reduces, is never empty. So that this stays rare (it
    would change the step count with the world size), the last, partly filled bucket first shares the
    utterances of the one before it evenly (:func:`balance_tail`), whatever the world size.
    """

    def __init__(
        self, durations_s: Sequence[float], global_batch_seconds: float, accum_grad: int = 1, shuffle: bool = True,
        seed: int = 0, jitter: float = 0.1, sortagrad_epochs: int = 0, rank: int = 0, world_size: int = 1,
    ) -> None:
        super().__init__(durations_s, global_batch_seconds, shuffle=shuffle, seed=seed, jitter=jitter,
                         sortagrad_epochs=sortagrad_epochs, rank=rank, world_size=world_size)
        if accum_grad < 1:
            raise ValueError(f"accum_grad must be at least 1, got {accum_grad}")
        self.accum_grad = accum_grad

    def step_batches(self) -> list[list[int]]:
        """The epoch's batches, one per optimizer step, in order; each holds at least ``world_size`` utterances."""
        return self._cut(lambda batches: merge_short(balance_tail(batches), self.world_size))

    def global_batches(self) -> list[list[int]]:
        """Every rank's batches of the epoch: step by step, and within a step rank ``r``'s ``a``-th at ``a * W + r``."""
        return [part for batch in self.step_batches() for part in split_step(batch, self.world_size * self.accum_grad)]


def balance_tail(batches: list[list[int]]) -> list[list[int]]:
    """``batches`` (in duration order) with the last two sharing their utterances evenly when the last holds fewer.

    The pair holds the longest utterances, so each half's padded seconds stay within about the cap.
    """
    if len(batches) < 2 or len(batches[-1]) >= len(batches[-2]):
        return batches
    pair = batches[-2] + batches[-1]
    half = (len(pair) + 1) // 2
    return [*batches[:-2], pair[:half], pair[half:]]


def merge_short(batches: list[list[int]], minimum: int) -> list[list[int]]:
    """``batches`` (in duration order) with each one of fewer than ``minimum`` utterances joined to its neighbour."""
    merged: list[list[int]] = []
    for batch in batches:
        if merged and (len(batch) < minimum or len(merged[-1]) < minimum):
            merged[-1] = merged[-1] + list(batch)
        else:
            merged.append(list(batch))
    return merged


def split_step(batch: list[int], parts: int) -> list[list[int]]:
    """``batch`` cut into ``parts`` consecutive parts whose sizes differ by at most one, the larger ones last.

    With fewer utterances than parts, the first parts are empty: the last ``world_size`` parts (every rank's
    last batch of the step) hold one each as long as the batch holds ``world_size`` utterances.
    """
    base, extra = divmod(len(batch), parts)
    sizes = [base + (index >= parts - extra) for index in range(parts)]
    starts = [sum(sizes[:index]) for index in range(parts)]
    return [batch[start : start + size] for start, size in zip(starts, sizes)]
