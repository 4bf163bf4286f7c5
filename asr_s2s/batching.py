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
    ) -> None:
        if max_batch_seconds <= 0:
            raise ValueError(f"max_batch_seconds must be positive, got {max_batch_seconds}")
        self.durations_s = list(durations_s)
        self.max_batch_seconds = max_batch_seconds
        self.shuffle = shuffle
        self.seed = seed
        self.max_batch_size = max_batch_size
        self.jitter = jitter if shuffle else 0.0
        self.sortagrad_epochs = sortagrad_epochs
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose order :meth:`__iter__` yields."""
        self.epoch = epoch

    def batches(self) -> list[list[int]]:
        """All batches of the current epoch, in order."""
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
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.batches())
