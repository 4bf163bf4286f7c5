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
from asr_s2s.experiment import LOG_FILE, seed_everything, warmup_cosine
from asr_s2s.trainer import Trainer, count_ctc_infeasible

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


# -- faults: interruptions, NaN/inf losses, out of memory, unsafe or broken checkpoints ------------------
from asr_s2s.errors import CheckpointError, ConfigError, TrainingError  # noqa: E402
from asr_s2s.model import ASRModel  # noqa: E402
from asr_s2s.registry import Registry  # noqa: E402
from asr_s2s.trainer import is_out_of_memory  # noqa: E402

from conftest import install_plugin, write_pickle_bomb  # noqa: E402


def _rows(exp, kind):
    return [r for line in (exp / LOG_FILE).read_text().splitlines() if (r := json.loads(line))["kind"] == kind]


class _Crash(Exception):
    """Stands in for the process dying (kill -9, power loss) in the middle of a step."""


@pytest.mark.parametrize("fault", ["killed-in-step-2", "killed-in-step-4", "disk-full-writing-step-2"])
def test_interrupted_run_resumes_step_for_step(full_run, make_model, train_config, datasets, tmp_path, monkeypatch, fault):
    """Checkpoints every step; the run dies (mid-epoch 1, mid-epoch 2, or while writing a checkpoint); a new process
    resumes. Its loss curve, epoch results and final weights equal the uninterrupted run's, step for step."""
    reference, reference_results, reference_exp = full_run
    config = dataclasses.replace(train_config, checkpoint_every_steps=1)
    crashed = _trainer(make_model, config, datasets, tmp_path)
    if fault.startswith("killed"):
        dying_call = int(fault[-1])
        calls = []

        def die(module, args):
            calls.append(1)
            if len(calls) == dying_call:
                raise _Crash

        crashed.model.register_forward_pre_hook(die)
        with pytest.raises(_Crash):
            crashed.fit()
    else:
        real_save, saves = torch.save, []

        def disk_full(obj, f, *args, **kwargs):
            saves.append(f)
            real_save(obj, f, *args, **kwargs)
            if len(saves) == 2:
                with open(f, "r+b") as handle:
                    handle.truncate(100)
                raise OSError(28, "No space left on device")

        monkeypatch.setattr(torch, "save", disk_full)
        with pytest.raises(CheckpointError, match="step-2.pt: could not write checkpoint.*No space left"):
            crashed.fit()
        monkeypatch.undo()
    latest = crashed.latest_checkpoint()
    expected_latest = {"killed-in-step-2": "step-1.pt", "killed-in-step-4": "step-3.pt", "disk-full-writing-step-2": "step-1.pt"}
    assert latest.name == expected_latest[fault]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == sorted({latest.name, *(["epoch-1.pt"] if "4" in fault else [])})

    torch.manual_seed(999)  # a new process: other initial weights, other global RNG states
    random.seed(999)
    np.random.seed(999)
    resumed = _trainer(make_model, config, datasets, tmp_path, seed=123)
    results = resumed.fit(resume=True)
    assert [r.epoch for r in results] == ([1, 2] if latest.name == "step-1.pt" else [2])
    for got, want in zip(results, reference_results[-len(results):]):
        for field in ("step", "train_loss", "valid_loss", "valid_cer", "skipped_batches", "failed_items", "audio_seconds"):
            assert getattr(got, field) == pytest.approx(getattr(want, field), rel=1e-6, abs=1e-6), field
    steps, want_steps = _rows(tmp_path, "step"), _rows(reference_exp, "step")
    assert [r["step"] for r in steps] == [1, 2, 3, 4], "every step logged once, none lost or repeated"
    for got, want in zip(steps, want_steps):
        for key in ("loss", "attention_loss", "ctc_loss", "accuracy", "grad_norm", "lr"):
            assert got[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6), (got["step"], key)
    assert [r["epoch"] for r in _rows(tmp_path, "epoch")] == [1, 2]
    expected = reference.model.state_dict()
    for name, value in resumed.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-5, rtol=1e-5, msg=name)
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-1.pt", "epoch-2.pt"], "step files gone"


def test_checkpoints_every_n_steps_keep_only_the_latest(make_model, train_config, datasets, tmp_path):
    config = dataclasses.replace(train_config, epochs=1, max_batch_seconds=2.0, checkpoint_every_steps=2)
    trainer = _trainer(make_model, config, datasets, tmp_path)
    assert trainer.steps_per_epoch == 4
    seen = []
    real = trainer.save_checkpoint

    def spy(*args, **kwargs):
        path = real(*args, **kwargs)
        seen.append(sorted(p.name for p in path.parent.iterdir()))
        return path

    trainer.save_checkpoint = spy
    trainer.fit()
    # each new checkpoint is complete on disk before the one it replaces is removed
    assert seen == [["step-2.pt"], ["step-2.pt", "step-4.pt"], ["epoch-1.pt", "step-4.pt"]]
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["epoch-1.pt"]


