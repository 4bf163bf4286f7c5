"""recipes/librispeech/run.sh end to end, with no network.

A local mirror on 127.0.0.1 serves train-clean-100 and dev-clean tarballs in
LibriSpeech's layout, built from the fixture corpus. The recipe runs all seven
stages with the tiny config; a partial download and a cut-short extraction left
by an earlier run must be resumed and redone. A second run skips every stage.
Data folders shared between experiments, and copies made elsewhere, are used in
place and never deleted; a stage whose inputs changed is redone or refused.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest
import yaml

from conftest import FIXTURE_DIR, REPO
from corpus_server import CorpusServer, librispeech_tarball, md5_hex

RECIPE = REPO / "recipes" / "librispeech"
SUBSETS = {"train-clean-100": ["1001", "1002"], "dev-clean": ["1003"]}  # subset -> fixture speakers in its tarball
MORE = {"train-clean-360": ["1003"]}  # served too, for a run that adds it to --subsets
COUNTS = {"train-clean-100": 6, "dev-clean": 2, "train-clean-360": 2}  # utterances in each subset's tarball
UNREACHABLE = "http://127.0.0.1:9"  # the discard port: nothing listens there


def _env() -> dict[str, str]:
    return {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")]),
            "OMP_NUM_THREADS": "1"}


def _recipe_command(tmp, data, exp, mirror: str, subsets, *extra: str) -> list[str]:
    return ["bash", str(RECIPE / "run.sh"), "--mirror", mirror, "--md5sums", str(tmp / "md5sums.txt"),
            "--utterance-counts", str(tmp / "counts.txt"), "--data-dir", str(data), "--subsets", " ".join(subsets),
            "--config", str(RECIPE / "conf" / "las_tiny.yaml"), "--lm-config", str(RECIPE / "conf" / "lm_tiny.yaml"),
            "--exp-dir", str(exp), "--nproc", "1", "--device", "cpu", "--avg", "2", "--nj", "0", *extra]


def _snapshot(folder) -> dict[str, tuple[int, int, int]]:
    """Every file under folder but the .complete markers: (inode, size, mtime_ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".complete"}


@pytest.fixture(scope="module")
def archives(tmp_path_factory):
    """The mirror's tarballs (name -> bytes), with md5sums.txt and counts.txt written in a temporary folder."""
    tmp = tmp_path_factory.mktemp("librispeech")
    files = {f"{s}.tar.gz": librispeech_tarball(s, speakers) for s, speakers in
             {**SUBSETS, **MORE}.items()}
    (tmp / "md5sums.txt").write_text("".join(f"{md5_hex(data)}  {name}\n" for name, data in files.items()))
    (tmp / "counts.txt").write_text("".join(f"{count}  {name}\n" for name, count in COUNTS.items()))
    return tmp, files


@pytest.fixture(scope="module")
def recipe(archives):
    tmp, files = archives
    data = tmp / "data"
    leftover = data / ".extract-LibriSpeech-dev-clean-0a1b2c3d" / "LibriSpeech" / "dev-clean" / "9999"
    leftover.mkdir(parents=True)  # an extraction cut short earlier
    (leftover / "junk.flac").write_bytes(b"junk")
    (data / "train-clean-100.tar.gz.part").write_bytes(files["train-clean-100.tar.gz"][:20_000])  # a broken download
    env = _env()
    with CorpusServer(files) as server:
        command = _recipe_command(tmp, data, tmp / "exp", server.url, SUBSETS)
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
        if name.removesuffix(".tar.gz") not in SUBSETS:
            continue
        assert md5_hex((tmp / "data" / name).read_bytes()) == md5
    assert not list((tmp / "data").glob("*.part"))


def test_prepare_extracts_cleanly_and_reads_audio_in_place(recipe, fixture_utterances):
    tmp, *_ = recipe
    corpus = tmp / "data" / "LibriSpeech"
    assert not (corpus / "dev-clean" / "9999").exists() and not list((tmp / "data").glob(".extract-*")), \
        "a cut-short extraction is cleared and redone from scratch"
    assert json.loads((corpus / "dev-clean" / ".complete").read_text())["utterances"] == 2
    dump = tmp / "exp" / "dump"
    for subset, count in COUNTS.items():
        if subset not in SUBSETS:
            continue
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


def _run(command, timeout=300):
    return subprocess.run(command, env=_env(), capture_output=True, text=True, timeout=timeout)


