"""asr_s2s.cli: the asr-s2s command. Results on stdout, logs on stderr, meaningful exit codes."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
import yaml

from asr_s2s.cli import build_parser
from asr_s2s.features import CMVNStats
from asr_s2s.manifest import read_manifest, write_manifest
from asr_s2s.metrics import error_rates
from asr_s2s.package import load_package
from asr_s2s.tokenizer import normalize_text

from conftest import FIXTURE_DIR, TINY_YAML

SUBCOMMANDS = ["plugins", "prepare", "compute-cmvn", "train", "evaluate", "transcribe"]
ASR_VERSION = importlib.metadata.version("asr-s2s")


@pytest.fixture(scope="module")
def manifest(fixture_utterances, tmp_path_factory):
    path = tmp_path_factory.mktemp("manifests") / "fixture.jsonl"
    write_manifest(fixture_utterances, path)
    return path


# -- plugins and help --------------------------------------------------------------------------
def test_plugins_table(run_cli):
    code, out, _ = run_cli("plugins")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["kind", "name", "plugin", "distribution"]
    rows = {tuple(line.split()[:3]): " ".join(line.split()[3:]) for line in lines[1:]}
    for row in [("encoder", "pblstm", "pblstm"), ("decoder", "attention", "attention"),
                ("scorer", "decoder", "scorers"), ("scorer", "length_bonus", "scorers")]:
        assert rows[row] == f"asr-s2s {ASR_VERSION}"


def test_plugins_json(run_cli):
    code, out, _ = run_cli("plugins", "--json")
    assert code == 0
    rows = json.loads(out)
    assert {"kind": "encoder", "name": "pblstm", "plugin": "pblstm", "distribution": f"asr-s2s {ASR_VERSION}"} in rows


@pytest.mark.parametrize("command", [None, *SUBCOMMANDS])
def test_help_of_every_subcommand(run_cli, command):
    code, out, _ = run_cli(*([command] if command else []), "--help")
    assert code == 0
    assert out.startswith("usage: asr-s2s")
    if command:
        assert "--disable-plugin" in out and "--quiet" in out
        for action in build_parser()._subparsers._group_actions[0].choices[command]._actions:
            if action.help and action.option_strings:
                assert action.option_strings[-1] in out


def test_every_subcommand_is_listed(run_cli):
    _, out, _ = run_cli("--help")
    for command in SUBCOMMANDS:
        assert command in out
    assert "Exit codes" in out


def test_version_and_usage_errors(run_cli):
    code, out, _ = run_cli("--version")
    assert code == 0 and out.strip() == f"asr-s2s {ASR_VERSION}"
    code, _, err = run_cli()
    assert code == 2 and "COMMAND" in err
    code, _, err = run_cli("evaluate", "--model", "x")
    assert code == 2 and "--manifest" in err


# -- data preparation -----------------------------------------------------------------------------
def test_prepare_writes_a_manifest(run_cli, tmp_path, fixture_utterances):
    out_path = tmp_path / "m" / "fixture.jsonl"
    code, out, _ = run_cli("prepare", "--data-dir", FIXTURE_DIR, "--out", out_path, "--quiet")
    assert code == 0
    assert out.strip().startswith(f"{out_path}: 8 utterances")
    assert read_manifest(out_path) == fixture_utterances


def test_prepare_bad_folder(run_cli, tmp_path):
    code, out, err = run_cli("prepare", "--data-dir", tmp_path, "--out", tmp_path / "m.jsonl", "--quiet")
    assert code == 2 and out == "" and "trans.txt" in err and str(tmp_path) in err


def test_compute_cmvn(run_cli, manifest, tmp_path, cmvn):
    out_path = tmp_path / "cmvn.json"
    code, out, _ = run_cli("compute-cmvn", "--manifest", manifest, "--out", out_path, "--num-workers", "0", "--quiet")
    assert code == 0 and f"{cmvn.frames} frames from 8 utterances (0 failed)" in out
    stats = CMVNStats.load(out_path)
    np.testing.assert_allclose(stats.mean, cmvn.mean, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(stats.std, cmvn.std, rtol=1e-9)


def test_compute_cmvn_with_a_bad_file_exits_1(run_cli, fixture_utterances, tmp_path):
    utts = list(fixture_utterances[:2])
    utts.append(type(utts[0])("bad", str(tmp_path / "gone.wav"), 1.0, "X"))
    write_manifest(utts, tmp_path / "m.jsonl")
    code, out, err = run_cli("compute-cmvn", "--manifest", tmp_path / "m.jsonl", "--out", tmp_path / "c.json", "--num-workers", "0", "--quiet")
    assert code == 1 and "(1 failed)" in out and "gone.wav" in err


# -- training -------------------------------------------------------------------------------------
def test_train_end_to_end(run_cli, manifest, tmp_path, cmvn, registry):
    config = yaml.safe_load(TINY_YAML.read_text())
    config["train"]["epochs"] = 1
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    cmvn.save(tmp_path / "cmvn.json")
    exp = tmp_path / "exp"
    code, out, _ = run_cli(
        "train", "--config", tmp_path / "exp.yaml", "--train-manifest", manifest, "--valid-manifest", manifest,
        "--cmvn", tmp_path / "cmvn.json", "--exp-dir", exp, "--quiet",
    )
    assert code == 0
    assert re.fullmatch(rf"model package: {re.escape(str(exp / 'model'))} \(epoch 1: valid loss [0-9.]+, valid CER [0-9.]+%\)\n", out)
    assert (exp / "checkpoints" / "epoch-1.pt").is_file() and (exp / "training_curves.png").is_file()
    model, loaded = load_package(exp / "model", registry)
    assert loaded.decode.beam_size == 4 and model.encoder.time_reduction == 4


def test_train_with_a_bad_config_key(run_cli, manifest, tmp_path, cmvn):
    (tmp_path / "exp.yaml").write_text("train: {epohcs: 1}\n")
    cmvn.save(tmp_path / "cmvn.json")
    code, out, err = run_cli(
        "train", "--config", tmp_path / "exp.yaml", "--train-manifest", manifest, "--valid-manifest", manifest,
        "--cmvn", tmp_path / "cmvn.json", "--exp-dir", tmp_path / "exp", "--quiet",
    )
    assert code == 2 and out == ""
    assert "config.train" in err and "'epohcs'" in err and "Did you mean 'epochs'?" in err


def test_train_with_digits_in_a_transcript(run_cli, fixture_utterances, tmp_path, cmvn):
    utts = [*fixture_utterances[:2], type(fixture_utterances[0])("9-9-9", fixture_utterances[2].audio, 1.5, "ROOM 101")]
    write_manifest(utts, tmp_path / "m.jsonl")
    cmvn.save(tmp_path / "cmvn.json")
    code, _, err = run_cli(
        "train", "--config", TINY_YAML, "--train-manifest", tmp_path / "m.jsonl", "--valid-manifest", tmp_path / "m.jsonl",
        "--cmvn", tmp_path / "cmvn.json", "--exp-dir", tmp_path / "exp", "--quiet",
    )
    assert code == 2 and "utterance 9-9-9" in err and "'1'" in err


# -- evaluation -------------------------------------------------------------------------------------
# The untrained package never transcribes an utterance exactly; the overfit one transcribes all of them.
PACKAGES = ["random_package", "trained_package"]


@pytest.fixture
def package(request):
    return request.getfixturevalue(request.param)

def _check_outputs(out_dir, result, utterances):
    """The printed JSON agrees with the hypotheses written beside it."""
    hyp_lines = (out_dir / "hyp.trn").read_text().splitlines()
    assert len(hyp_lines) == result["utterances"]
    hyps = {}
    for line in hyp_lines:
        match = re.fullmatch(r"(.*) \((\S+)\)", line)
        assert match, line
        hyps[match.group(2)] = match.group(1)
    refs = {u.id: normalize_text(u.text) for u in utterances}
    ids = sorted(hyps)
    recomputed = error_rates([refs[i] for i in ids], [hyps[i] for i in ids])
    assert result["wer"] == pytest.approx(recomputed.wer) and result["cer"] == pytest.approx(recomputed.cer)
    for key in ("substitutions", "deletions", "insertions"):
        assert result[key] == getattr(recomputed, key)
    alignments = (out_dir / "alignments.txt").read_text()
    assert sorted(re.findall(r"^=== (\S+) \(WER", alignments, flags=re.M)) == ids
    assert json.loads((out_dir / "results.json").read_text()) == result


@pytest.mark.parametrize("package", PACKAGES, indirect=True)
def test_evaluate_json_on_the_fixture_folder(run_cli, package, tmp_path, fixture_utterances):
    out_dir = tmp_path / "decode"
    code, out, err = run_cli(
        "evaluate", "--model", package, "--data-dir", FIXTURE_DIR, "--json", "--output-dir", out_dir,
        "--num-workers", "0", "--quiet",
    )
    assert code == 0, err
    assert len(out.splitlines()) == 1, "stdout holds the result only"
    result = json.loads(out)
    assert {"wer", "cer", "substitutions", "deletions", "insertions", "utterances"} <= set(result)
    assert result["utterances"] == 8 and result["failed"] == 0 and result["set"] == "test-fixture"
    _check_outputs(out_dir, result, fixture_utterances)


@pytest.mark.parametrize("package", PACKAGES, indirect=True)
def test_evaluate_manifest_table_with_a_worker_and_default_output_dir(run_cli, package, manifest, tmp_path, monkeypatch, fixture_utterances):
    monkeypatch.chdir(tmp_path)
    code, out, _ = run_cli("evaluate", "--model", package, "--manifest", manifest, "--beam-size", "1", "--quiet")
    assert code == 0
    lines = out.strip().splitlines()
    words = sum(len(normalize_text(u.text).split()) for u in fixture_utterances)
    assert lines[0].startswith("| set |") and lines[2].startswith(f"| fixture | 8 | {words} |")
    assert (tmp_path / "decode_fixture" / "hyp.trn").is_file()
    result = json.loads((tmp_path / "decode_fixture" / "results.json").read_text())
    _check_outputs(tmp_path / "decode_fixture", result, fixture_utterances)


def test_evaluate_with_one_missing_file_scores_the_rest(run_cli, random_package, fixture_utterances, tmp_path):
    utts = [*fixture_utterances, type(fixture_utterances[0])("lost", str(tmp_path / "lost.flac"), 1.5, "GONE")]
    write_manifest(utts, tmp_path / "m.jsonl")
    code, out, err = run_cli(
        "evaluate", "--model", random_package, "--manifest", tmp_path / "m.jsonl", "--json",
        "--output-dir", tmp_path / "d", "--num-workers", "0", "--batch-seconds", "100",
    )
    assert code == 1
    result = json.loads(out)
    assert result["utterances"] == 8 and result["failed"] == 1
    assert "lost" in err and "lost.flac" in err


def test_evaluate_with_a_missing_file_alone_in_its_batch(run_cli, random_package, fixture_utterances, tmp_path):
    utts = [*fixture_utterances[:2], type(fixture_utterances[0])("lost", str(tmp_path / "lost.flac"), 1.5, "GONE")]
    write_manifest(utts, tmp_path / "m.jsonl")
    code, _, err = run_cli(
        "evaluate", "--model", random_package, "--manifest", tmp_path / "m.jsonl", "--json",
        "--output-dir", tmp_path / "d", "--num-workers", "0", "--batch-seconds", "1.6", "--quiet",
    )
    assert code == 1 and "lost.flac" in err


def test_unknown_scorer_exits_2_naming_it(run_cli, trained_package, tmp_path):
    code, out, err = run_cli(
        "evaluate", "--model", trained_package, "--data-dir", FIXTURE_DIR, "--scorer", "foo=1",
        "--output-dir", tmp_path / "d", "--quiet",
    )
    assert code == 2 and out == ""
    assert "'foo'" in err and "Known scorers: coverage, ctc, decoder," in err
    assert not (tmp_path / "d").exists()


def test_malformed_scorer_option(run_cli, trained_package, tmp_path):
    code, _, err = run_cli("transcribe", "--model", trained_package, "--scorer", "length_bonus", str(tmp_path / "x.wav"))
    assert code == 2 and "NAME=WEIGHT" in err


def test_scorer_weights_from_the_command_line(run_cli, random_package, tmp_path):
    """length_bonus=0 is the same as the package default; a weight changes the search (it runs)."""
    base = ["evaluate", "--model", random_package, "--data-dir", FIXTURE_DIR, "--json", "--num-workers", "0", "--quiet"]
    code, plain, _ = run_cli(*base, "--output-dir", tmp_path / "a")
    assert code == 0
    code, zero, _ = run_cli(*base, "--output-dir", tmp_path / "b", "--scorer", "length_bonus=0")
    assert code == 0 and zero == plain
    assert (tmp_path / "a" / "hyp.trn").read_text() == (tmp_path / "b" / "hyp.trn").read_text()
    code, _, _ = run_cli(*base, "--output-dir", tmp_path / "c", "--scorer", "length_bonus=0.5", "--beam-size", "2")
    assert code == 0


def test_evaluate_a_missing_model(run_cli, tmp_path):
    code, _, err = run_cli("evaluate", "--model", tmp_path / "none", "--data-dir", FIXTURE_DIR, "--quiet")
    assert code == 2 and "no such model directory" in err


# -- transcription -----------------------------------------------------------------------------------
def test_transcribe_good_and_missing_file(run_cli, trained_package, fixture_utterances, tmp_path):
    good = fixture_utterances[0]
    missing = tmp_path / "missing.wav"
    code, out, err = run_cli("transcribe", "--model", trained_package, "--beam-size", "1", good.audio, missing, "--quiet")
    assert code == 1
    lines = out.splitlines()
    assert len(lines) == 1
    path, text = lines[0].split("\t")
    assert path == good.audio and text == normalize_text(good.text)
    assert str(missing) in err and "no such file" in err


def test_transcribe_other_formats(run_cli, trained_package, fixture_utterances, tmp_path):
    """An 8 kHz stereo mp3 and a 44.1 kHz ogg go through the same path; each gets a line."""
    import librosa

    wave, rate = soundfile.read(fixture_utterances[1].audio)
    mp3 = tmp_path / "a.mp3"
    soundfile.write(mp3, np.stack([librosa.resample(wave, orig_sr=rate, target_sr=8000)] * 2, 1), 8000, format="MP3")
    ogg = tmp_path / "b.ogg"
    soundfile.write(ogg, librosa.resample(wave, orig_sr=rate, target_sr=44100), 44100, format="OGG")
    code, out, _ = run_cli("transcribe", "--model", trained_package, mp3, ogg, "--quiet")
    assert code == 0
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(mp3), str(ogg)]
    for line in out.splitlines():
        assert re.fullmatch(r"[A-Z' ]*", line.split("\t")[1])


def test_console_script_separates_results_from_logs(trained_package, fixture_utterances, tmp_path):
    """The installed `asr-s2s` script, for real: results on stdout, the error on stderr, exit 1."""
    exe = shutil.which("asr-s2s", path=str(Path(sys.executable).parent))
    assert exe is not None
    good, missing = fixture_utterances[2].audio, tmp_path / "missing.flac"
    proc = subprocess.run(
        [exe, "transcribe", "--model", str(trained_package), "--beam-size", "1", str(missing), good],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1
    assert proc.stdout == f"{good}\t{normalize_text(fixture_utterances[2].text)}\n"
    assert str(missing) in proc.stderr and "no such file" in proc.stderr
