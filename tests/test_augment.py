"""asr_s2s.augment: the train.augment chain (determinism, probabilities, failures, config errors), the dataset's
use of it (training only, the feature cache), and `asr-s2s augment`, which writes fixed test conditions."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import soundfile
import torch
import yaml

from asr_s2s import cli
from asr_s2s.audio import load_audio
from asr_s2s.augment import AugmentationChain, audio_folder, augment_entries, check_range, load_augment_file
from asr_s2s.config import TrainConfig
from asr_s2s.dataset import SpeechDataset, make_loader
from asr_s2s.errors import ConfigError, PluginError
from asr_s2s.features import fbank
from asr_s2s.interfaces import Augmentation, AugmentationContext, Signal
from asr_s2s.registry import ConfigKeyError, Registry, get_plugin_manager
from asr_s2s.hookspecs import hookimpl



def chain_of(registry, entries, utterances=(), seed=0):
    return AugmentationChain.from_config(entries, registry, AugmentationContext(utterances=tuple(utterances)), seed=seed)


NOISY = [{"name": "noise", "snr_db": [5, 20], "sources": ["white", "pink"]}, {"name": "gain", "prob": 0.5}]


# -- determinism and probabilities --------------------------------------------------------------------------------
def test_draws_repeat_for_seed_epoch_and_utterance_and_differ_otherwise(registry, fixture_utterances, tokenizer):
    """The same (seed, epoch, utterance) gives the same audio in any order and any process; others differ."""
    dataset = SpeechDataset(fixture_utterances, tokenizer, augment=chain_of(registry, NOISY, seed=3))
    first = dataset[(2, 1)]
    for key in [(0, 1), (5, 0), (2, 0)]:  # other items in between change nothing
        dataset[key]
    again = dataset[(2, 1)]
    assert first.augment_notes == again.augment_notes and first.augment_notes
    torch.testing.assert_close(again.feats, first.feats, atol=0, rtol=0)
    other_epoch = dataset[(2, 2)]
    assert not torch.equal(other_epoch.feats, first.feats)
    reseeded = SpeechDataset(fixture_utterances, tokenizer, augment=chain_of(registry, NOISY, seed=4))[(2, 1)]
    assert not torch.equal(reseeded.feats, first.feats)


def test_worker_processes_draw_what_the_main_process_draws(registry, fixture_dataset, fixture_utterances, tokenizer):
    dataset = SpeechDataset(fixture_utterances, tokenizer, augment=chain_of(registry, NOISY, seed=1))
    by_id = {}
    for workers in (0, 2):
        loader = make_loader(dataset, max_batch_seconds=4.0, shuffle=True, seed=0, num_workers=workers)
        loader.batch_sampler.set_epoch(3)
        for batch in loader:
            for utt_id, feats, length in zip(batch.ids, batch.feats, batch.feat_lengths):
                by_id.setdefault(utt_id, []).append(feats[:length])
    assert len(by_id) == len(fixture_utterances)
    for utt_id, (main, worker) in by_id.items():
        torch.testing.assert_close(worker, main, atol=0, rtol=0, msg=utt_id)


def test_an_entry_fires_with_its_probability(registry):
    chain = chain_of(registry, [{"name": "gain", "prob": 0.3}, {"name": "gain", "prob": 0.0}, {"name": "gain"}])
    fired = np.array([[step.position for step, _ in chain.plan(i, 0).audio] for i in range(2000)], dtype=object)
    counts = {p: sum(p in row for row in fired) for p in range(3)}
    assert counts[1] == 0 and counts[2] == 2000
    assert abs(counts[0] / 2000 - 0.3) < 0.04


def test_an_entry_fires_only_from_its_start_epoch(registry):
    chain = chain_of(registry, [{"name": "gain", "start_epoch": 3}, {"name": "gain"}])
    assert {tuple(step.position for step, _ in chain.plan(i, epoch).audio) for i in range(50) for epoch in (0, 1)} == {(1,)}
    assert all(len(chain.plan(i, epoch).audio) == 2 for i in range(50) for epoch in (2, 5))
    # the later start leaves the draws of the epochs it fires in as they were
    early = chain_of(registry, [{"name": "gain"}, {"name": "gain"}])
    assert [r.random() for _, r in chain.plan(7, 2).audio] == [r.random() for _, r in early.plan(7, 2).audio]


def test_changing_one_entry_leaves_the_other_entries_draws(registry, fixture_utterances):
    signal = Signal(load_audio(fixture_utterances[0].audio), utterance=fixture_utterances[0])
    a = chain_of(registry, [{"name": "gain"}, {"name": "noise", "snr_db": [10, 30]}])
    b = chain_of(registry, [{"name": "gain", "gain_db": [-3, 0]}, {"name": "noise", "snr_db": [10, 30]}])
    notes_a = a.apply_signal(a.plan(4, 2), signal, []).notes
    notes_b = b.apply_signal(b.plan(4, 2), signal, []).notes
    assert notes_a[0] != notes_b[0] and notes_a[1] == notes_b[1]


def test_stages_run_audio_then_filterbank_then_features(registry, fixture_utterances, tokenizer):
    """vtlp listed first still warps the fbank of the noisy audio; the features stage sees those features."""
    entries = [{"name": "vtlp", "warp": [1.1, 1.1]}, {"name": "specaugment", "freq_masks": 0, "time_masks": 0},
               {"name": "gain", "gain_db": [-6, -6]}]
    example = SpeechDataset(fixture_utterances[:1], tokenizer, augment=chain_of(registry, entries))[0]
    wave = load_audio(fixture_utterances[0].audio) * np.float32(10 ** (-6 / 20))
    torch.testing.assert_close(example.feats, fbank(wave, vtln_warp=1.1))
    assert [n.split(":")[0] for n in example.augment_notes] == ["gain", "vtlp"]


# -- training only ------------------------------------------------------------------------------------------------
def test_a_dataset_without_a_chain_gives_the_clean_features(registry, fixture_utterances, tokenizer):
    """Validation, CMVN, evaluation and transcription build datasets without a chain: nothing is applied."""
    clean = SpeechDataset(fixture_utterances[:2], tokenizer)
    augmented = SpeechDataset(fixture_utterances[:2], tokenizer, augment=chain_of(registry, [{"name": "gain"}]))
    for index in range(2):
        expected = fbank(load_audio(fixture_utterances[index].audio))
        torch.testing.assert_close(clean[(index, 5)].feats, expected, atol=0, rtol=0)
        assert clean[(index, 5)].augment_notes == ()
        assert not torch.equal(augmented[(index, 5)].feats, expected)


def test_training_validates_on_clean_features(registry, make_model, tiny_config, fixture_utterances, tokenizer, tmp_path):
    """The trainer's validation loss is the same whether the training set is augmented or not."""
    import dataclasses

    from asr_s2s.trainer import Trainer

    config = dataclasses.replace(tiny_config.train, epochs=1, num_workers=0)
    valid = SpeechDataset(fixture_utterances[6:], tokenizer)
    losses = []
    for augment in (None, chain_of(registry, [{"name": "noise", "snr_db": [0, 0]}])):
        train = SpeechDataset(fixture_utterances[:4], tokenizer, augment=augment)
        trainer = Trainer(make_model(seed=0), config, train, valid, tmp_path, progress=False)
        losses.append(trainer.validate())
    assert losses[0] == losses[1]