def _copy_by_hand(data, subset: str, speakers=None) -> None:
    """An extracted copy made elsewhere (rsync, another toolkit): no tarball, no marker."""
    for spk in FIXTURE_DIR.iterdir():
        if speakers is None or spk.name in speakers:
            shutil.copytree(spk, data / "LibriSpeech" / subset / spk.name)


def test_an_extracted_copy_without_tarballs_is_used_in_place_offline(archives, tmp_path):
    tmp, _ = archives
    data = tmp_path / "shared"
    for subset, speakers in SUBSETS.items():
        _copy_by_hand(data, subset, speakers)
    before = _snapshot(data / "LibriSpeech")
    done = _run(_recipe_command(tmp, data, tmp_path / "exp", UNREACHABLE, SUBSETS, "--stop-stage", "2"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "found " + str(data / "LibriSpeech" / "dev-clean") + "; skipped" in done.stderr, "no download tried"
    assert _snapshot(data / "LibriSpeech") == before, "no file of the copy was deleted, rewritten or added (but .complete)"
    assert not list(data.glob("*.tar.gz*")), "nothing downloaded"
    rows = [json.loads(line) for line in (tmp_path / "exp" / "dump" / "train.jsonl").read_text().splitlines()]
    assert len(rows) == 6 and all(r["audio"].startswith(str(data / "LibriSpeech" / "train-clean-100")) for r in rows)


def test_an_incomplete_copy_stops_stage_2_and_is_kept(archives, tmp_path):
    tmp, files = archives
    data = tmp_path / "shared"
    _copy_by_hand(data, "dev-clean", ["1003"])
    next((data / "LibriSpeech" / "dev-clean").rglob("*.flac")).unlink()  # an rsync cut short
    before = _snapshot(data / "LibriSpeech")
    with CorpusServer(files) as server:
        done = _run(_recipe_command(tmp, data, tmp_path / "exp", server.url, ["dev-clean"], "--stop-stage", "2"))
        assert server.requests == [], "a folder already there is never downloaded over"
    assert done.returncode == 1 and "an incomplete copy, not extracted by this recipe" in done.stderr
    assert _snapshot(data / "LibriSpeech") == before


def test_a_second_experiment_leaves_the_first_ones_audio_untouched(recipe, archives):
    tmp, files = archives
    corpus = tmp / "data" / "LibriSpeech"
    before = _snapshot(corpus)
    with CorpusServer(files) as server:
        done = _run(_recipe_command(tmp, tmp / "data", tmp / "exp2", server.url, SUBSETS, "--stop-stage", "3"))
        assert server.requests == []
    assert done.returncode == 0, done.stderr[-3000:]
    assert _snapshot(corpus) == before, "the first experiment's audio is neither deleted nor extracted again"
    assert (tmp / "exp2" / "dump" / "train.jsonl").read_text() == (tmp / "exp" / "dump" / "train.jsonl").read_text()


def test_keep_tarballs_false_frees_them_and_later_runs_need_no_mirror(archives, tmp_path):
    tmp, files = archives
    data = tmp_path / "data"
    with CorpusServer(files) as server:
        done = _run(_recipe_command(tmp, data, tmp_path / "exp", server.url, ["dev-clean"], "--stop-stage", "2",
                                    "--keep-tarballs", "false"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert not (data / "dev-clean.tar.gz").exists() and (data / "LibriSpeech" / "dev-clean" / ".complete").is_file()
    done = _run(_recipe_command(tmp, data, tmp_path / "exp2", UNREACHABLE, ["dev-clean"], "--stop-stage", "2"))
    assert done.returncode == 0, done.stderr[-3000:]


def test_changed_subsets_redo_the_features_or_refuse_once_training_started(recipe, archives):
    tmp, files = archives
    more = [*SUBSETS, *MORE]
    cmvn = (tmp / "exp" / "dump" / "cmvn.json").read_text()
    with CorpusServer(files) as server:
        done = _run(_recipe_command(tmp, tmp / "data", tmp / "exp", server.url, more, "--stop-stage", "4"))
    assert done.returncode == 2, done.stderr[-3000:]
    assert "stage 3 (global CMVN and the token list of the training set)" in done.stderr
    assert "built from other inputs" in done.stderr and "train-clean-100 train-clean-360" in done.stderr
    assert (tmp / "exp" / "dump" / "cmvn.json").read_text() == cmvn, "the trained model's CMVN is kept"
    # an experiment that has not trained yet redoes its features from the new subsets
    fresh = _recipe_command(tmp, tmp / "data", tmp / "exp3", UNREACHABLE, SUBSETS, "--stop-stage", "3")
    assert _run(fresh).returncode == 0
    frames = json.loads((tmp / "exp3" / "dump" / "cmvn.json").read_text())["frames"]
    done = _run(_recipe_command(tmp, tmp / "data", tmp / "exp3", UNREACHABLE, more, "--stop-stage", "3"))
    assert done.returncode == 0, done.stderr[-3000:]
    assert "== stage 3: global CMVN and the token list of the training set (its inputs changed" in done.stderr
    assert json.loads((tmp / "exp3" / "dump" / "cmvn.json").read_text())["frames"] > frames
    assert len((tmp / "exp3" / "dump" / "train.jsonl").read_text().splitlines()) == 6 + 2


@pytest.mark.parametrize(("extra", "message"), [
    (["--nnodes", "2", "--node-rank", "0", "--stage", "4", "--stop-stage", "4"], "needs --rdzv-endpoint"),
    (["--nnodes", "2", "--rdzv-endpoint", "h:1", "--stage", "4", "--stop-stage", "4"], "needs --node-rank"),
    (["--nnodes", "2", "--node-rank", "2", "--rdzv-endpoint", "h:1", "--stage", "4", "--stop-stage", "4"],
     "--node-rank must be 0 to 1"),
    (["--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "h:1"], "run stages 1-3, 5 and 7 once, on one node"),
    (["--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "h:1", "--stage", "4", "--stop-stage", "6"],
     "'--stage 4 --stop-stage 4' (training) or '--stage 6 --stop-stage 6'"),
    (["--keep-tarballs", "maybe"], "--keep-tarballs takes true or false"),
    (["--nnodes", "2", "--node-rank", "0", "--rdzv-endpoint", "host", "--stage", "6", "--stop-stage", "6"],
     "--rdzv-endpoint takes HOST:PORT"),
])
def test_multi_node_and_option_checks(tmp_path, extra, message):
    done = _run(["bash", str(RECIPE / "run.sh"), "--exp-dir", str(tmp_path / "exp"), *extra])
    assert done.returncode == 2 and message in done.stderr, done.stderr


def _free_ports(count: int) -> int:
    """A port P on 127.0.0.1 such that P .. P+count-1 are all free now."""
    import socket

    for _ in range(100):
        with socket.socket() as probe:
            probe.bind(("127.0.0.1", 0))
            first = probe.getsockname()[1]
        try:
            for port in range(first, first + count):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", port))
            return first
        except OSError:
            continue
    raise RuntimeError(f"no {count} consecutive free ports on 127.0.0.1")


def test_decoding_spans_two_nodes_and_node_0_writes_the_same_results(recipe, archives):
    """Two 'nodes' on this machine (two run.sh under a static rendezvous on 127.0.0.1, gloo, one process each)."""
    tmp, _ = archives
    single = json.loads((tmp / "exp" / "decode_dev-clean_beam.json").read_text())
    port = _free_ports(2)  # stage 6 runs torchrun twice here (beam, beam + LM), meeting at PORT and PORT+1
    nodes = [subprocess.Popen(_recipe_command(tmp, tmp / "data", tmp / "exp", UNREACHABLE, SUBSETS, "--stage", "6",
                                              "--stop-stage", "6", "--nnodes", "2", "--node-rank", str(rank),
                                              "--rdzv-endpoint", f"127.0.0.1:{port}"),
                              env=_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                              start_new_session=True)
             for rank in (0, 1)]
    try:
        outputs = [node.communicate(timeout=300)[0] for node in nodes]
    except subprocess.TimeoutExpired:
        for node in nodes:  # never leave a node waiting on its rendezvous behind a failed test
            if node.poll() is None:
                os.killpg(node.pid, signal.SIGKILL)  # run.sh, its torchrun and its workers
        pytest.fail("the two nodes did not finish in 300 s; their output:\n"
                    + "\n".join(f"-- node {rank}:\n{node.communicate()[0]}" for rank, node in enumerate(nodes)))
    assert [node.returncode for node in nodes] == [0, 0], outputs
    assert json.loads((tmp / "exp" / "decode_dev-clean_beam.json").read_text()) == single
    assert (tmp / "exp" / ".decode_dev-clean.done").is_file()
