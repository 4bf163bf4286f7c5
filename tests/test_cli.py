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
import torch

from asr_s2s.cli import build_parser
from asr_s2s.features import CMVNStats
from asr_s2s.manifest import read_manifest, write_manifest
from asr_s2s.metrics import error_rates
from asr_s2s.package import load_package
from asr_s2s.tokenizer import normalize_text

from conftest import FIXTURE_DIR, TINY_YAML

SUBCOMMANDS = ["plugins", "prepare", "compute-cmvn", "train", "evaluate", "transcribe", "results"]
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
                ("scorer", "decoder", "decoder_scorer"), ("scorer", "length_bonus", "length_coverage")]:
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
    assert result["utterances"] == 9 and result["failed"] == 1  # the lost one is scored: all deletions
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
def test_transcribe_good_and_missing_file(run_cli, robust_package, fixture_utterances, tmp_path):
    good = fixture_utterances[0]
    missing = tmp_path / "missing.wav"
    code, out, err = run_cli("transcribe", "--model", robust_package, "--beam-size", "1", good.audio, missing, "--quiet")
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


def test_precision_bf16_on_transcribe_and_evaluate(run_cli, trained_package, fixture_utterances, tmp_path):
    """--precision bf16 (encoder under bf16 autocast) on both decoding commands; a bad value is a usage error."""
    files = [u.audio for u in fixture_utterances[:3]]
    outputs = {}
    for precision in ("fp32", "bf16"):
        code, out, err = run_cli("transcribe", "--model", trained_package, *files, "--precision", precision, "--quiet")
        assert code == 0, err
        code, result, err = run_cli("evaluate", "--model", trained_package, "--data-dir", FIXTURE_DIR, "--json",
                                    "--output-dir", tmp_path / precision, "--num-workers", "0", "--precision", precision,
                                    "--quiet")
        assert code == 0, err
        outputs[precision] = ([line.split("\t")[0] for line in out.splitlines()], json.loads(result)["cer"])
    assert outputs["bf16"][0] == outputs["fp32"][0] == [str(f) for f in files]
    assert outputs["bf16"][1] == pytest.approx(outputs["fp32"][1], abs=5.0)  # near-ties may flip in bf16
    code, _, err = run_cli("transcribe", "--model", trained_package, *files, "--precision", "fp16")
    assert code == 2 and "--precision" in err


