"""asr_s2s.average and ``asr-s2s average``: checkpoint averaging and model selection."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from asr_s2s.average import AverageError, average_state_dicts, epoch_checkpoints, select_epochs
from asr_s2s.dataset import SpeechDataset
from asr_s2s.package import load_package, save_package
from asr_s2s.experiment import LOG_FILE
from asr_s2s.trainer import Trainer


@pytest.fixture(scope="module")
def run_dir(make_model, tiny_config, fixture_utterances, tokenizer, registry, tmp_path_factory):
    """A 3-epoch tiny run with its exported package, as 'asr-s2s train' leaves it."""
    exp = tmp_path_factory.mktemp("avg")
    config = dataclasses.replace(tiny_config.train, epochs=3, max_batch_seconds=4.0, num_workers=0)
    train, valid = SpeechDataset(fixture_utterances[:4], tokenizer), SpeechDataset(fixture_utterances[6:], tokenizer)
    trainer = Trainer(make_model(seed=0), config, train, valid, exp, progress=False)
    trainer.fit()
    save_package(trainer.model, tiny_config.decode, exp / "model", registry)
    return exp


def _metric(exp, epoch, key):
    rows = [json.loads(line) for line in (exp / LOG_FILE).read_text().splitlines()]
    return next(r[key] for r in rows if r["kind"] == "epoch" and r["epoch"] == epoch)


def test_selects_last_or_best_epochs(run_dir):
    assert list(epoch_checkpoints(run_dir)) == [1, 2, 3]
    assert select_epochs(run_dir, 2, "last") == [2, 3]
    by_loss = sorted([1, 2, 3], key=lambda e: _metric(run_dir, e, "valid_loss"))
    assert select_epochs(run_dir, 2, "valid_loss") == sorted(by_loss[:2])
    assert select_epochs(run_dir, 1, "valid_cer") == [min([1, 2, 3], key=lambda e: (_metric(run_dir, e, "valid_cer"), e))]
    with pytest.raises(AverageError, match="only 3 checkpoint"):
        select_epochs(run_dir, 4, "last")
    with pytest.raises(AverageError, match="--best-by must be one of"):
        select_epochs(run_dir, 1, "wer")


def test_average_is_the_parameter_mean(run_dir):
    paths = list(epoch_checkpoints(run_dir).values())
    states = [torch.load(p, weights_only=True)["model"] for p in paths]
    averaged = average_state_dicts(paths)
    for key, value in averaged.items():
        torch.testing.assert_close(value, sum(s[key] for s in states) / 3, atol=1e-7, rtol=1e-6)


def test_cli_writes_a_loadable_averaged_package(run_cli, run_dir, registry):
    out = run_dir / "avg2"
    code, stdout, _ = run_cli("average", "--exp-dir", run_dir, "--avg", "2", "--best-by", "last", "--out", out)
    assert code == 0 and f"model package: {out} (average of epoch(s) 2, 3, by last)" in stdout
    model, _ = load_package(out, registry)
    expected = average_state_dicts([run_dir / "checkpoints" / "epoch-2.pt", run_dir / "checkpoints" / "epoch-3.pt"])
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, expected[key])
    assert json.loads((out / "average.json").read_text()) == {"epochs": [2, 3], "best_by": "last", "avg": 2}


def test_cli_avg_1_selects_the_best_checkpoint(run_cli, run_dir, registry):
    code, stdout, _ = run_cli("average", "--exp-dir", run_dir, "--avg", "1", "--best-by", "valid_loss")
    best = min([1, 2, 3], key=lambda e: (_metric(run_dir, e, "valid_loss"), e))
    assert code == 0 and f"epoch(s) {best}, by valid_loss" in stdout
    model, _ = load_package(run_dir / "model_avg1_valid_loss", registry)
    state = torch.load(run_dir / "checkpoints" / f"epoch-{best}.pt", weights_only=True)["model"]
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, state[key], atol=0, rtol=0)


def test_cli_too_few_checkpoints_is_bad_input(run_cli, run_dir):
    code, _, err = run_cli("average", "--exp-dir", run_dir, "--avg", "9")
    assert code == 2 and "asked to average 9 epochs by last, but only 3 checkpoint(s)" in err


def test_package_of_another_model_is_bad_input(run_cli, run_dir, tmp_path, make_model, tiny_config, registry):
    """Checkpoints of one model and a package of another: a one-line error, not a traceback."""
    import shutil

    exp = tmp_path / "exp"
    shutil.copytree(run_dir / "checkpoints", exp / "checkpoints")
    shutil.copy(run_dir / LOG_FILE, exp / LOG_FILE)
    other = make_model(seed=0, decoder={**tiny_config.model.decoder, "hidden_size": 32})
    save_package(other, tiny_config.decode, exp / "model", registry)
    code, out, err = run_cli("average", "--exp-dir", exp, "--avg", "2")
    assert code == 2 and out == ""
    assert f"{exp / 'model'}: its config does not match the checkpoints' weights" in err


def test_checkpoints_of_different_models_are_refused(run_dir, tmp_path, make_model, tiny_config):
    paths = list(epoch_checkpoints(run_dir).values())[:1]
    odd = tmp_path / "odd.pt"
    state = torch.load(paths[0], weights_only=True)
    state["model"] = make_model(seed=0, decoder={**tiny_config.model.decoder, "hidden_size": 32}).state_dict()
    torch.save(state, odd)
    with pytest.raises(AverageError, match="odd.pt: holds different weights"):
        average_state_dicts([paths[0], odd])
