"""From manifest entries to padded feature and token batches."""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset, Sampler

from asr_s2s.audio import MAX_DURATION_S, SAMPLE_RATE_HZ, AudioTooLongError, load_audio
from asr_s2s.augment import AugmentationChain, Failure
from asr_s2s.batching import BucketBatchSampler
from asr_s2s.errors import AsrS2SError, TokenizerError
from asr_s2s.features import fbank
from asr_s2s.interfaces import Signal
from asr_s2s.manifest import Utterance, check_duration, duration_tolerance_s
from asr_s2s.tokenizer import CharTokenizer, normalize_text

log = logging.getLogger(__name__)

IGNORE_ID = -1  # token padding, ignored by the losses


@dataclass(frozen=True)
class Example:
    """One loaded utterance: features ``(T, F)`` and token ids ``(U,)``."""

    id: str
    feats: torch.Tensor
    tokens: torch.Tensor
    text: str
    duration_s: float  # of the (augmented) audio
    augment_notes: tuple[str, ...] = ()  # what the augmentations did
    augment_failures: tuple[Failure, ...] = ()  # augmentations skipped for this utterance, and why


@dataclass(frozen=True)
class Batch:
    """A padded batch. Items that failed to load are listed in ``failed`` with the reason."""

    ids: list[str]
    feats: torch.Tensor  # (B, T, F)
    feat_lengths: torch.Tensor  # (B,)
    tokens: torch.Tensor  # (B, U), padded with IGNORE_ID
    token_lengths: torch.Tensor  # (B,)
    texts: list[str]
    failed: list[tuple[str, str]] = field(default_factory=list)
    audio_seconds: float = 0.0  # unpadded audio in the batch
    augment_failures: list[tuple[str, Failure]] = field(default_factory=list)  # (utterance id, what failed)

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.ids, self.feats.to(device), self.feat_lengths.to(device), self.tokens.to(device),
            self.token_lengths.to(device), self.texts, self.failed, self.audio_seconds, self.augment_failures,
        )


class SpeechDataset(Dataset):
    """Loads audio and computes fbank features on access (in DataLoader workers).

    With ``cache`` the features of each item are kept in memory after their
    first use (about 115 MB per hour of audio, per worker process), which
    saves recomputing them every epoch on small corpora.

    Transcripts are normalised and tokenised up front, so that unrepresentable
    text is reported before training starts, never silently dropped.

    With an ``augment`` chain (training only; see :mod:`asr_s2s.augment`), an
    item is addressed as ``(index, epoch)`` (plain ``index`` means epoch 0) and
    the chain's entries for that utterance and epoch are applied. The cache
    then keeps only clean features: an item whose audio is augmented is
    recomputed, and feature-stage augmentations (SpecAugment) run on the cached
    features each time.
    """

    def __init__(
        self, utterances: Sequence[Utterance], tokenizer: CharTokenizer, require_text: bool = True, cache: bool = False,
        augment: AugmentationChain | None = None,
    ) -> None:
        self.utterances = list(utterances)
        self.cache: dict[int, tuple[torch.Tensor, float]] | None = {} if cache else None  # index -> (feats, seconds)
        self.augment = augment if augment else None
        self.texts = [normalize_text(u.text) for u in self.utterances]
        self.token_ids: list[list[int]] = []
        problems: list[str] = []
        for utt, text in zip(self.utterances, self.texts):
            try:
                if require_text and not text:
                    raise TokenizerError(f"utterance {utt.id}: transcript is empty")
                self.token_ids.append(tokenizer.encode(text, where=f"utterance {utt.id}") if require_text else [])
            except TokenizerError as exc:
                problems.append(str(exc))
        if problems:
            shown = "\n  ".join(problems[:10])
            more = f"\n  ... and {len(problems) - 10} more" if len(problems) > 10 else ""
            raise TokenizerError(f"{len(problems)} transcript(s) cannot be used:\n  {shown}{more}")

    def __len__(self) -> int:
        return len(self.utterances)

    def subset(self, indices: Sequence[int]) -> SpeechDataset:
        """The utterances at ``indices``, in that order, as a dataset of their own.

        It shares this one's tokens (no re-tokenising), cached features and augmentation chain;
        the chain's draws follow the new positions, as for a manifest holding only these utterances.
        """
        part = copy.copy(self)
        part.utterances = [self.utterances[i] for i in indices]
        part.texts = [self.texts[i] for i in indices]
        part.token_ids = [self.token_ids[i] for i in indices]
        if self.cache is not None:
            part.cache = {new: self.cache[old] for new, old in enumerate(indices) if old in self.cache}
        return part

    def __getitem__(self, key: int | tuple[int, int]) -> Example | tuple[str, str]:
        """The example at ``index`` or ``(index, epoch)``, or ``(id, reason)`` if its audio cannot be used."""
        index, epoch = key if isinstance(key, tuple) else (key, 0)
        utt = self.utterances[index]
        plan = self.augment.plan(index, epoch) if self.augment is not None else None
        failures: list[Failure] = []
        clean = plan is None or not plan.changes_signal
        notes: tuple[str, ...] = ()
        cached = self.cache.get(index) if self.cache is not None and clean else None
        if cached is not None:
            feats, duration_s = cached
        else:
            try:
                signal = Signal(load_utterance_audio(utt), utterance=utt)
            except AsrS2SError as exc:
                return (utt.id, str(exc))
            if not clean:
                signal = self.augment.apply_signal(plan, signal, failures)
            feats, duration_s, notes = fbank(signal.waveform, vtln_warp=signal.vtln_warp), len(signal.waveform) / SAMPLE_RATE_HZ, signal.notes
            if self.cache is not None and clean:
                self.cache[index] = (feats, duration_s)
        if plan is not None and plan.features:
            feats = self.augment.apply_features(plan, feats, failures)
        tokens = torch.tensor(self.token_ids[index], dtype=torch.long)
        return Example(utt.id, feats, tokens, self.texts[index], duration_s, notes, tuple(failures))