def test_a_fresh_run_never_overwrites_a_finished_one(full_run, make_model, train_config, datasets):
    _, _, exp = full_run
    before = {p.name: p.read_bytes() for p in (exp / "checkpoints").iterdir()}
    log_before = (exp / LOG_FILE).read_text()
    with pytest.raises(CheckpointError, match="already holds a training run.*epoch-2.pt.*pass --resume"):
        _trainer(make_model, train_config, datasets, exp).fit()
    assert {p.name: p.read_bytes() for p in (exp / "checkpoints").iterdir()} == before
    assert (exp / LOG_FILE).read_text() == log_before


def test_resume_refuses_a_crafted_checkpoint_and_never_runs_it(make_model, train_config, datasets, tmp_path):
    marker = tmp_path / "marker"
    write_pickle_bomb(tmp_path / "exp" / "checkpoints" / "epoch-1.pt", marker)
    trainer = _trainer(make_model, train_config, datasets, tmp_path / "exp")
    with pytest.raises(CheckpointError, match="epoch-1.pt: refused to load.*GLOBAL exec.*could run code"):
        trainer.fit(resume=True)
    assert not marker.exists()


def test_resume_from_a_truncated_checkpoint_names_it(full_run, make_model, train_config, datasets, tmp_path):
    _, _, exp = full_run
    shutil.copytree(exp / "checkpoints", tmp_path / "checkpoints")
    latest = tmp_path / "checkpoints" / "epoch-2.pt"
    latest.write_bytes(latest.read_bytes()[:5000])
    with pytest.raises(CheckpointError, match="epoch-2.pt: unreadable checkpoint, truncated or corrupt.*Delete it"):
        _trainer(make_model, train_config, datasets, tmp_path).fit(resume=True)
    latest.unlink()  # what the message suggests: the run continues from epoch 1
    assert [r.epoch for r in _trainer(make_model, train_config, datasets, tmp_path).fit(resume=True)] == [2]


def test_resume_with_a_checkpoint_of_another_model(full_run, make_model, train_config, datasets, tmp_path):
    _, _, exp = full_run
    shutil.copytree(exp / "checkpoints", tmp_path / "checkpoints")
    other = make_model(encoder={"name": "pblstm", "hidden_size": 40, "base_layers": 1, "pyramid_layers": 2})
    with pytest.raises(CheckpointError, match="epoch-2.pt: does not match the model built from --config.*size mismatch"):
        Trainer(other, train_config, *datasets, tmp_path, progress=False).fit(resume=True)


@pytest.mark.parametrize("key", ["checkpoint_every_steps", "max_consecutive_bad_losses"])
def test_fault_settings_must_be_positive(make_model, train_config, datasets, tmp_path, key):
    with pytest.raises(ConfigError, match=f"train.{key} must be a positive integer, got 0"):
        _trainer(make_model, dataclasses.replace(train_config, **{key: 0}), datasets, tmp_path)


# A third-party encoder that misbehaves on cue, installed like any plugin: on the training forward calls listed,
# it raises CUDA's out-of-memory error (in the forward or the backward pass) or returns NaN or inf states.
FLAKY = '''
    import torch
    from torch import nn

    from asr_s2s.hookspecs import hookimpl
    from asr_s2s.interfaces import Encoder


    class _OutOfMemoryInBackward(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x.view_as(x)

        @staticmethod
        def backward(ctx, grad):
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.50 GiB (backward)")


    class FlakyEncoder(Encoder):
        name = "flaky"

        def __init__(self, input_dim, output_size=32, oom_on=(), oom_backward_on=(), nan_on=(), inf_on=()):
            super().__init__()
            self.size = output_size
            self.proj = nn.Linear(input_dim * 4, output_size)
            self.faults = {"oom": set(oom_on), "oom_backward": set(oom_backward_on), "nan": set(nan_on), "inf": set(inf_on)}
            self.calls = 0

        @property
        def output_dim(self):
            return self.size

        @property
        def time_reduction(self):
            return 4

        def forward(self, feats, lengths):
            fault = None
            if self.training:
                self.calls += 1
                fault = next((k for k, calls in self.faults.items() if self.calls in calls), None)
            if fault == "oom":
                raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
            b, t, f = feats.shape
            x = nn.functional.pad(feats, (0, 0, 0, (-t) % 4)).reshape(b, -1, f * 4)
            y = torch.tanh(self.proj(x))
            if fault == "oom_backward":
                y = _OutOfMemoryInBackward.apply(y)
            if fault in ("nan", "inf"):
                y = y + float(fault)
            out_lengths = self.output_lengths(lengths)
            mask = torch.arange(y.shape[1])[None, :] < out_lengths[:, None]
            return y * mask.unsqueeze(-1), out_lengths


    @hookimpl
    def asr_s2s_register_encoders():
        return [FlakyEncoder]
'''


