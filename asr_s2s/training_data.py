"""The data side of a training run: the filter of over-long utterances, its two loaders, the check that
labels fit CTC, an epoch's batches from any point without drawing from the global generators, and the
warnings about utterances that failed to load or to augment."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import torch
from torch.utils.data import DataLoader

from asr_s2s.audio import SAMPLE_RATE_HZ
from asr_s2s.batching import GlobalBatchSampler
from asr_s2s.config import TrainConfig
from asr_s2s.dataset import SpeechDataset, make_loader
from asr_s2s.errors import ConfigError
from asr_s2s.features import FRAMES_PER_SECOND, num_frames
from asr_s2s.model import ASRModel
from asr_s2s.optimization import batch_layout

log = logging.getLogger("asr_s2s.trainer")  # a training run's messages keep the trainer's logger name


def training_loaders(
    train_set: SpeechDataset, valid_set: SpeechDataset, config: TrainConfig, rank: int, world_size: int,
) -> tuple[DataLoader, DataLoader | list]:
    """This rank's shuffled training loader and its share of the validation set (none beyond the set's size).

    With ``train.global_batch_seconds`` the training batches are cut for all ranks at once
    (:class:`~asr_s2s.batching.GlobalBatchSampler`), ``accum_grad`` of them per rank and step.
    """
    train_loader = make_loader(
        train_set, config.max_batch_seconds, shuffle=True, seed=config.seed,
        num_workers=config.num_workers, max_batch_size=config.max_batch_size,
        sortagrad_epochs=config.sortagrad_epochs, rank=rank, world_size=world_size,
    )
    if config.global_batch_seconds is not None:  # the loader as make_loader builds it, with the global cut
        _, accum = batch_layout(config, world_size)
        train_loader.batch_sampler.sampler = GlobalBatchSampler(
            [u.duration for u in train_set.utterances], config.global_batch_seconds, accum, shuffle=True,
            seed=config.seed, sortagrad_epochs=config.sortagrad_epochs, rank=rank, world_size=world_size,
        )
    valid_loader = make_loader(
        valid_set, config.valid_max_batch_seconds, shuffle=False, num_workers=0,
        rank=rank, world_size=min(world_size, len(valid_set)),
    ) if rank < len(valid_set) else []
    return train_loader, valid_loader


def drop_long_utterances(dataset: SpeechDataset, config: TrainConfig, announce: bool = True) -> SpeechDataset:
    """``dataset`` without the utterances over ``train.max_input_frames`` or ``train.max_output_chars``.

    Frames are counted from each manifest duration at the frontend's 10 ms hop (:func:`num_frames`),
    characters in the normalised transcript. Without limits, or with nothing over them, ``dataset``
    itself is returned. With ``announce`` (rank 0) one line counts what was dropped, by reason.

    :raises ConfigError: if every utterance is over a limit.
    """
    frames_limit, chars_limit = config.max_input_frames, config.max_output_chars
    if frames_limit is None and chars_limit is None:
        return dataset
    frames = [num_frames(round(u.duration * SAMPLE_RATE_HZ)) for u in dataset.utterances]
    chars = [len(text) for text in dataset.texts]
    long_in = [frames_limit is not None and n > frames_limit for n in frames]
    long_out = [chars_limit is not None and n > chars_limit for n in chars]
    keep = [i for i in range(len(dataset)) if not (long_in[i] or long_out[i])]
    limits = " or ".join(_limit_names(config))
    if not keep and len(dataset):
        raise ConfigError(
            f"every one of the {len(dataset):,} training utterances is over {limits} (the shortest has {min(frames):,} "
            f"frames, the shortest transcript {min(chars):,} characters): raise the limit, or set it to null (no limit)"
        )
    dropped = [i for i in range(len(dataset)) if long_in[i] or long_out[i]]
    if not dropped:
        if announce:
            log.info("no training utterance is over %s", limits)
        return dataset
    if announce:
        seconds = sum(dataset.utterances[i].duration for i in dropped)
        reasons = [f"{sum(long_in):,} over train.max_input_frames" if frames_limit is not None else "",
                   f"{sum(long_out):,} over train.max_output_chars" if chars_limit is not None else ""]
        first = dropped[0]
        log.warning(
            "dropped %s of %s training utterances over %s; %s of audio (%s; e.g. %s: %s frames, %s characters)",
            f"{len(dropped):,}", f"{len(dataset):,}", limits, _amount(seconds), ", ".join(r for r in reasons if r),
            dataset.utterances[first].id, f"{frames[first]:,}", f"{chars[first]:,}",
        )
    return dataset.subset(keep)


def _amount(seconds: float) -> str:
    """An amount of audio as ``12.5 s``, ``11.2 min`` or ``3.4 h``."""
    return f"{seconds:.1f} s" if seconds < 60 else f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def _limit_names(config: TrainConfig) -> list[str]:
    """The set length limits as the log names them: ``train.max_input_frames 3000 (30.0 s)``, ..."""
    names = []
    if config.max_input_frames is not None:
        names.append(f"train.max_input_frames {config.max_input_frames} ({config.max_input_frames / FRAMES_PER_SECOND:.1f} s)")
    if config.max_output_chars is not None:
        names.append(f"train.max_output_chars {config.max_output_chars}")
    return names


def count_ctc_infeasible(dataset: SpeechDataset, model: ASRModel) -> int:
    """Warn about, and count, utterances whose labels are too long for their encoder length.

    CTC needs one frame per label plus one per repeated pair; such utterances
    still train the attention decoder but give the CTC head nothing.
    """
    if model.ctc is None:
        return 0
    bad = []
    for utt, ids in zip(dataset.utterances, dataset.token_ids):
        frames = num_frames(int(utt.duration * SAMPLE_RATE_HZ))
        enc = int(model.encoder.output_lengths(torch.tensor([frames]))[0])
        need = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
        if need > enc:
            bad.append(f"{utt.id} ({need} labels > {enc} frames)")
    if bad:
        log.warning(
            "%d of %d utterances are too long for CTC at %dx time reduction, e.g. %s. "
            "Use fewer pyramid layers or set model.ctc_weight: 0.",
            len(bad), len(dataset), model.encoder.time_reduction, ", ".join(bad[:3]),
        )
    return len(bad)


def epoch_batches(loader: DataLoader, done: int) -> Iterator:
    """An iterator over ``loader``'s batches of this epoch from the ``done``-th on, drawing nothing from the global RNGs.

    Creating a DataLoader iterator draws a worker seed from torch's global
    generator; that draw is undone, so that a run resumed mid-epoch draws
    exactly the random numbers (dropout, SpecAugment) of an uninterrupted one.
    """
    rng = torch.get_rng_state()
    if done:
        loader = DataLoader(
            loader.dataset, batch_sampler=loader.batch_sampler.batches()[done:], collate_fn=loader.collate_fn,
            num_workers=loader.num_workers,
        )
    batches = iter(loader)
    torch.set_rng_state(rng)
    return batches


def report_failed(batch) -> int:
    """Warn about each utterance of ``batch`` that failed to load; return how many did."""
    for utt_id, reason in batch.failed:
        log.warning("skipping %s: %s", utt_id, reason)
    return len(batch.failed)


def report_augment_failures(batch, counts: dict[str, int]) -> None:
    """Warn about the first failure of each ``train.augment`` entry in an epoch; count them all in ``counts``."""
    for utt_id, failure in batch.augment_failures:
        if failure.where not in counts:
            log.warning("%s failed on %s and was skipped for it: %s (later failures of this entry are only "
                        "counted)", failure.where, utt_id, failure.reason)
        counts[failure.where] = counts.get(failure.where, 0) + 1
