"""recipes/librispeech/run.sh end to end, with no network.

A local mirror on 127.0.0.1 serves train-clean-100 and dev-clean tarballs in
LibriSpeech's layout, built from the fixture corpus. The recipe runs all seven
stages with the tiny config; a partial download and a cut-short extraction left
by an earlier run must be resumed and redone. A second run skips every stage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import yaml

from conftest import REPO
from corpus_server import CorpusServer, librispeech_tarball, md5_hex

RECIPE = REPO / "recipes" / "librispeech"
SUBSETS = {"train-clean-100": None, "dev-clean": ["1003"]}  # subset -> fixture speakers in its tarball


@pytest.fixture(scope="module")
def recipe(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("librispeech")
    files = {f"{s}.tar.gz": librispeech_tarball(s, speakers) for s, speakers in SUBSETS.items()}
    (tmp / "md5sums.txt").write_text("".join(f"{md5_hex(data)}  {name}\n" for name, data in files.items()))
    data = tmp / "data"
    (data / "LibriSpeech" / "dev-clean" / "9999").mkdir(parents=True)  # an extraction cut short earlier
    (data / "LibriSpeech" / "dev-clean" / "9999" / "junk.flac").write_bytes(b"junk")
    (data / "train-clean-100.tar.gz.part").write_bytes(files["train-clean-100.tar.gz"][:20_000])  # a broken download
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
           "OMP_NUM_THREADS": "1"}
    with CorpusServer(files) as server:
        command = ["bash", str(RECIPE / "run.sh"), "--mirror", server.url, "--md5sums", str(tmp / "md5sums.txt"),
                   "--data-dir", str(data), "--subsets", " ".join(SUBSETS), "--config", str(RECIPE / "conf" / "las_tiny.yaml"),
                   "--lm-config", str(RECIPE / "conf" / "lm_tiny.yaml"), "--exp-dir", str(tmp / "exp"), "--nproc", "1",
                   "--device", "cpu", "--avg", "2", "--nj", "0"]
        first = subprocess.run(command, env=env, capture_output=True, text=True, timeout=900)
        assert first.returncode == 0, first.stdout[-4000:] + first.stderr[-6000:]
        first_requests = list(server.requests)
        results = (tmp / "exp" / "RESULTS.md").read_text()
        second = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
        second_requests = server.requests[len(first_requests):]
    return tmp, first, second, first_requests, second_requests, results


def test_download_resumes_the_partial_tarball_and_verifies_both(recipe):
    tmp, _, _, requests, _, _ = recipe
    assert sorted(requests) == [("dev-clean.tar.gz", None), ("train-clean-100.tar.gz", "bytes=20000-")]
    sums = dict(line.split()[::-1] for line in (tmp / "md5sums.txt").read_text().splitlines())
    for name, md5 in sums.items():
        assert md5_hex((tmp / "data" / name).read_bytes()) == md5
    assert not list((tmp / "data").glob("*.part"))


def test_prepare_extracts_cleanly_and_reads_audio_in_place(recipe, fixture_utterances):
    tmp, *_ = recipe
    corpus = tmp / "data" / "LibriSpeech"
    assert not (corpus / "dev-clean" / "9999").exists(), "a cut-short extraction is redone from scratch"
    dump = tmp / "exp" / "dump"
    for subset, count in (("train-clean-100", 8), ("dev-clean", 2)):
        rows = [json.loads(line) for line in (dump / f"{subset}.jsonl").read_text().splitlines()]
        assert len(rows) == count
        assert all(row["audio"].startswith(str(corpus / subset) + os.sep) for row in rows), "audio is read in place"
    assert (dump / "train.jsonl").read_text() == (dump / "train-clean-100.jsonl").read_text()
    assert (dump / "dev.jsonl").read_text() == (dump / "dev-clean.jsonl").read_text()
    assert not list((tmp / "exp").rglob("*.flac")), "no audio copied into the experiment"


def test_features_training_averaging_and_lm(recipe):
    tmp, first, *_ = recipe
    exp = tmp / "exp"
    assert json.loads((exp / "dump" / "cmvn.json").read_text())["frames"] > 0
    assert (exp / "dump" / "tokens.txt").read_text().splitlines()[:3] == ["<blank>", "<sos/eos>", "<space>"]
    assert sorted(p.name for p in (exp / "checkpoints").glob("epoch-*.pt")) == ["epoch-1.pt", "epoch-2.pt"]
    assert json.loads((exp / "model_avg" / "average.json").read_text()) == {"epochs": [1, 2], "best_by": "valid_loss", "avg": 2}
    assert (exp / "lm_train" / "lm" / "model.safetensors").is_file()
    # the train section (augmentation included) is not in the model package; the checkpoints hold it
    from asr_s2s.checkpoints import read_checkpoint

    saved = read_checkpoint(exp / "checkpoints" / "epoch-2.pt", mmap=True)["train_config"]
    assert [entry["name"] for entry in saved["augment"]][:1] == ["speed"]
    assert "augment" not in yaml.safe_load((exp / "model" / "config.yaml").read_text())["model"]
    log_rows = [json.loads(line) for line in (exp / "train_log.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log_rows if r["kind"] == "epoch"] == [1, 2]


def test_decode_and_results_in_espnet_style(recipe):
    tmp, first, _, _, _, results = recipe
    exp = tmp / "exp"
    for tag in ("beam", "beam_lm"):
        scored = json.loads((exp / f"decode_dev-clean_{tag}.json").read_text())
        assert scored["utterances"] == 2 and scored["set"] == "dev-clean"
        assert (exp / f"decode_dev-clean_{tag}" / "hyp.trn").is_file()
    assert results.startswith("# RESULTS\n## Environments\n")
    for needle in ("### WER", "### CER", "|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|", "|decode_dev-clean_beam (beam 2, decoder 1.0, ctc 0.3)|2|",
                   "|decode_dev-clean_beam_lm (beam 2, decoder 1.0, ctc 0.3, lm 0.3)|2|", "--mirror http://127.0.0.1:",
                   "average of epoch(s) 1, 2, best by valid_loss", "```yaml\n# A tiny LAS", "pytorch version"):
        assert needle in results, needle
    wer = json.loads((exp / "decode_dev-clean_beam.json").read_text())
    row = next(line for line in results.splitlines() if line.startswith("|decode_dev-clean_beam ("))
    assert row.split("|")[8] == f"{wer['wer']:.1f}", "Err is the WER"
    assert "== stage 7" in first.stderr


def test_a_second_run_skips_every_finished_stage(recipe):
    tmp, _, second, _, second_requests, results = recipe
    assert second.returncode == 0, second.stderr[-3000:]
    assert second_requests == [], "nothing is downloaded again"
    skipped = [line for line in second.stderr.splitlines() if line.startswith("== stage")]
    assert skipped and all(line.endswith("(done, skipped)") for line in skipped), skipped
    assert {line.split(":")[0] for line in skipped} == {f"== stage {n}" for n in range(1, 8)}
    assert (tmp / "exp" / "RESULTS.md").read_text() == results


def test_help_and_bad_options():
    done = subprocess.run(["bash", str(RECIPE / "run.sh"), "--help"], capture_output=True, text=True)
    assert done.returncode == 0 and "--mirror URL" in done.stdout and "7. score" in done.stdout
    done = subprocess.run(["bash", str(RECIPE / "run.sh"), "--frobnicate"], capture_output=True, text=True)
    assert done.returncode == 2 and "unknown option --frobnicate" in done.stderr