@pytest.fixture
def flaky_trainer(tmp_path, monkeypatch, tiny_config, tokenizer, cmvn, train_config, datasets):
    """Build a trainer whose encoder is the third-party ``flaky`` plugin with the given faults."""
    install_plugin(tmp_path / "site", monkeypatch, "flaky_asr", FLAKY, dist="flaky-asr", version="0.1", entry_point="flaky")
    registry = Registry()
    assert registry.get("encoder", "flaky").distribution == "flaky-asr 0.1"

    def make(**faults) -> Trainer:
        limit = faults.pop("limit", 10)
        model_config = dataclasses.replace(tiny_config.model, encoder={"name": "flaky", **faults})
        torch.manual_seed(0)
        model = ASRModel(model_config, tokenizer, cmvn, registry)
        config = dataclasses.replace(train_config, max_consecutive_bad_losses=limit)
        return Trainer(model, config, *datasets, tmp_path / "exp", progress=False)

    return make


@pytest.mark.parametrize("fault", ["nan_on", "inf_on"])
def test_non_finite_loss_skips_the_batch_counts_and_logs_it(flaky_trainer, tmp_path, caplog, fault):
    trainer = flaky_trainer(**{fault: [2]})
    with caplog.at_level(logging.WARNING, logger="asr_s2s.trainer"):
        results = trainer.fit()
    assert [r.skipped_batches for r in results] == [1, 0] and trainer.step == 3
    assert "non-finite loss (nan) on epoch 1 batch 2" in caplog.text and "batch skipped (1 in a row)" in caplog.text
    (row,) = _rows(tmp_path / "exp", "bad_loss")
    assert (row["epoch"], row["batch"], row["step"], row["value"], row["in_a_row"]) == (1, 2, 1, "nan", 1)
    assert len(row["utterances"]) >= 1 and [r["skipped_batches"] for r in _rows(tmp_path / "exp", "epoch")] == [1, 0]
    assert all(torch.isfinite(p).all() for p in trainer.model.parameters()), "no NaN reached the weights"


def test_too_many_non_finite_losses_in_a_row_stop_training(flaky_trainer, tmp_path):
    trainer = flaky_trainer(nan_on=[2, 3], limit=2)
    with pytest.raises(TrainingError) as info:
        trainer.fit()
    message = str(info.value)
    assert message.startswith("2 batches in a row had a non-finite loss or gradient (the last: epoch 2 batch 1")
    assert "train.max_consecutive_bad_losses is 2" in message and "epoch-1.pt with --resume" in message
    assert [r["in_a_row"] for r in _rows(tmp_path / "exp", "bad_loss")] == [1, 2]


def test_a_good_batch_resets_the_count(flaky_trainer):
    results = flaky_trainer(nan_on=[1, 3], limit=2).fit()
    assert [r.skipped_batches for r in results] == [1, 1]


@pytest.mark.parametrize("fault", ["oom_on", "oom_backward_on"])
def test_out_of_memory_skips_the_batch_with_a_warning(flaky_trainer, tmp_path, caplog, fault):
    trainer = flaky_trainer(**{fault: [2]})
    with caplog.at_level(logging.WARNING, logger="asr_s2s.trainer"):
        results = trainer.fit()
    assert [r.oom_batches for r in results] == [1, 0] and [r.skipped_batches for r in results] == [0, 0]
    assert trainer.step == 3
    assert "out of memory on epoch 1 batch 2" in caplog.text and "Lower train.max_batch_seconds" in caplog.text
    (row,) = _rows(tmp_path / "exp", "oom")
    assert (row["epoch"], row["batch"], row["step"]) == (1, 2, 1)
    assert all(p.grad is None for p in trainer.model.parameters()), "no half-accumulated gradient is left"


def test_an_epoch_with_nothing_trainable_is_an_error(flaky_trainer):
    with pytest.raises(TrainingError, match="epoch 1: no batch could be trained on .*2 ran out of memory"):
        flaky_trainer(oom_on=[1, 2]).fit()


