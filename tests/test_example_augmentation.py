"""The worked example in examples/asr-s2s-packet-loss: a third-party augmentation (hook
``asr_s2s_register_augmentations``), installed for real, listed, and trained with."""

from __future__ import annotations

import dataclasses
import json
import logging
import tomllib

import numpy as np
import pytest
import yaml

from asr_s2s.augment import AugmentationChain
from asr_s2s.audio import load_audio
from asr_s2s.dataset import SpeechDataset
from asr_s2s.interfaces import AugmentationContext, Signal
from asr_s2s.registry import Registry

from conftest import FIXTURE_DIR, REPO, TINY_YAML, install_example

EXAMPLE = REPO / "examples" / "asr-s2s-packet-loss"
PROJECT = tomllib.loads((EXAMPLE / "pyproject.toml").read_text())["project"]
DISTRIBUTION = f"{PROJECT['name']} {PROJECT['version']}"


@pytest.fixture
def example_registry(tmp_path, monkeypatch):
    with install_example(EXAMPLE, tmp_path / "site", monkeypatch):
        yield Registry()


def test_the_installed_augmentation_is_discovered_and_listed(example_registry, run_cli):
    info = example_registry.get("augmentation", "packet_loss")
    assert (info.plugin, info.distribution) == ("packet_loss", DISTRIBUTION)
    assert "noise" in example_registry.names("augmentation"), "the built-ins still load beside it"
    code, out, _ = run_cli("plugins", "--json")
    assert code == 0
    assert {"kind": "augmentation", "name": "packet_loss", "plugin": "packet_loss",
            "distribution": DISTRIBUTION} in json.loads(out)


def test_it_silences_whole_packets_at_the_drawn_rate(example_registry, fixture_utterances):
    chain = AugmentationChain.from_config([{"name": "packet_loss", "loss": [0.3, 0.3], "burst": 0.0}],
                                          example_registry, AugmentationContext())
    step = chain.steps[0].augmentation
    speech = Signal(load_audio(fixture_utterances[0].audio) + np.float32(0.01))  # no sample is 0 by chance
    out = step.apply(speech, np.random.default_rng(0)).waveform
    packets = out[: len(out) // 320 * 320].reshape(-1, 320)
    silent = (packets == 0).all(1)
    assert np.array_equal(silent, (packets == 0).any(1)), "whole packets are lost, never parts"
    assert 0.15 < silent.mean() < 0.45
    assert np.array_equal(packets[~silent], speech.waveform[: packets.size].reshape(-1, 320)[~silent])


def test_training_with_it_from_a_config(example_registry, run_cli, tmp_path, fixture_utterances, caplog):
    """`asr-s2s train` builds the third-party entry from train.augment and trains with it."""
    caplog.set_level(logging.INFO)
    config = yaml.safe_load(TINY_YAML.read_text())
    config["train"].update(epochs=1, num_workers=0,
                           augment=[{"name": "packet_loss", "prob": 1.0, "loss": [0.05, 0.1]}, {"name": "gain"}])
    (tmp_path / "conf.yaml").write_text(yaml.safe_dump(config))
    code, _, _ = run_cli("prepare", "--data-dir", FIXTURE_DIR, "--out", tmp_path / "all.jsonl")
    assert code == 0
    code, _, _ = run_cli("compute-cmvn", "--manifest", tmp_path / "all.jsonl", "--out", tmp_path / "cmvn.json",
                         "--num-workers", "0")
    assert code == 0
    code, out, err = run_cli("train", "--config", tmp_path / "conf.yaml", "--train-manifest", tmp_path / "all.jsonl",
                             "--valid-manifest", tmp_path / "all.jsonl", "--cmvn", tmp_path / "cmvn.json",
                             "--exp-dir", tmp_path / "exp")
    assert code == 0, err
    assert "augmentation: packet_loss (p=1), gain (p=1)" in err
    (epoch,) = [json.loads(line) for line in (tmp_path / "exp" / "train_log.jsonl").read_text().splitlines()
                if '"epoch"' in line and json.loads(line)["kind"] == "epoch"]
    assert epoch["step"] >= 1 and epoch["augment_failures"] == 0
    # the same items, as the run's workers made them: every one lost packets
    chain = AugmentationChain.from_config(config["train"]["augment"], example_registry,
                                          AugmentationContext(utterances=tuple(fixture_utterances)))
    from asr_s2s.tokenizer import CharTokenizer

    dataset = SpeechDataset(fixture_utterances, CharTokenizer(), augment=chain)
    notes = [dataset[(i, 0)].augment_notes for i in range(len(dataset))]
    assert all(n[0].startswith("packet_loss: ") and n[1].startswith("gain: ") for n in notes)
    assert dataclasses.is_dataclass(chain.steps[0])