def load_utterance_audio(utt: Utterance) -> np.ndarray:
    """An utterance's 16 kHz audio, checked against its manifest duration (batching trusts it).

    Decoding stops as soon as the audio runs past what the manifest allows, so a wrong
    entry costs no more memory than a right one.

    :raises AsrS2SError: naming the file: unreadable audio, or a duration far from the manifest's.
    """
    longest_s = utt.duration + duration_tolerance_s(utt.duration)
    try:
        wave = load_audio(utt.audio, max_duration_s=min(longest_s, MAX_DURATION_S))
    except AudioTooLongError as exc:
        if longest_s >= MAX_DURATION_S:
            raise
        check_duration(utt, exc.decoded_s, at_least=True)
        raise
    check_duration(utt, len(wave) / SAMPLE_RATE_HZ)
    return wave


def collate(items: Sequence[Example | tuple[str, str]]) -> Batch:
    """Pad examples into a :class:`Batch`; failed items go to ``Batch.failed``."""
    good = [it for it in items if isinstance(it, Example)]
    failed = [it for it in items if not isinstance(it, Example)]
    if not good:
        no_lengths = torch.zeros(0, dtype=torch.long)
        return Batch([], torch.zeros(0, 0, 0), no_lengths, torch.zeros(0, 0, dtype=torch.long), no_lengths, [], failed)
    return Batch(
        ids=[e.id for e in good],
        feats=pad_sequence([e.feats for e in good], batch_first=True),
        feat_lengths=torch.tensor([e.feats.shape[0] for e in good], dtype=torch.long),
        tokens=pad_sequence([e.tokens for e in good], batch_first=True, padding_value=IGNORE_ID),
        token_lengths=torch.tensor([len(e.tokens) for e in good], dtype=torch.long),
        texts=[e.text for e in good],
        failed=failed,
        audio_seconds=sum(e.duration_s for e in good),
        augment_failures=[(e.id, f) for e in good for f in e.augment_failures],
    )


class EpochTaggedBatches(Sampler[list[tuple[int, int]]]):
    """A :class:`BucketBatchSampler` whose batches name the epoch: ``[(index, epoch), ...]``.

    DataLoader workers hold their own copy of the dataset, so the epoch travels
    with each index: augmentation draws depend on it (see :mod:`asr_s2s.augment`).
    """

    def __init__(self, sampler: BucketBatchSampler) -> None:
        self.sampler = sampler

    @property
    def epoch(self) -> int:
        return self.sampler.epoch

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch whose batches :meth:`__iter__` yields."""
        self.sampler.set_epoch(epoch)

    def batches(self) -> list[list[tuple[int, int]]]:
        """This rank's batches of the current epoch, in order."""
        return [[(index, self.sampler.epoch) for index in batch] for batch in self.sampler.batches()]

    def __iter__(self):
        return iter(self.batches())

    def __len__(self) -> int:
        return len(self.sampler)


def make_loader(
    dataset: SpeechDataset,
    max_batch_seconds: float,
    shuffle: bool,
    seed: int = 0,
    num_workers: int = 0,
    max_batch_size: int | None = None,
    sortagrad_epochs: int = 0,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader over duration-bucketed batches of ``(index, epoch)`` items. Its ``batch_sampler`` has ``set_epoch``.

    With ``world_size > 1`` it yields only this ``rank``'s share of the batches
    (see :class:`~asr_s2s.batching.BucketBatchSampler`).
    """
    sampler = BucketBatchSampler(
        [u.duration for u in dataset.utterances], max_batch_seconds, shuffle=shuffle, seed=seed,
        max_batch_size=max_batch_size, sortagrad_epochs=sortagrad_epochs, rank=rank, world_size=world_size,
    )
    return DataLoader(
        dataset,
        batch_sampler=EpochTaggedBatches(sampler),
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
