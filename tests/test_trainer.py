"""asr_s2s.trainer: epochs, atomic checkpoints, exact resume, JSONL logs and curves."""

from __future__ import annotations

import dataclasses
import json
import logging
import random
import shutil

import numpy as np
import pytest
import torch

from asr_s2s.config import TrainConfig
from asr_s2s.dataset import SpeechDataset
from asr_s2s.features import SpecAugmentConfig
from asr_s2s.trainer import LOG_FILE, Trainer, count_ctc_infeasible, seed_everything, warmup_cosine

# Dropout and SpecAugment on, so that an exact resume needs the RNG states restored too.
MODEL_CHANGES = dict(
    encoder={"name": "pblstm", "hidden_size": 32, "base_layers": 1, "pyramid_layers": 2, "dropout": 0.1},
    specaug=SpecAugmentConfig(freq_masks=1, freq_mask_bins=10, time_masks=1, time_mask_frames=10),
)


@pytest.fixture(scope="module")
def train_config(tiny_config) -> TrainConfig:
    # 4 utterances of 1.3-1.8 s under a 4 s cap: 2 batches (steps) per epoch
    return dataclasses.replace(tiny_config.train, epochs=2, max_batch_seconds=4.0, num_workers=0, log_interval=1, seed=0)


@pytest.fixture(scope="module")
def datasets(fixture_utterances, tokenizer):
    return SpeechDataset(fixture_utterances[:4], tokenizer), SpeechDataset(fixture_utterances[6:], tokenizer)


def _trainer(make_model, config, datasets, exp_dir, seed=0) -> Trainer:
    model = make_model(seed=seed, **MODEL_CHANGES)
    return Trainer(model, config, *datasets, exp_dir, progress=False)


@pytest.fixture(scope="module")
def full_run(make_model, train_config, datasets, tmp_path_factory):
    """An uninterrupted 2-epoch run."""
    exp = tmp_path_factory.mktemp("full")
    trainer = _trainer(make_model, train_config, datasets, exp)
    results = trainer.fit()
    return trainer, results, exp


def test_epochs_checkpoints_and_results(full_run, train_config):
    trainer, results, exp = full_run
    assert [r.epoch for r in results] == [1, 2]
    assert trainer.steps_per_epoch == 2
    assert [r.step for r in results] == [2, 4]
    for r in results:
        assert np.isfinite(r.train_loss) and np.isfinite(r.valid_loss) and 0 <= r.valid_cer
        assert r.skipped_batches == 0 and r.failed_items == 0
        assert r.audio_seconds == pytest.approx(sum(u.duration for u in trainer.train_loader.dataset.utterances), rel=0.03)
    checkpoints = sorted(p.name for p in (exp / "checkpoints").iterdir())
    assert checkpoints == ["epoch-1.pt", "epoch-2.pt"], "one checkpoint per epoch, no .tmp left behind"
    assert not list(exp.rglob("*.tmp"))
    assert trainer.latest_checkpoint() == exp / "checkpoints" / "epoch-2.pt"
    state = torch.load(exp / "checkpoints" / "epoch-2.pt", weights_only=True)
    assert state["epoch"] == 2 and state["step"] == 4
    assert state["train_config"] == dataclasses.asdict(train_config)


def test_jsonl_log_and_curves(full_run):
    _, results, exp = full_run
    rows = [json.loads(line) for line in (exp / LOG_FILE).read_text().splitlines()]
    steps = [r for r in rows if r["kind"] == "step"]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["step"] for r in steps] == [1, 2, 3, 4]
    assert [r["epoch"] for r in steps] == [1, 1, 2, 2]
    for r in steps:
        assert {"loss", "attention_loss", "ctc_loss", "accuracy", "grad_norm", "lr"} <= set(r)
        assert np.isfinite(r["loss"]) and r["lr"] > 0
    assert [r["epoch"] for r in epochs] == [1, 2]
    assert epochs[1]["valid_loss"] == pytest.approx(results[1].valid_loss)
    png = exp / "training_curves.png"
    assert png.is_file() and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    for epoch in (1, 2):  # an attention alignment of one validation utterance per epoch
        assert (exp / "attention" / f"epoch-{epoch}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_resume_after_one_epoch_equals_an_uninterrupted_run(full_run, make_model, train_config, datasets, tmp_path):
    """A run stopped after epoch 1 (only epoch-1.pt exists) and resumed ends with the same weights."""
    trainer, _, exp = full_run
    (tmp_path / "checkpoints").mkdir()
    shutil.copy(exp / "checkpoints" / "epoch-1.pt", tmp_path / "checkpoints" / "epoch-1.pt")
    # a different init, and scrambled global RNGs: resume must restore everything it needs
    resumed = _trainer(make_model, train_config, datasets, tmp_path, seed=123)
    torch.manual_seed(999)
    random.seed(999)
    results = resumed.fit(resume=True)
    assert [r.epoch for r in results] == [2]
    assert resumed.step == trainer.step == 4
    expected = trainer.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=0, msg=name)
    assert (tmp_path / "checkpoints" / "epoch-2.pt").is_file()