def test_the_cache_keeps_clean_features_and_recomputes_augmented_ones(registry, fixture_utterances, tokenizer, tmp_path):
    path = tmp_path / "a.wav"
    soundfile.write(path, load_audio(fixture_utterances[0].audio), 16_000, subtype="FLOAT")
    utt = fixture_utterances[0].__class__(**{**fixture_utterances[0].__dict__, "audio": str(path)})
    chain = chain_of(registry, [{"name": "gain", "prob": 0.5}, {"name": "specaugment", "time_masks": 0}])
    dataset = SpeechDataset([utt], tokenizer, cache=True, augment=chain)
    epochs = range(40)
    plans = {e: chain.plan(0, e) for e in epochs}
    clean_epoch = next(e for e in epochs if not plans[e].audio)
    gain_epoch = next(e for e in epochs if plans[e].audio)
    first = dataset[(0, clean_epoch)]
    assert set(dataset.cache) == {0}
    cached = dataset.cache[0][0].clone()
    path.unlink()  # clean epochs need the file no more; an augmented one does, and fails cleanly
    again = dataset[(0, clean_epoch)]
    torch.testing.assert_close(again.feats, first.feats, atol=0, rtol=0)
    assert torch.equal(dataset.cache[0][0], cached), "specaugment never changes the cached features in place"
    assert dataset[(0, gain_epoch)] == (utt.id, f"{path}: no such file")


# -- failures -----------------------------------------------------------------------------------------------------
class Broken(Augmentation):
    name = "broken"

    def __init__(self, mode: str = "raise") -> None:
        self.mode = mode

    def apply(self, signal, rng):
        if self.mode == "raise":
            raise RuntimeError("boom")
        if self.mode == "nan":
            return signal.with_audio(np.full_like(signal.waveform, np.nan), "nan")
        return signal.waveform  # not a Signal


class BrokenPlugin:
    @hookimpl
    def asr_s2s_register_augmentations(self):
        return [Broken]