def test_console_script_separates_results_from_logs(robust_package, fixture_utterances, tmp_path):
    """The installed `asr-s2s` script, for real: results on stdout, the error on stderr, exit 1."""
    exe = shutil.which("asr-s2s", path=str(Path(sys.executable).parent))
    assert exe is not None
    good, missing = fixture_utterances[2].audio, tmp_path / "missing.flac"
    proc = subprocess.run(
        [exe, "transcribe", "--model", str(robust_package), "--beam-size", "1", str(missing), good],
        capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert proc.returncode == 1
    assert proc.stdout == f"{good}\t{normalize_text(fixture_utterances[2].text)}\n"
    assert str(missing) in proc.stderr and "no such file" in proc.stderr


# -- transcribe: directories, globs, stdin, formats, re-runs ----------------------------------------------
@pytest.fixture(scope="module")
def recording_dir(fixture_utterances, tmp_path_factory):
    """Two recordings of 10 and 16 s (one in a sub-folder) and their transcripts."""
    from conftest import make_long_recording

    root = tmp_path_factory.mktemp("recordings")
    texts = {}
    for name, seconds, seed in (("a.flac", 10.0, 21), ("sub/b.wav", 16.0, 22)):
        wave, _, utts = make_long_recording(fixture_utterances, seconds, seed=seed)
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        soundfile.write(root / name, wave, 16_000)
        texts[name] = " ".join(utts)
    return root, texts


def test_transcribe_a_directory_with_bad_files(run_cli, robust_package, recording_dir, tmp_path):
    """Good files are transcribed; a corrupt, a zero-byte and a text file are reported; the exit code is 1."""
    root, texts = recording_dir
    folder = tmp_path / "in"
    shutil.copytree(root, folder)
    flac = (FIXTURE_DIR / "1001" / "10" / "1001-10-0000.flac").read_bytes()
    (folder / "corrupt.flac").write_bytes(flac[: len(flac) // 2])
    (folder / "empty.wav").write_bytes(b"")
    (folder / "lyrics.mp3").write_text("not audio, just a text file with an audio name\n")
    (folder / "notes.txt").write_text("a text file without an audio extension\n")
    code, out, err = run_cli("transcribe", "--model", robust_package, "--beam-size", "1", folder, "--quiet")
    assert code == 1
    lines = dict(line.split("\t") for line in out.splitlines())
    assert lines == {str(folder / "a.flac"): texts["a.flac"], str(folder / "sub" / "b.wav"): texts["sub/b.wav"]}
    for bad in ("corrupt.flac", "empty.wav", "lyrics.mp3"):
        assert str(folder / bad) in err
    assert "notes.txt" in err and "3 of 5 input(s) failed" in err


def test_transcribe_srt_vtt_json_tsv_files_and_skip_existing(run_cli, robust_package, recording_dir, tmp_path, caplog):
    import logging

    import srt
    import webvtt

    root, texts = recording_dir
    out_dir = tmp_path / "out"
    for fmt in ("srt", "vtt", "json", "tsv"):
        code, out, err = run_cli("transcribe", "--model", robust_package, "--beam-size", "1", root, "--format", fmt,
                                 "--output-dir", out_dir, "--quiet")
        assert code == 0 and out == "", err
    assert sorted(p.relative_to(out_dir).as_posix() for p in out_dir.rglob("*.*")) == sorted(
        f"{stem}.{fmt}" for stem in ("a", "sub/b") for fmt in ("srt", "vtt", "json", "tsv"))
    for stem, name in (("a", "a.flac"), ("sub/b", "sub/b.wav")):
        subs = list(srt.parse((out_dir / f"{stem}.srt").read_text()))
        assert " ".join(s.content for s in subs) == texts[name]
        assert all(a.end <= b.start for a, b in zip(subs, subs[1:]))
        captions = list(webvtt.from_string((out_dir / f"{stem}.vtt").read_text()))
        assert [c.text for c in captions] == [s.content for s in subs]
        doc = json.loads((out_dir / f"{stem}.json").read_text())
        assert doc["text"] == texts[name] and "@sha256:" in doc["model"] and doc["options"]["beam_size"] == 1
        assert all(w["start"] >= s["start"] and w["end"] <= s["end"] for s in doc["segments"] for w in s["words"])
        assert (out_dir / f"{stem}.tsv").read_text().startswith("start\tend\ttext\n")
    before = (out_dir / "a.srt").stat().st_mtime_ns
    (out_dir / "sub" / "b.srt").unlink()  # as if the run had been interrupted before it
    caplog.set_level(logging.INFO, logger="asr_s2s")
    code, _, err = run_cli("transcribe", "--model", robust_package, "--beam-size", "1", root, "--format", "srt",
                           "--output-dir", out_dir, "--skip-existing")
    assert code == 0 and "skipping 1 input(s)" in err
    assert (out_dir / "a.srt").stat().st_mtime_ns == before and (out_dir / "sub" / "b.srt").is_file()


def test_transcribe_json_lines_stdin_and_globs(run_cli, robust_package, recording_dir, monkeypatch):
    import io

    root, texts = recording_dir
    wav = io.BytesIO()
    soundfile.write(wav, soundfile.read(root / "sub" / "b.wav")[0], 16_000, format="WAV")
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(wav.getvalue())))
    code, out, err = run_cli("transcribe", "--model", robust_package, "--beam-size", "1", "--format", "json", "-",
                             f"{root}/**/*.flac", f"{root}/*.ogg", "--quiet")
    assert code == 1 and "*.ogg: no file matches" in err
    docs = [json.loads(line) for line in out.splitlines()]
    assert [(d["source"], d["text"]) for d in docs] == [("-", texts["sub/b.wav"]), (str(root / "a.flac"), texts["a.flac"])]


def test_transcribe_plots_attention_per_segment(run_cli, robust_package, recording_dir, tmp_path):
    root, _ = recording_dir
    code, out, _ = run_cli("transcribe", "--model", robust_package, root / "a.flac", "--plot-attention", tmp_path / "att",
                           "--max-segment-s", "5", "--quiet")
    assert code == 0 and out.count("\t") == 1
    pngs = sorted((tmp_path / "att").glob("a.*.png"))
    assert len(pngs) >= 3 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


@pytest.mark.parametrize("args, message", [
    (["--skip-existing"], "--skip-existing needs --output-dir"),
    (["--max-segment-seconds", "0.5"], "max segment length"),
    (["--lm", "x"], "scorer 'lm' has params but no weight: give it one (--scorer lm=WEIGHT"),
])
def test_transcribe_bad_usage_exits_2(run_cli, robust_package, fixture_utterances, args, message):
    code, out, err = run_cli("transcribe", "--model", robust_package, fixture_utterances[0].audio, *args, "--quiet")
    assert code == 2 and out == "" and message in err


def test_transcribe_lm_at_weight_zero_is_off(run_cli, robust_package, fixture_utterances):
    audio = fixture_utterances[0].audio
    code, out, err = run_cli("transcribe", "--model", robust_package, audio, "--lm", "no/such/lm", "--scorer", "lm=0", "--quiet")
    assert code == 0, err
    assert out == run_cli("transcribe", "--model", robust_package, audio, "--quiet")[1]


def test_transcribe_refuses_two_inputs_for_one_output_file(run_cli, robust_package, recording_dir, tmp_path):
    root, _ = recording_dir
    shutil.copy(root / "a.flac", tmp_path / "a.wav")
    code, _, err = run_cli("transcribe", "--model", robust_package, root / "a.flac", tmp_path / "a.wav",
                           "--output-dir", tmp_path / "out", "--quiet")
    assert code == 2 and "would both write" in err


# -- reliability: bad input exits 2 with the culprit named; a killed run resumes losing nothing finished ----------
@pytest.fixture
def small_run(fixture_utterances, tmp_path, cmvn):
    """Train/valid manifests (4 and 2 utterances), CMVN, and a tiny config: 2 steps per epoch, a checkpoint per step."""
    config = yaml.safe_load(TINY_YAML.read_text())
    config["train"].update(epochs=3, max_batch_seconds=4.0, checkpoint_every_steps=1)
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    write_manifest(fixture_utterances[:4], tmp_path / "train.jsonl")
    write_manifest(fixture_utterances[6:], tmp_path / "valid.jsonl")
    cmvn.save(tmp_path / "cmvn.json")

    def args(exp_dir, **overrides):
        named = {"config": tmp_path / "exp.yaml", "train-manifest": tmp_path / "train.jsonl",
                 "valid-manifest": tmp_path / "valid.jsonl", "cmvn": tmp_path / "cmvn.json", "exp-dir": exp_dir}
        named.update({k.replace("_", "-"): v for k, v in overrides.items()})
        return ["train", *[str(x) for k, v in named.items() for x in (f"--{k}", v)], "--threads", "1", "--quiet"]

    return args


def _log_rows(exp, kind):
    path = exp / "train_log.jsonl"
    rows = []
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # the last line of a killed run may be cut short
            continue
    return [r for r in rows if r["kind"] == kind]


def test_kill_9_mid_training_then_resume_loses_only_the_step_in_flight(run_cli, small_run, tmp_path):
    """`asr-s2s train` is SIGKILLed once a step checkpoint exists; `--resume` then finishes the run. Lost: at most the
    steps since the last checkpoint (here 1). The resumed loss curve and model equal an uninterrupted run's."""
    import signal
    import time

    from safetensors.torch import load_file

    killed = tmp_path / "killed"
    exe = shutil.which("asr-s2s", path=str(Path(sys.executable).parent))
    proc = subprocess.Popen([exe, *small_run(killed)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while proc.poll() is None and time.monotonic() < deadline and not list((killed / "checkpoints").glob("step-*.pt")):
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    assert proc.wait(timeout=60) == -signal.SIGKILL, "the run must still have been going when killed"

    from asr_s2s.checkpoints import read_checkpoint

    done = max(int(read_checkpoint(p)["step"]) for p in (killed / "checkpoints").glob("*.pt"))
    logged = max([r["step"] for r in _log_rows(killed, "step")], default=0)
    assert done >= 1 and logged - done <= 1, f"lost {logged - done} steps, more than the checkpoint interval of 1"

    code, out, err = run_cli(*small_run(killed), "--resume")
    assert code == 0, err
    code, _, err = run_cli(*small_run(tmp_path / "uninterrupted"))
    assert code == 0, err
    resumed, reference = _log_rows(killed, "step"), _log_rows(tmp_path / "uninterrupted", "step")
    assert [r["step"] for r in resumed] == [r["step"] for r in reference] == list(range(1, 7))
    for got, want in zip(resumed, reference):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5) and got["lr"] == pytest.approx(want["lr"]), got["step"]
    assert [r["epoch"] for r in _log_rows(killed, "epoch")] == [1, 2, 3]
    got, want = load_file(killed / "model" / "model.safetensors"), load_file(tmp_path / "uninterrupted" / "model" / "model.safetensors")
    for name, value in want.items():
        np.testing.assert_allclose(got[name].numpy(), value.numpy(), atol=1e-5, rtol=1e-5, err_msg=name)


def test_train_resume_refuses_a_crafted_checkpoint(run_cli, small_run, tmp_path):
    from conftest import write_pickle_bomb

    marker = tmp_path / "marker"
    checkpoint = write_pickle_bomb(tmp_path / "exp" / "checkpoints" / "epoch-1.pt", marker)
    code, out, err = run_cli(*small_run(tmp_path / "exp"), "--resume")
    assert code == 2 and out == ""
    assert f"{checkpoint}: refused to load" in err and "GLOBAL exec" in err and "could run code" in err
    assert not marker.exists()


def test_train_without_resume_keeps_an_existing_run(run_cli, small_run, tmp_path):
    (tmp_path / "exp" / "checkpoints").mkdir(parents=True)
    CMVNStats.identity(2).save(tmp_path / "exp" / "checkpoints" / "step-5.pt")  # any file of that name
    code, _, err = run_cli(*small_run(tmp_path / "exp"))
    assert code == 2 and "already holds a training run" in err and "pass --resume" in err


@pytest.mark.parametrize(
    ("what", "fragments"),
    [
        ("missing-cmvn", ["no such CMVN file", "compute-cmvn"]),
        ("cmvn-not-json", ["cmvn.json: not a CMVN JSON file"]),
        ("plugin-typo", ["model.encoder: unknown encoder 'pblsmt'", "Did you mean 'pblstm'?"]),
        ("ctc-weight", ["model.ctc_weight must be in [0, 1], got 2.0"]),
        ("zero-interval", ["train.checkpoint_every_steps must be a positive integer, got 0"]),
        ("bad-interval-type", ["config.train.checkpoint_every_steps", "expected int"]),
    ],
)
def test_train_bad_input_exits_2_naming_it(run_cli, small_run, tmp_path, what, fragments):
    overrides = {}
    config = yaml.safe_load((tmp_path / "exp.yaml").read_text())
    if what == "missing-cmvn":
        overrides["cmvn"] = tmp_path / "nope.json"
    elif what == "cmvn-not-json":
        (tmp_path / "cmvn.json").write_text("mean: 0\n")
    elif what == "plugin-typo":
        config["model"]["encoder"]["name"] = "pblsmt"
    elif what == "ctc-weight":
        config["model"]["ctc_weight"] = 2.0
    elif what == "zero-interval":
        config["train"]["checkpoint_every_steps"] = 0
    else:
        config["train"]["checkpoint_every_steps"] = "often"
    (tmp_path / "exp.yaml").write_text(yaml.safe_dump(config))
    code, out, err = run_cli(*small_run(tmp_path / "exp", **overrides))
    assert code == 2 and out == "" and "Traceback" not in err
    for fragment in fragments:
        assert fragment in err


def test_train_with_an_unreadable_file_finishes_and_exits_1(run_cli, small_run, fixture_utterances, tmp_path):
    utts = [*fixture_utterances[:3], type(fixture_utterances[0])("lost", str(tmp_path / "lost.flac"), 1.5, "GONE")]
    write_manifest(utts, tmp_path / "train.jsonl")
    code, out, err = run_cli(*small_run(tmp_path / "exp", epochs=1))
    assert code == 1 and out.startswith("model package:") and (tmp_path / "exp" / "model" / "model.safetensors").is_file()
    assert "lost.flac" in err and "1 utterance load(s) failed during training" in err


def test_compute_cmvn_with_no_readable_file_exits_1(run_cli, tmp_path):
    write_manifest([type_utt("a", tmp_path / "a.wav"), type_utt("b", tmp_path / "b.wav")], tmp_path / "m.jsonl")
    (tmp_path / "b.wav").write_bytes(b"")
    code, out, err = run_cli("compute-cmvn", "--manifest", tmp_path / "m.jsonl", "--out", tmp_path / "c.json",
                             "--num-workers", "0", "--quiet")
    assert code == 1 and out == "" and "none of its 2 utterances could be read" in err and not (tmp_path / "c.json").exists()
    assert "a.wav: no such file" in err and "b.wav: file is empty" in err


def type_utt(utt_id, path):
    from asr_s2s.manifest import Utterance

    return Utterance(utt_id, str(path), 1.0, "X")


def test_an_unwritable_output_exits_2(run_cli, tmp_path):
    (tmp_path / "ro").mkdir()
    (tmp_path / "ro" / "m.jsonl").mkdir()  # a directory where the manifest file should go
    code, out, err = run_cli("prepare", "--data-dir", FIXTURE_DIR, "--out", tmp_path / "ro" / "m.jsonl", "--quiet")
    assert code == 2 and out == "" and "m.jsonl" in err and "Traceback" not in err
    assert sorted(p.name for p in (tmp_path / "ro").iterdir()) == ["m.jsonl"], "no temporary file left"


def test_tokens_writes_the_token_list_of_training_manifests(run_cli, tmp_path, fixture_utterances):
    import dataclasses as _dc

    from asr_s2s.manifest import write_manifest
    from asr_s2s.tokenizer import CharTokenizer

    manifest = tmp_path / "train.jsonl"
    write_manifest(fixture_utterances, manifest)
    code, out, _ = run_cli("tokens", "--manifest", manifest, "--out", tmp_path / "tokens.txt")
    assert code == 0 and f"{tmp_path / 'tokens.txt'}: 30 tokens from 8 utterances" in out and "never seen" in out
    assert CharTokenizer.load(tmp_path / "tokens.txt").tokens == CharTokenizer().tokens
    other = tmp_path / "other.jsonl"
    write_manifest([_dc.replace(fixture_utterances[0], text="ROOM 101")], other)
    code, out, err = run_cli("tokens", "--manifest", manifest, other, "--out", tmp_path / "more.txt")
    assert code == 0 and "become tokens too: '0' '1'" in err
    assert CharTokenizer.load(tmp_path / "more.txt").tokens == CharTokenizer().tokens + ["0", "1"]


# -- first-hour rough edges: each a message that names the fix ----------------------------------------------
@pytest.mark.parametrize("args, message", [
    (["--scorer-param", "ngram.pth=lm.arpa", "--scorer", "ngram=0.5"],
     "--scorer-param ngram.pth=lm.arpa: scorer 'ngram' has no param 'pth'. Did you mean 'path'?"),
    (["--scorer", "ngarm=0.5"], "--scorer ngarm=0.5: unknown scorer 'ngarm'. Did you mean 'ngram'?"),
    (["--device", "cuda:7"], "--device cuda:7: "),
    (["--device", "tpu"], "--device tpu: "),
])
def test_command_line_mistakes_are_reported_as_the_flag_typed(run_cli, robust_package, fixture_utterances, args, message):
    code, out, err = run_cli("transcribe", "--model", robust_package, fixture_utterances[0].audio, *args, "--quiet")
    assert code == 2 and out == "" and message in err
    assert "decode.scorers" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message of a machine without a GPU")
def test_device_cuda_without_a_gpu_says_so(run_cli, robust_package, fixture_utterances):
    code, _, err = run_cli("transcribe", "--model", robust_package, fixture_utterances[0].audio, "--device", "cuda")
    assert code == 2 and "no CUDA GPU is visible" in err and "--device cpu" in err


def test_an_output_dir_that_is_a_file(run_cli, robust_package, fixture_utterances, tmp_path):
    taken = tmp_path / "taken"
    taken.write_text("not a folder")
    for command in (["transcribe", fixture_utterances[0].audio], ["evaluate", "--data-dir", FIXTURE_DIR]):
        code, _, err = run_cli(*command, "--model", robust_package, "--output-dir", taken, "--quiet")
        assert code == 2 and f"--output-dir {taken}: that is an existing file, not a folder" in err


def test_a_scorer_of_a_disabled_plugin_says_it_was_disabled(run_cli, robust_package, fixture_utterances, monkeypatch):
    code, _, err = run_cli("transcribe", "--model", robust_package, fixture_utterances[0].audio,
                           "--disable-plugin", "hotwords", "--scorer", "hotwords=1", "--hotword", "CAT")
    assert code == 2 and "its plugin 'hotwords' is disabled by --disable-plugin hotwords" in err
    monkeypatch.setenv("ASR_S2S_DISABLE_PLUGINS", "ctc_prefix")
    code, _, err = run_cli("transcribe", "--model", robust_package, fixture_utterances[0].audio, "--scorer", "ctc=0.3")
    assert code == 2 and "Disabled plugins, which may provide it: 'ctc_prefix' (by ASR_S2S_DISABLE_PLUGINS=ctc_prefix)" in err


def test_global_flags_go_before_or_after_the_command(run_cli):
    for argv in (["-q", "plugins", "--json"], ["plugins", "-q", "--json"],
                 ["--disable-plugin", "ngram", "plugins", "--json", "--disable-plugin", "hotwords"]):
        code, out, _ = run_cli(*argv)
        assert code == 0
    names = {c["name"] for c in json.loads(out)}
    assert "ngram" not in names and "hotwords" not in names and "decoder" in names


def test_several_inputs_as_subtitles_on_stdout_are_refused(run_cli, robust_package, recording_dir):
    root, _ = recording_dir
    code, out, err = run_cli("transcribe", "--model", robust_package, root, "--format", "srt", "--quiet")
    assert code == 2 and out == "" and "give --output-dir DIR" in err


def _console_script() -> str:
    exe = shutil.which("asr-s2s", path=str(Path(sys.executable).parent))
    assert exe is not None
    return exe


def test_a_closed_stdout_stops_quietly(tmp_path):
    """`asr-s2s plugins --json | head -c 100`: no 'Broken pipe' error, the exit status of SIGPIPE."""
    proc = subprocess.run(f"'{_console_script()}' plugins --json | head -c 100 >/dev/null; echo ${{PIPESTATUS[0]}}",
                          shell=True, executable="/bin/bash", capture_output=True, text=True, timeout=120)
    assert "Broken pipe" not in proc.stderr and "Traceback" not in proc.stderr
    assert proc.stdout.strip() in ("0", "141")  # 0 when the whole listing fit the pipe before head closed it


def test_off_a_terminal_progress_is_whole_lines(robust_package, recording_dir):
    """stderr to a file: no carriage-return frames, and every log line starts on its own line."""
    root, _ = recording_dir
    proc = subprocess.run([_console_script(), "transcribe", "--model", str(robust_package), "--beam-size", "1",
                           str(root / "a.flac"), str(root / "missing.wav")],
                          capture_output=True, text=True, timeout=300, stdin=subprocess.DEVNULL)
    assert proc.returncode == 1
    assert "\r" not in proc.stderr
    lines = proc.stderr.splitlines()
    assert any(line.startswith("transcribing:") for line in lines)
    assert any(line.startswith("ERROR ") and "missing.wav" in line for line in lines)


def test_every_transcription_option_has_a_flag_of_its_name(run_cli, robust_package, fixture_utterances):
    """The CLI and the Python API share one vocabulary: option x_y is flag --x-y (the recorded options show it)."""

    from asr_s2s.transcriber import TranscribeOptions

    through_other_flags = {"scorers", "scorer_params", "lm", "hotwords", "attention"}  # --scorer, --hotword, ...
    parser_flags = set()
    for action in build_parser()._subparsers._group_actions[0].choices["transcribe"]._actions:  # noqa: SLF001
        parser_flags.update(action.option_strings)
    for name in TranscribeOptions.option_names():
        if name not in through_other_flags:
            assert "--" + name.replace("_", "-") in parser_flags, name
    code, out, err = run_cli(
        "transcribe", "--model", robust_package, fixture_utterances[0].audio, "--format", "json", "--quiet",
        "--beam-size", "3", "--end-margin", "inf", "--pre-beam-ratio", "2", "--min-pause-s", "0.4",
        "--max-segment-s", "12", "--no-word-timestamps", "--length-normalize", "--max-length-ratio", "0.9",
    )
    assert code == 0, err
    options = json.loads(out)["options"]
    assert options["end_margin"] is None and options["pre_beam_ratio"] == 2 and options["min_pause_s"] == 0.4
    assert options["max_segment_s"] == 12 and options["word_timestamps"] is False and options["length_normalize"]
    assert options["max_length_ratio"] == 0.9 and options["beam_size"] == 3
    assert json.loads(out)["segments"][0]["words"] == []
