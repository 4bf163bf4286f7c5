"""From manifest entries to padded feature and token batches."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch
from torch.nn.utils.rnn import pad_sequence
from torch.utils.data import DataLoader, Dataset

from asr_s2s.audio import SAMPLE_RATE_HZ, change_speed, load_audio
from asr_s2s.batching import BucketBatchSampler
from asr_s2s.errors import AsrS2SError, TokenizerError
from asr_s2s.features import fbank
from asr_s2s.manifest import Utterance
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
    duration_s: float


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

    def __len__(self) -> int:
        return len(self.ids)

    def to(self, device: torch.device | str) -> Batch:
        return Batch(
            self.ids, self.feats.to(device), self.feat_lengths.to(device), self.tokens.to(device),
            self.token_lengths.to(device), self.texts, self.failed, self.audio_seconds,
        )


class SpeechDataset(Dataset):
    """Loads audio and computes fbank features on access (in DataLoader workers).

    With ``cache`` the features of each item are kept in memory after their
    first use (about 115 MB per hour of audio, per worker process), which
    saves recomputing them every epoch on small corpora.

    Transcripts are normalised and tokenised up front, so that unrepresentable
    text is reported before training starts, never silently dropped.

    With ``speed_perturb`` (e.g. ``(0.9, 1.0, 1.1)``, as in Kaldi and ESPnet),
    each access plays the audio at one of these speeds, drawn uniformly from
    torch's random generator (seeded per DataLoader worker, so runs repeat):
    sox's ``speed`` effect, which changes tempo and pitch together (see
    :func:`asr_s2s.audio.change_speed`). A factor of 0.9 makes an utterance
    11% longer. The cache then keeps one entry per utterance and speed.
    """

    def __init__(
        self, utterances: Sequence[Utterance], tokenizer: CharTokenizer, require_text: bool = True, cache: bool = False,
        speed_perturb: Sequence[float] | None = None,
    ) -> None:
        self.utterances = list(utterances)
        self.cache: dict[tuple[int, float], Example] | None = {} if cache else None
        self.speed_perturb = tuple(float(f) for f in speed_perturb) if speed_perturb else None
        if self.speed_perturb and not all(0.5 <= f <= 2.0 for f in self.speed_perturb):
            raise ValueError(f"speed_perturb factors must lie in [0.5, 2.0], got {list(self.speed_perturb)}")
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

    def __getitem__(self, index: int) -> Example | tuple[str, str]:
        """The example at ``index``, or ``(id, reason)`` if its audio cannot be used."""
        speed = 1.0
        if self.speed_perturb:
            speed = self.speed_perturb[int(torch.randint(len(self.speed_perturb), ()))]
        if self.cache is not None and (index, speed) in self.cache:
            return self.cache[(index, speed)]
        utt = self.utterances[index]
        try:
            waveform = change_speed(load_audio(utt.audio), speed)
        except AsrS2SError as exc:
            return (utt.id, str(exc))
        tokens = torch.tensor(self.token_ids[index], dtype=torch.long)
        example = Example(utt.id, fbank(waveform), tokens, self.texts[index], len(waveform) / SAMPLE_RATE_HZ)
        if self.cache is not None:
            self.cache[(index, speed)] = example
        return example


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
    )


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
    """A DataLoader over duration-bucketed batches. Its ``batch_sampler`` has ``set_epoch``.

    With ``world_size > 1`` it yields only this ``rank``'s share of the batches
    (see :class:`~asr_s2s.batching.BucketBatchSampler`).
    """
    sampler = BucketBatchSampler(
        [u.duration for u in dataset.utterances], max_batch_seconds, shuffle=shuffle, seed=seed,
        max_batch_size=max_batch_size, sortagrad_epochs=sortagrad_epochs, rank=rank, world_size=world_size,
    )
    return DataLoader(
        dataset,
        batch_sampler=sampler,
        collate_fn=collate,
        num_workers=num_workers,
        persistent_workers=num_workers > 0,
        prefetch_factor=4 if num_workers > 0 else None,
    )