@pytest.mark.parametrize("mode, reason", [("raise", "RuntimeError: boom"), ("nan", "non-finite"), ("array", "not a Signal")])
def test_a_failing_augmentation_is_reported_and_skipped_never_dropping_the_utterance(
    fixture_utterances, tokenizer, mode, reason
):
    registry = Registry(get_plugin_manager(extra_plugins=[BrokenPlugin()]))
    chain = chain_of(registry, [{"name": "broken", "mode": mode}, {"name": "gain", "gain_db": [-6, -6]}])
    example = SpeechDataset(fixture_utterances[:1], tokenizer, augment=chain)[0]
    (failure,) = example.augment_failures
    assert failure.where == "train.augment[0] (broken)" and reason in failure.reason
    wave = load_audio(fixture_utterances[0].audio) * np.float32(10 ** (-6 / 20))
    torch.testing.assert_close(example.feats, fbank(wave)), "the utterance trains with the other entries"


def test_the_trainer_warns_once_per_entry_and_counts_every_failure(
    make_model, tiny_config, fixture_utterances, tokenizer, tmp_path, caplog
):
    import dataclasses

    from asr_s2s.trainer import Trainer

    registry = Registry(get_plugin_manager(extra_plugins=[BrokenPlugin()]))
    train = SpeechDataset(fixture_utterances[:4], tokenizer, augment=chain_of(registry, [{"name": "broken"}]))
    config = dataclasses.replace(tiny_config.train, epochs=1, num_workers=0, max_batch_seconds=4.0)
    trainer = Trainer(make_model(seed=0), config, train, SpeechDataset(fixture_utterances[6:], tokenizer), tmp_path,
                      progress=False)
    with caplog.at_level(logging.WARNING):
        (result,) = trainer.fit()
    assert result.augment_failures == 4 and result.failed_items == 0
    assert sum("failed on" in r.message and "broken" in r.message for r in caplog.records) == 1
    assert any("4 augmentation(s) failed" in r.message for r in caplog.records)


# -- config errors ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "entries, error, words",
    [
        ([{"name": "nosie"}], PluginError, ["train.augment[0]", "unknown augmentation 'nosie'", "Did you mean 'noise'"]),
        ([{"name": "noise", "snr": [1, 2]}], ConfigKeyError, ["train.augment[0]", "unknown key 'snr'", "'snr_db'"]),
        ([{"name": "noise", "snr_db": [20, 5]}], ConfigError, ["train.augment[0] (augmentation 'noise')", "snr_db", "min <= max"]),
        ([{"name": "noise", "sources": ["pinkk"]}], ConfigError, ["train.augment[0] (augmentation 'noise')", "pinkk"]),
        ([{"name": "gain", "prob": 1.5}], ConfigError, ["train.augment[0].prob", "1.5"]),
        ([{"name": "gain", "start_epoch": 0}], ConfigError, ["train.augment[0].start_epoch", "from 1 on", "0"]),
        ([{"name": "gain"}, "gain"], ConfigError, ["train.augment[1]", "expected a mapping"]),
        ([{"name": "codec", "codecs": ["aac"]}], ConfigError, ["train.augment[0] (augmentation 'codec')", "mp3, opus"]),
        ([{"name": "speed", "factors": [0.0, 1.0]}], ConfigError, ["speed factors must lie in [0.5, 2.0]"]),
    ],
)
def test_a_bad_entry_is_an_error_naming_it(registry, entries, error, words):
    with pytest.raises(error) as caught:
        chain_of(registry, entries)
    for word in words:
        assert word in str(caught.value)


def test_a_missing_noise_or_rir_folder_is_an_error_naming_the_path(registry, tmp_path):
    missing = tmp_path / "musan" / "noise"
    with pytest.raises(ConfigError, match=f"noise folder {missing}: no such directory"):
        chain_of(registry, [{"name": "noise", "sources": ["files"], "folder": str(missing)}])
    with pytest.raises(ConfigError, match=f"RIR folder {missing}: no such directory"):
        chain_of(registry, [{"name": "reverb", "folder": str(missing)}])
    with pytest.raises(ConfigError, match="needs folder"):
        chain_of(registry, [{"name": "noise", "sources": ["files"]}])


def test_an_unreadable_file_in_a_folder_is_skipped_with_a_warning(tmp_path, caplog):
    folder = tmp_path / "noise"
    (folder / "sub").mkdir(parents=True)
    soundfile.write(folder / "sub" / "hum.wav", np.zeros(1600, dtype=np.float32), 16_000)
    (folder / "broken.flac").write_bytes(b"fLaC not really")
    (folder / "notes.txt").write_text("not audio")
    with caplog.at_level(logging.WARNING):
        files = audio_folder(folder, "noise")
    assert files == [folder / "sub" / "hum.wav"]
    assert any("skipping 1 unreadable file(s) of 2" in r.message and "broken.flac" in r.message for r in caplog.records)
    (folder / "sub" / "hum.wav").unlink()
    with pytest.raises(ValueError, match="no readable audio files"):
        audio_folder(folder, "noise")


