"""train.max_input_frames / train.max_output_chars: over-long training utterances are dropped before batching."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

import pytest

from asr_s2s.config import ExperimentConfig, TrainConfig, from_dict, load_config
from asr_s2s.dataset import SpeechDataset
from asr_s2s.errors import ConfigError
from asr_s2s.trainer import Trainer
from asr_s2s.training_state import data_order_changes

REPO = Path(__file__).resolve().parents[1]
LONGEST = "1002-20-0001"  # the fixture's longest utterance: 182 frames, 25 characters
WORDY = "1003-30-0001"  # 115 frames; given three times its transcript below (44 characters)


@pytest.fixture
def train_config(tiny_config) -> TrainConfig:
    return dataclasses.replace(tiny_config.train, epochs=1, max_batch_seconds=5.0, num_workers=0)


@pytest.fixture
def wordy_data(fixture_utterances, tokenizer) -> SpeechDataset:
    """The 8 fixture utterances, one of them with a transcript three times as long as its own."""
    utts = [dataclasses.replace(u, text=" ".join([u.text] * 3)) if u.id == WORDY else u for u in fixture_utterances]
    return SpeechDataset(utts, tokenizer)


def sampled(trainer: Trainer) -> list[str]:
    """The ids of every utterance in the training sampler's epoch, sorted (its items are ``(index, epoch)``)."""
    dataset = trainer.train_loader.dataset
    return sorted(dataset.utterances[index].id for batch in trainer.train_loader.batch_sampler.batches()
                  for index, _ in batch)


@pytest.mark.parametrize("global_batch", [None, 6.0], ids=["per-rank", "global"])
def test_over_long_utterances_are_dropped_counted_and_the_rest_train(
        global_batch, wordy_data, train_config, make_model, tmp_path, caplog):
    config = dataclasses.replace(train_config, max_input_frames=175, max_output_chars=30,
                                 global_batch_seconds=global_batch)
    with caplog.at_level(logging.INFO, logger="asr_s2s"):
        trainer = Trainer(make_model(), config, wordy_data, wordy_data, tmp_path, progress=False)
    kept = sorted(u.id for u in wordy_data.utterances if u.id not in (LONGEST, WORDY))
    assert sampled(trainer) == kept, "the batches hold every kept utterance once, and no dropped one"
    assert len(wordy_data) == 8 and len(trainer.valid_loader.dataset) == 8, "validation is never filtered"
    [line] = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert line.levelno == logging.WARNING
    seconds = sum(u.duration for u in wordy_data.utterances if u.id in (LONGEST, WORDY))
    assert line.getMessage() == (
        "dropped 2 of 8 training utterances over train.max_input_frames 175 (1.8 s) or train.max_output_chars 30; "
        f"{seconds:.1f} s of audio (1 over train.max_input_frames, 1 over train.max_output_chars; "
        f"e.g. {LONGEST}: 182 frames, 25 characters)"
    )
    [result] = trainer.fit()
    assert result.failed_items == 0 and result.step == trainer.plan.total_steps
    kept_seconds = sum(u.duration for u in wordy_data.utterances if u.id in kept)
    assert result.audio_seconds == pytest.approx(kept_seconds), "the epoch trained on the kept audio alone"


def test_without_limits_or_with_nothing_over_them_all_train(fixture_dataset, train_config, make_model, tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="asr_s2s"):
        plain = Trainer(make_model(), train_config, fixture_dataset, fixture_dataset, tmp_path / "a", progress=False)
        assert plain.train_loader.dataset is fixture_dataset, "no limits: the very dataset, so byte-identical runs"
        assert not caplog.records or all("train.max_" not in r.getMessage() for r in caplog.records)
        roomy = dataclasses.replace(train_config, max_input_frames=3000, max_output_chars=400)
        trainer = Trainer(make_model(), roomy, fixture_dataset, fixture_dataset, tmp_path / "b", progress=False)
    assert trainer.train_loader.dataset is fixture_dataset
    assert sampled(trainer) == sampled(plain)
    assert "no training utterance is over train.max_input_frames 3000 (30.0 s) or train.max_output_chars 400" in caplog.text


def test_dropping_every_utterance_is_a_clear_error(fixture_dataset, train_config, make_model, tmp_path):
    config = dataclasses.replace(train_config, max_output_chars=12)
    with pytest.raises(ConfigError, match=r"every one of the 8 training utterances is over train.max_output_chars 12 "
                                          r"\(the shortest has 115 frames, the shortest transcript 13 characters\): "
                                          r"raise the limit, or set it to null"):
        Trainer(make_model(), config, fixture_dataset, fixture_dataset, tmp_path, progress=False)


@pytest.mark.parametrize(("train", "message"), [
    ({"max_input_frames": 0}, "train.max_input_frames must be a positive integer or null"),
    ({"max_output_chars": -400}, "train.max_output_chars must be a positive integer or null"),
    ({"max_input_frames": 30.5}, "config.train.max_input_frames: expected int, got 30.5"),
    ({"max_output_chars": True}, "config.train.max_output_chars: expected int, got True"),
    ({"max_input_frame": 3000}, "unknown key 'max_input_frame'. Did you mean 'max_input_frames'"),
])
def test_bad_limits_are_config_errors(train, message):
    with pytest.raises(ConfigError, match=message):
        from_dict(ExperimentConfig, {"train": train})
    assert from_dict(ExperimentConfig, {"train": {"max_input_frames": None}}).train.max_input_frames is None


def test_the_librispeech_configs_set_espnets_limits_and_a_change_is_named_on_resume():
    for name in ("las_100h.yaml", "las_960h.yaml"):
        train = load_config(REPO / "recipes" / "librispeech" / "conf" / name).train
        assert (train.max_input_frames, train.max_output_chars) == (3000, 400)
    for path in [REPO / "recipes" / "librispeech" / "conf" / "las_tiny.yaml",
                 *(REPO / "recipes" / "mini_librispeech" / "conf").glob("las_*.yaml")]:
        train = load_config(path).train
        assert (train.max_input_frames, train.max_output_chars) == (None, None), path.name
    saved = {"train_config": dataclasses.asdict(TrainConfig())}
    assert data_order_changes(saved, TrainConfig(max_output_chars=400), 8) == ["max_output_chars"]