def test_what_counts_as_out_of_memory():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory"))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
    assert not is_out_of_memory(ValueError("out of memory"))


# -- gradient accumulation, early stopping, model selection ------------------------------------
def test_gradient_accumulation_equals_one_step_over_both_batches(make_model, tiny_config, datasets, tmp_path):
    """accum_grad=2: the 2 batches of an epoch make one Adam step on the mean of their gradients."""
    from asr_s2s.dataset import collate

    config = dataclasses.replace(tiny_config.train, epochs=1, max_batch_seconds=4.0, num_workers=0, warmup_steps=1,
                                 accum_grad=2, log_interval=1)
    trainer = Trainer(make_model(seed=0), config, *datasets, tmp_path, progress=False)  # no dropout, no SpecAugment
    assert trainer.steps_per_epoch == 1
    batches = trainer.train_loader.batch_sampler.batches()
    assert len(batches) == 2
    reference = make_model(seed=0).train()
    optimizer = torch.optim.Adam(reference.parameters(), lr=config.lr)
    for indices in batches:
        b = collate([datasets[0][i] for i in indices])
        (reference(b.feats, b.feat_lengths, b.tokens, b.token_lengths).loss / 2).backward()
    torch.nn.utils.clip_grad_norm_(reference.parameters(), config.grad_clip)
    optimizer.step()
    (result,) = trainer.fit()
    assert result.step == 1 and trainer.step == 1
    expected = reference.state_dict()
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-6, rtol=1e-5, msg=name)
    steps = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines() if '"step"' in line]
    assert [r["step"] for r in steps if r["kind"] == "step"] == [1]


def test_best_epoch_and_early_stopping(make_model, train_config, datasets, tmp_path):
    config = dataclasses.replace(train_config, early_stopping_patience=2, selection_metric="valid_cer")
    trainer = _trainer(make_model, config, datasets, tmp_path)
    assert trainer.best_epoch() is None and not trainer.early_stop()
    cer = [50.0, 40.0, float("nan"), 45.0, 41.0]
    for epoch, value in enumerate(cer, 1):
        trainer.history.append({"epoch": epoch, "valid_loss": 10.0 - epoch, "valid_cer": value})
        trainer.epoch = epoch
        assert trainer.best_epoch() == (1 if epoch == 1 else 2)
        assert trainer.early_stop() == (epoch >= 4), epoch  # epochs 3 and 4 did not beat epoch 2
    loss_config = dataclasses.replace(config, selection_metric="valid_loss")
    trainer.config = loss_config
    assert trainer.best_epoch() == 5 and not trainer.early_stop()


def test_early_stopping_ends_training_and_survives_resume(make_model, train_config, datasets, tmp_path):
    config = dataclasses.replace(train_config, epochs=6, early_stopping_patience=1, selection_metric="valid_loss")
    trainer = _trainer(make_model, config, datasets, tmp_path)
    trainer.history = [{"epoch": 0, "valid_loss": -1.0, "valid_cer": 0.0}]  # an unbeatable epoch 0
    results = trainer.fit()
    assert [r.epoch for r in results] == [1], "stops after one epoch without improvement"
    rows = [json.loads(line) for line in (tmp_path / LOG_FILE).read_text().splitlines()]
    assert [r["best_epoch"] for r in rows if r["kind"] == "epoch"] == [0]
    # resumed, the history comes back from the log: make epoch 1 unbeatable there; one more epoch, then stop
    log_path = tmp_path / LOG_FILE
    rows = [dict(r, valid_loss=-1.0) if r["kind"] == "epoch" else r for r in rows]
    log_path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    again = _trainer(make_model, config, datasets, tmp_path)
    again_results = again.fit(resume=True)
    assert [r.epoch for r in again_results] == [2]
    assert [h["epoch"] for h in again.history] == [1, 2] and again.best_epoch() == 1


def test_epoch_totals_load_by_name_and_from_older_checkpoints_by_position():
    from dataclasses import asdict

    from asr_s2s.trainer import EpochTotals

    totals = EpochTotals(loss_sum=12.5, batches=4, audio_s=80.25, skipped=1, failed=2, oom=0)
    assert EpochTotals.restore(asdict(totals)) == totals
    assert EpochTotals.restore([12.5, 4, 80.25, 1, 2, 0]) == totals  # the 6-tuple older checkpoints hold
    assert EpochTotals.restore({}) == EpochTotals() == EpochTotals.restore(())
    assert EpochTotals.summed([totals, totals]) == EpochTotals(25.0, 8, 160.5, 2, 4, 0)