def test_resume_of_a_finished_run_trains_nothing(full_run, make_model, train_config, datasets):
    trainer, _, exp = full_run
    before = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    again = _trainer(make_model, train_config, datasets, exp, seed=5)
    assert again.fit(resume=True) == []
    for name, value in again.model.state_dict().items():
        torch.testing.assert_close(value, before[name], atol=0, rtol=0)


def test_checkpoint_restores_every_rng(full_run, tmp_path):
    trainer, _, _ = full_run
    seed_everything(7)
    np.random.random(5)  # advance numpy's stream mid-block
    random.random()
    torch.rand(3)
    path = trainer.checkpoint_path(trainer.epoch)
    saved = path.read_bytes()
    try:
        trainer.save_checkpoint()
        expected = (np.random.random(3).tolist(), random.random(), torch.rand(3).tolist())
        trainer.load_checkpoint(path)
        got = (np.random.random(3).tolist(), random.random(), torch.rand(3).tolist())
    finally:
        path.write_bytes(saved)
    assert got[1] == expected[1] and got[2] == expected[2], "python and torch RNGs"
    assert got[0] == expected[0], "numpy RNG"


def test_unreadable_training_audio_is_counted_not_fatal(make_model, tiny_config, fixture_utterances, tokenizer, tmp_path, caplog):
    bad = dataclasses.replace(fixture_utterances[1], id="bad-utt", audio=str(tmp_path / "gone.flac"))
    train_set = SpeechDataset([fixture_utterances[0], bad, fixture_utterances[2]], tokenizer)
    valid_set = SpeechDataset(fixture_utterances[3:4], tokenizer)
    config = dataclasses.replace(tiny_config.train, epochs=1, num_workers=0, max_batch_seconds=20.0)
    trainer = Trainer(make_model(), config, train_set, valid_set, tmp_path / "exp", progress=False)
    with caplog.at_level(logging.WARNING, logger="asr_s2s.trainer"):
        (result,) = trainer.fit()
    assert result.failed_items == 1 and result.step == 1
    assert any("bad-utt" in r.getMessage() and "gone.flac" in r.getMessage() for r in caplog.records)


def test_ctc_infeasible_utterances_are_counted_and_warned(make_model, fixture_dataset, caplog):
    """At 16x reduction the fixture's ~1.5 s utterances have fewer frames than characters."""
    with caplog.at_level(logging.WARNING, logger="asr_s2s.trainer"):
        assert count_ctc_infeasible(fixture_dataset, make_model()) == 0
        assert not caplog.records
        coarse = make_model(encoder={"name": "pblstm", "hidden_size": 8, "base_layers": 0, "pyramid_layers": 4})
        assert count_ctc_infeasible(fixture_dataset, coarse) == 8
    assert "8 of 8 utterances are too long for CTC at 16x" in caplog.text
    assert count_ctc_infeasible(fixture_dataset, make_model(ctc_weight=0.0)) == 0


def test_warmup_cosine_schedule():
    factor = warmup_cosine(warmup_steps=10, total_steps=110, final_ratio=0.05)
    assert factor(0) == pytest.approx(0.1)
    assert factor(9) == pytest.approx(1.0)
    assert factor(10) == pytest.approx(1.0)
    assert factor(60) == pytest.approx(0.05 + 0.95 * 0.5)
    assert factor(110) == pytest.approx(0.05) and factor(500) == pytest.approx(0.05)
    values = [factor(s) for s in range(10, 111)]
    assert all(a >= b for a, b in zip(values, values[1:]))