def test_train_config_entries_need_a_name_and_speed_perturb_folds_in(caplog):
    with pytest.raises(ConfigError, match=r"train.augment\[0\]: needs 'name"):
        TrainConfig(augment=[{"prob": 0.5}])
    with caplog.at_level(logging.WARNING):
        entries = augment_entries(TrainConfig(speed_perturb=[0.9, 1.1], augment=[{"name": "gain"}]))
    assert entries == [{"name": "speed", "factors": [0.9, 1.1]}, {"name": "gain"}]
    assert any("deprecated" in r.message for r in caplog.records)


def test_check_range():
    assert check_range("x", [1, 2], 0, 3) == (1.0, 2.0)
    for bad in ([2, 1], [0, 4], 5, ["a", "b"], [1, float("nan")]):
        with pytest.raises(ValueError, match="x must be"):
            check_range("x", bad, 0, 3)


# -- asr-s2s augment ----------------------------------------------------------------------------------------------
@pytest.fixture
def manifest(tmp_path, fixture_utterances):
    from asr_s2s.manifest import write_manifest

    path = tmp_path / "test.jsonl"
    write_manifest(fixture_utterances, path)
    return path


def test_the_augment_command_writes_the_same_condition_every_time(manifest, tmp_path, capsys, fixture_utterances):
    conf = tmp_path / "noisy.yaml"
    conf.write_text(yaml.safe_dump({"augment": [{"name": "noise", "snr_db": [10, 10],
                                                 "sources": ["pink", "babble"]}]}))
    outputs = []
    for name, workers in (("a", 0), ("b", 2)):
        code = cli.main(["augment", "--manifest", str(manifest), "--augment", str(conf), "--out-dir",
                         str(tmp_path / name), "--seed", "7", "--num-workers", str(workers), "-q"])
        assert code == 0
        lines = [json.loads(line) for line in (tmp_path / name / "manifest.jsonl").read_text().splitlines()]
        outputs.append(lines)
    assert "8 utterances" in capsys.readouterr().out
    first, second = outputs
    assert [e["id"] for e in first] == [u.id for u in fixture_utterances]
    for a, b, utt in zip(first, second, fixture_utterances):
        assert a["augment"] == b["augment"] and "at 10.0 dB SNR" in a["augment"][0]
        assert a["text"] == utt.text and a["speaker"] == utt.speaker
        assert np.array_equal(soundfile.read(a["audio"])[0], soundfile.read(b["audio"])[0])
        assert soundfile.info(a["audio"]).samplerate == 16_000
        assert a["duration"] == pytest.approx(utt.duration, abs=1e-3)


def test_the_augment_command_refuses_feature_augmentations_and_leaves_out_bad_files(manifest, tmp_path, capsys, caplog):
    conf = tmp_path / "spec.yaml"
    conf.write_text("augment:\n  - {name: specaugment}\n")
    assert cli.main(["augment", "--manifest", str(manifest), "--augment", str(conf), "--out-dir", str(tmp_path / "x")]) == 2
    assert "changes the features, not the audio" in capsys.readouterr().err
    lines = manifest.read_text().splitlines()
    bad = json.loads(lines[0])
    bad["audio"] = str(tmp_path / "gone.flac")
    manifest.write_text("\n".join([json.dumps(bad), *lines[1:]]) + "\n")
    conf.write_text("augment:\n  - {name: gain}\n")
    assert cli.main(["augment", "--manifest", str(manifest), "--augment", str(conf), "--out-dir",
                     str(tmp_path / "y"), "--num-workers", "0", "-q"]) == 1
    assert len((tmp_path / "y" / "manifest.jsonl").read_text().splitlines()) == 7
    assert "(1 left out)" in capsys.readouterr().out
    assert any("1001-10-0000 left out" in r.message and "gone.flac: no such file" in r.message for r in caplog.records)


def test_augment_files_are_read_strictly(tmp_path):
    path = tmp_path / "a.yaml"
    path.write_text("augment: {name: gain}\n")
    with pytest.raises(ConfigError, match="expected 'augment: "):
        load_augment_file(path)
    path.write_text("train:\n  augment:\n    - {name: gain}\n")
    assert load_augment_file(path) == [{"name": "gain"}]
    with pytest.raises(ConfigError, match="no such augmentation file"):
        load_augment_file(tmp_path / "missing.yaml")
