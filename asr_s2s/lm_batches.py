"""Batches of LM sentences drawn from a :class:`~asr_s2s.lm_data.TokenStream`, in memory bounded by a window.

The stream is cut into windows of about ``window_tokens`` tokens (window k holds the sentences that start in
tokens ``[k*W, (k+1)*W)``). An epoch visits the windows in a seeded random order; within a window the
sentences are sorted by length (stably), cut greedily into batches of at most ``max_batch_tokens`` padded
tokens (``<sos>``/``<eos>`` counted; a longer sentence goes alone) and the batches shuffled. A text of one
window (up to ``window_tokens`` tokens) is therefore batched exactly as the whole text was when it was held
in memory; a longer one keeps the sorting, and its shuffling, inside each window.

Only one window's tokens and offsets are in memory at a time, so an epoch over a 4 GB text needs
about ``window_tokens`` bytes (uint8 tokens) plus 8 bytes per sentence of the window, whatever the text.
"""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from asr_s2s.lm_data import TokenStream

PAD_ID = -1  # ignored by the loss
_PIECE = 1 << 20  # offsets read at a time when finding the windows


def windows(stream: TokenStream, window_tokens: int) -> list[tuple[int, int]]:
    """Sentence ranges ``[first, last)``: window k holds the sentences that start in tokens ``[k*W, (k+1)*W)``
    (empty windows left out). Reads the offsets ``_PIECE`` sentences at a time."""
    cuts, previous_start = [0], -1
    for first in range(0, stream.sentences, _PIECE):
        starts = stream.offsets(first, min(first + _PIECE, stream.sentences))[:-1]
        # the multiples of W in (the previous piece's last start, this piece's last start]
        targets = np.arange((previous_start // window_tokens + 1) * window_tokens, int(starts[-1]) + 1, window_tokens)
        cuts.extend((first + np.searchsorted(starts, targets, side="left")).tolist())
        previous_start = int(starts[-1])
    cuts.append(stream.sentences)
    cuts = sorted(set(cuts))
    return list(zip(cuts[:-1], cuts[1:]))


def cut_sorted(lengths: np.ndarray, max_tokens: int) -> list[tuple[int, int]]:
    """Ranges ``[a, b)`` of ascending ``lengths`` (``<sos>``/``<eos>`` counted), each as long as
    ``longest * count <= max_tokens`` allows, greedily; a sentence over the cap makes a batch of its own."""
    bounds, a, count = [], 0, len(lengths)
    while a < count:
        room = max(1, max_tokens // int(lengths[a]))  # no more can fit: none is shorter than lengths[a]
        window = lengths[a:a + room]
        padded = window * np.arange(1, len(window) + 1)  # non-decreasing: longest * count of each prefix
        b = a + max(1, int(np.searchsorted(padded, max_tokens, side="right")))
        bounds.append((a, b))
        a = b
    return bounds


def sorted_batches(lengths: np.ndarray, max_tokens: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """The stable length order of sentences of ``lengths`` (tokens, without ``<sos>``/``<eos>``) and
    the batches of that order, as :func:`cut_sorted` ranges."""
    order = np.argsort(lengths, kind="stable")
    return order, cut_sorted(lengths[order].astype(np.int64) + 2, max_tokens)


def shuffle_seed(seed: int, window: int) -> int:
    """The seed of window ``window``'s batch order in the epoch of ``seed`` (``seed`` itself for window 0)."""
    return seed + 1_000_003 * window


@dataclass(frozen=True)
class Position:
    """Where a batch comes from: the batches of its epoch before it, and its window of the stream."""

    batches_done: int  # batches of the epoch up to and including this one
    window: int  # index of its window in the stream
    first_token: int  # where the window starts in the stream's tokens


class StreamBatches:
    """The batches of a token stream, epoch by epoch; ``len()`` is the batches per epoch."""

    def __init__(self, stream: TokenStream, max_tokens: int, window_tokens: int) -> None:
        self.stream, self.max_tokens = stream, max_tokens
        self.windows = windows(stream, window_tokens) if stream.sentences else []
        self.counts = [len(self._plan(i)[1]) for i in range(len(self.windows))]

    def __len__(self) -> int:
        return sum(self.counts)

    def _plan(self, index: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
        first, last = self.windows[index]
        return sorted_batches(np.diff(self.stream.offsets(first, last)), self.max_tokens)

    def epoch(self, seed: int | None, skip: int = 0, sos: int = 1, eos: int = 1) -> Iterator[tuple[torch.Tensor, torch.Tensor, Position]]:
        """``(inputs, targets, position)`` of each batch (see :func:`collate_window`).

        :param seed: shuffles the windows and each window's batches; None keeps the stream's order (validation).
        :param skip: batches of the epoch to leave out at its start (already trained on before a resume).
        """
        order = list(range(len(self.windows)))
        if seed is not None:
            random.Random(f"windows:{seed}").shuffle(order)
        done = 0  # batches of the epoch in the windows before this one
        for index in order:
            count = self.counts[index]
            if done + count <= skip:
                done += count
                continue
            first, last = self.windows[index]
            offsets = self.stream.offsets(first, last)
            tokens = self.stream.read(int(offsets[0]), int(offsets[-1]))
            sentence_order, bounds = sorted_batches(np.diff(offsets), self.max_tokens)
            if seed is not None:
                random.Random(shuffle_seed(seed, index)).shuffle(bounds)
            start = max(0, skip - done)
            for k, (a, b) in enumerate(bounds[start:], start=start):
                inputs, targets = collate_window(tokens, offsets - offsets[0], sentence_order[a:b], sos, eos)
                yield inputs, targets, Position(done + k + 1, index, int(offsets[0]))
            done += count


def collate_window(tokens: np.ndarray, offsets: np.ndarray, rows: Sequence[int] | np.ndarray,
                   sos: int, eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(B, U)`` (``<sos>`` + tokens, padded with ``<eos>``) and targets ``(B, U)`` (tokens + ``<eos>``,
    padded with ``PAD_ID``) of sentences ``rows`` of a window (``tokens``, and ``offsets`` into them)."""
    rows = np.asarray(rows)
    starts, lengths = offsets[rows], offsets[rows + 1] - offsets[rows]
    width = int(lengths.max()) + 1
    tokens = tokens if len(tokens) else np.zeros(1, dtype=np.int64)  # a window of empty sentences
    position = np.arange(width)
    body = tokens[np.minimum(starts[:, None] + position, len(tokens) - 1)].astype(np.int64)  # past the end: ignored
    inside = position < lengths[:, None]
    targets = np.where(inside, body, np.where(position == lengths[:, None], eos, PAD_ID))
    inputs = np.concatenate([np.full((len(rows), 1), sos), np.where(inside[:, :-1], body[:, :-1], eos)], axis=1)
    return torch.from_numpy(inputs.astype(np.int64)), torch.from_numpy(targets.astype(np.int64))
