"""Scale-out with torch.distributed: a real 2-process ``torchrun`` on the CPU (gloo).

``asr-s2s train`` runs under torchrun exactly as the LibriSpeech recipe runs it. A
small wrapper records which utterances each rank trains on. The test proves that
the ranks' batches are disjoint and cover each epoch, that rank 0 alone writes, and
that 2 processes end with the same weights as 1 process with the same global batch
(1 process, ``accum_grad: 2``). ``asr-s2s evaluate`` under torchrun merges the
ranks' shares into the same results as one process; ``asr-s2s transcribe`` under
torchrun transcribes each input once, on one rank, and writes what one process writes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from asr_s2s import distributed
from asr_s2s.manifest import write_manifest
from asr_s2s.experiment import LOG_FILE
from asr_s2s.trainer import Trainer
from conftest import TINY_YAML

WORKER = textwrap.dedent(
    """
    import dataclasses, json, os, sys
    import torch
    from asr_s2s import trainer
    from asr_s2s.cli import main

    rank = os.environ.get("RANK", "0")
    nan_at = os.environ.get("NAN_AT")  # "RANK:EPOCH:BATCH": that rank's batch gets a NaN loss
    stop_at = os.environ.get("STOP_AT_STEP")  # every rank stops (as if killed) after that step's checkpoint
    seen, trainers = [], []
    forward, fit, checkpoint_step = trainer.Trainer._forward, trainer.Trainer.fit, trainer.Trainer._maybe_checkpoint_step

    def traced(self, batch):
        seen.append({"epoch": self.epoch, "ids": list(batch.ids)})
        result = forward(self, batch)
        if nan_at == f"{rank}:{self.epoch}:{len(seen) - 1}":
            result = dataclasses.replace(result, loss=result.loss * float("nan"))
        return result

    def keep(self, *args, **kwargs):
        trainers.append(self)
        return fit(self, *args, **kwargs)

    def stop_after(self, *args):
        checkpoint_step(self, *args)
        if stop_at and self.step == int(stop_at):
            raise KeyboardInterrupt

    def full_disk(state, path):
        raise trainer.CheckpointError(f"{path}: could not write checkpoint ([Errno 28] No space left on device)")

    trainer.Trainer._forward, trainer.Trainer.fit, trainer.Trainer._maybe_checkpoint_step = traced, keep, stop_after
    if os.environ.get("FULL_DISK") and rank == "0":
        trainer.write_checkpoint = full_disk
    code = main(sys.argv[2:])
    with open(os.path.join(sys.argv[1], f"batches-rank{rank}.json"), "w") as out:
        json.dump({"world": int(os.environ.get("WORLD_SIZE", "1")), "batches": seen}, out)
    if trainers:
        torch.save(trainers[0].model.state_dict(), os.path.join(sys.argv[1], f"weights-rank{rank}.pt"))
    sys.exit(code)
    """
)


def _config(tmp_path, name: str, **train) -> str:
    raw = yaml.safe_load(TINY_YAML.read_text())
    raw["train"].update({"epochs": 2, "max_batch_seconds": 4.0, "num_workers": 0, "warmup_steps": 2, **train})
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw))
    return str(path)


def _torchrun(tmp_path, *args, timeout=240, **extra_env):
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    path = os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])  # asr-s2s of this venv
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PATH": path, **extra_env}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", *args]
    return subprocess.run(cmd, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def data(fixture_utterances, cmvn, tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp-data")
    write_manifest(fixture_utterances, root / "train.jsonl")
    write_manifest(fixture_utterances[5:], root / "valid.jsonl")
    cmvn.save(root / "cmvn.json")
    return root


@pytest.fixture(scope="module")
def two_process_run(data, tmp_path_factory):
    """``torchrun --nproc_per_node 2``: asr-s2s train, then asr-s2s evaluate of the trained package."""
    tmp = tmp_path_factory.mktemp("ddp")
    exp = tmp / "exp"
    train = ["train", "--config", _config(tmp, "ddp"), "--train-manifest", data / "train.jsonl",
             "--valid-manifest", data / "valid.jsonl", "--cmvn", data / "cmvn.json", "--exp-dir", exp, "-q"]
    done = _torchrun(tmp, tmp / "worker.py", tmp, *map(str, train))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    evaluate = ["--no-python", "asr-s2s", "evaluate", "--model", exp / "model", "--manifest", data / "train.jsonl",
                "--beam-size", "2", "--output-dir", tmp / "decode", "--json", "-q"]
    decoded = _torchrun(tmp, *map(str, evaluate))
    assert decoded.returncode == 0, decoded.stdout[-3000:] + decoded.stderr[-3000:]
    ranks = [json.loads((tmp / f"batches-rank{r}.json").read_text()) for r in range(2)]
    return exp, ranks, done, decoded, tmp


def test_each_rank_sees_disjoint_batches_covering_every_epoch(two_process_run, fixture_utterances):
    _, ranks, _, _, _ = two_process_run
    assert [r["world"] for r in ranks] == [2, 2]
    everything = sorted(u.id for u in fixture_utterances)
    per_epoch = []
    for epoch in (0, 1):
        shares = [[b["ids"] for b in r["batches"] if b["epoch"] == epoch] for r in ranks]
        assert len(shares[0]) == len(shares[1]) > 0, "every rank takes the same number of steps"
        ids = [set(i for batch in share for i in batch) for share in shares]
        assert not ids[0] & ids[1], "no utterance on both ranks"
        assert sorted(ids[0] | ids[1]) == everything, "together the ranks cover the epoch"
        assert sum(len(batch) for share in shares for batch in share) == len(everything), "and see each once"
        per_epoch.append(shares)
    assert per_epoch[0] != per_epoch[1], "the shares are reshuffled every epoch"


def test_rank_0_alone_writes(two_process_run):
    exp, _, done, _, _ = two_process_run
    assert sorted(p.name for p in (exp / "checkpoints").iterdir()) == ["epoch-1.pt", "epoch-2.pt"]
    rows = [json.loads(line) for line in (exp / LOG_FILE).read_text().splitlines()]
    epochs = [r for r in rows if r["kind"] == "epoch"]
    assert [r["epoch"] for r in epochs] == [1, 2], "one log line per epoch, not one per rank"
    assert epochs[-1]["audio_seconds"] > 0
    assert done.stdout.count("model package:") == 1


def test_two_processes_match_one_process_with_the_same_global_batch(two_process_run, data, run_cli, tmp_path, monkeypatch):
    """1 process with accum_grad 2 steps on the same two batches per step as 2 processes with 1 each."""
    exp, ranks, _, _, _ = two_process_run
    seen = []
    forward = Trainer._forward
    monkeypatch.setattr(Trainer, "_forward", lambda self, batch: seen.append((self.epoch, batch.ids)) or forward(self, batch))
    code, _, err = run_cli("train", "--config", _config(tmp_path, "one", accum_grad=2), "--train-manifest", data / "train.jsonl",
                           "--valid-manifest", data / "valid.jsonl", "--cmvn", data / "cmvn.json",
                           "--exp-dir", tmp_path / "exp", "-q")
    assert code == 0, err
    # the single process visits the global batches in the order the two ranks' steps took them
    interleaved = [(b["epoch"], b["ids"]) for step in zip(*(r["batches"] for r in ranks)) for b in step]
    assert [(e, list(ids)) for e, ids in seen] == interleaved
    one = load_file(str(tmp_path / "exp" / "model" / "model.safetensors"))
    two = load_file(str(exp / "model" / "model.safetensors"))
    assert one.keys() == two.keys()
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=2e-5, rtol=1e-4, msg=key)
    rows = lambda path: [json.loads(line) for line in path.read_text().splitlines() if '"kind": "epoch"' in line]
    for a, b in zip(rows(tmp_path / "exp" / LOG_FILE), rows(exp / LOG_FILE)):
        # validation is sharded too; its loss is a mean over batches, which the two runs cut differently
        assert a["step"] == b["step"] and a["valid_loss"] == pytest.approx(b["valid_loss"], rel=0.02)
        assert a["valid_cer"] == pytest.approx(b["valid_cer"], abs=1e-6)


def test_decoding_split_across_ranks_equals_one_process(two_process_run, data, run_cli, tmp_path):
    exp, _, _, decoded, tmp = two_process_run
    code, out, _ = run_cli("evaluate", "--model", exp / "model", "--manifest", data / "train.jsonl", "--beam-size", "2",
                           "--output-dir", tmp_path / "decode", "--json", "-q")
    assert code == 0
    assert json.loads(decoded.stdout.strip().splitlines()[-1]) == json.loads(out)
    assert decoded.stdout.count('"wer"') == 1, "rank 0 alone prints"
    assert (tmp / "decode" / "hyp.trn").read_text() == (tmp_path / "decode" / "hyp.trn").read_text()


def test_a_bad_batch_on_one_rank_keeps_the_ranks_in_step(data, tmp_path):
    """Rank 1's last batch of a step has a NaN loss: every rank drops its last batch, the step's first
    batches (which DDP did not reduce, under no_sync) are all-reduced by hand, and the ranks stay equal."""
    train = ["train", "--config", _config(tmp_path, "nan", epochs=1, accum_grad=2), "--train-manifest", data / "train.jsonl",
             "--valid-manifest", data / "valid.jsonl", "--cmvn", data / "cmvn.json", "--exp-dir", tmp_path / "exp", "-q"]
    done = _torchrun(tmp_path, tmp_path / "worker.py", tmp_path, *map(str, train), NAN_AT="1:0:1")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    (epoch,) = [json.loads(line) for line in (tmp_path / "exp" / LOG_FILE).read_text().splitlines() if '"kind": "epoch"' in line]
    assert epoch["step"] == 1 and epoch["skipped_batches"] == 2, "rank 1's NaN batch and rank 0's dropped partner"
    weights = [torch.load(tmp_path / f"weights-rank{r}.pt", weights_only=True) for r in range(2)]
    saved = torch.load(tmp_path / "exp" / "checkpoints" / "epoch-1.pt", weights_only=True)["model"]  # by rank 0
    for key, value in weights[0].items():
        assert torch.isfinite(value).all(), key
        torch.testing.assert_close(weights[1][key], value, atol=0, rtol=0, msg=key)
        torch.testing.assert_close(saved[key], value, atol=0, rtol=0, msg=key)


def test_one_process_is_not_distributed():
    assert not distributed.is_distributed()
    assert distributed.get_rank() == 0 and distributed.get_world_size() == 1 and distributed.is_main()
    assert distributed.all_gather_objects({"a": 1}) == [{"a": 1}]
    assert distributed.any_rank(True) and not distributed.any_rank(False) and distributed.all_true(True)
    assert distributed.init_from_env("cpu") == distributed.DistInfo(device="cpu")


# -- a global batch (train.global_batch_seconds), resumed totals, a failed checkpoint ---------------
@pytest.fixture(scope="module")
def global_run(data, tmp_path_factory):
    """2 processes with ``global_batch_seconds: 8`` and a 4 s cap per rank: 1 batch of 4 s per rank and step."""
    tmp = tmp_path_factory.mktemp("ddp-global")
    config = _config(tmp, "global", global_batch_seconds=8.0, checkpoint_every_steps=1)
    train = ["train", "--config", config, "--train-manifest", data / "train.jsonl", "--valid-manifest",
             data / "valid.jsonl", "--cmvn", data / "cmvn.json", "--exp-dir", tmp / "exp"]
    done = _torchrun(tmp, tmp / "worker.py", tmp, *map(str, train), "-q")
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return tmp, config, train, done


def _epoch_rows(exp):
    return [json.loads(line) for line in (exp / LOG_FILE).read_text().splitlines() if '"kind": "epoch"' in line]


def test_a_global_batch_trains_alike_on_one_process_and_two(global_run, data, run_cli, tmp_path, caplog):
    """The same config on 1 process (accum_grad 2 derived) and on 2 (accum_grad 1): the same step batches,
    steps and schedule, and the same weights; each run logs its plan once."""
    tmp, config, train, _ = global_run
    with caplog.at_level(logging.INFO, logger="asr_s2s.trainer"):
        code, _, err = run_cli(*[str(a) for a in train[:-1]], str(tmp_path / "exp"), "-v")
    assert code == 0, err
    (plan,) = [r.getMessage() for r in caplog.records if r.getMessage().startswith("step plan:")]
    assert "world size             1" in plan and "accum_grad             2" in plan and "global batch           8" in plan
    one = load_file(str(tmp_path / "exp" / "model" / "model.safetensors"))
    two = load_file(str(tmp / "exp" / "model" / "model.safetensors"))
    for key in one:
        torch.testing.assert_close(two[key], one[key], atol=2e-5, rtol=1e-4, msg=key)
    rows_one, rows_two = _epoch_rows(tmp_path / "exp"), _epoch_rows(tmp / "exp")
    assert [r["step"] for r in rows_one] == [r["step"] for r in rows_two] and rows_two[-1]["step"] >= 4
    for a, b in zip(rows_one, rows_two):
        assert a["audio_seconds"] == pytest.approx(b["audio_seconds"]) and a["train_loss"] == pytest.approx(b["train_loss"])


def test_a_mid_epoch_resume_under_ddp_counts_every_rank_s_totals_once(global_run, tmp_path):
    """Both ranks stop after step 1's checkpoint and resume: the epoch's audio seconds and loss equal the
    uninterrupted run's (rank 0's running totals were carried on by every rank, so counted twice, before)."""
    tmp, config, train, _ = global_run
    train = [*train[:-1], tmp_path / "exp"]
    stopped = _torchrun(tmp_path, tmp_path / "worker.py", tmp_path, *map(str, train), "-q", STOP_AT_STEP="1")
    assert stopped.returncode != 0 and (tmp_path / "exp" / "checkpoints" / "step-1.pt").is_file()
    resumed = _torchrun(tmp_path, tmp_path / "worker.py", tmp_path, *map(str, train), "--resume")
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "step-1.pt (epoch 0, step 1, 1 batches into epoch 1)" in resumed.stderr
    for a, b in zip(_epoch_rows(tmp_path / "exp"), _epoch_rows(tmp / "exp"), strict=True):
        assert a["step"] == b["step"] and a["audio_seconds"] == pytest.approx(b["audio_seconds"])
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-4)


def test_a_failed_checkpoint_write_on_rank_0_stops_every_rank_at_once(data, tmp_path):
    """Rank 0 cannot write the first checkpoint (a full disk): both ranks exit at once with its error, instead
    of rank 1 waiting in its next collective until the timeout. The two processes are started without
    torchrun, whose agent would end the survivor itself (as nothing does across nodes)."""
    worker = tmp_path / "worker.py"
    worker.write_text(WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    train = ["train", "--config", _config(tmp_path, "full", epochs=2), "--train-manifest", data / "train.jsonl",
             "--valid-manifest", data / "valid.jsonl", "--cmvn", data / "cmvn.json", "--exp-dir", tmp_path / "exp", "-q"]
    procs = []
    for rank in range(2):
        env = {**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank), "WORLD_SIZE": "2",
               "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "FULL_DISK": "1"}
        procs.append(subprocess.Popen([sys.executable, str(worker), str(tmp_path), *map(str, train)], env=env, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    ended = [None, None]
    deadline = time.monotonic() + 240
    while None in ended and time.monotonic() < deadline:
        for rank, proc in enumerate(procs):
            if ended[rank] is None and proc.poll() is not None:
                ended[rank] = time.monotonic()
        time.sleep(0.1)
    errors = [proc.communicate(timeout=5)[1] if ended[rank] else proc.kill() for rank, proc in enumerate(procs)]
    assert None not in ended, "a rank was still running 240 s later"
    assert abs(ended[0] - ended[1]) < 15, "the ranks stopped together"
    assert [p.returncode for p in procs] == [2, 2]
    assert "epoch-1.pt: could not write checkpoint ([Errno 28] No space left on device)" in errors[0]
    assert "epoch-1.pt: rank 0 could not save this checkpoint, so every rank stops (CheckpointError: " in errors[1]
    assert not (tmp_path / "exp" / "checkpoints" / "epoch-1.pt").exists()


# -- transcribe under torchrun: each rank a share of the inputs ---------------------------------------------
TRANSCRIBE_WORKER = textwrap.dedent(
    """
    import json, os, sys
    from asr_s2s import transcriber
    from asr_s2s.cli import main

    rank, many = os.environ.get("RANK", "0"), transcriber.Transcriber.transcribe_many

    def traced(self, inputs, *args, **kwargs):
        inputs = list(inputs)
        with open(os.path.join(sys.argv[1], f"seen-rank{rank}.json"), "w") as out:  # before rank 0 may exit
            json.dump([item.name for item in inputs], out)
        return many(self, inputs, *args, **kwargs)

    transcriber.Transcriber.transcribe_many = traced
    code = main(sys.argv[2:])
    with open(os.path.join(sys.argv[1], f"code-rank{rank}"), "w") as out:
        out.write(str(code))
    sys.exit(code)
    """
)


def _transcribe_2(tmp_path, *args):
    """``torchrun --nproc_per_node 2`` of asr-s2s transcribe: the run, the inputs each rank transcribed, and
    rank 0's exit status."""
    worker = tmp_path / "transcribe_worker.py"
    worker.write_text(TRANSCRIBE_WORKER)
    for old in [*tmp_path.glob("seen-rank*.json"), *tmp_path.glob("code-rank*")]:
        old.unlink()
    done = _torchrun(tmp_path, worker, tmp_path, "transcribe", *map(str, args), timeout=120)
    assert (tmp_path / "code-rank0").is_file(), done.stdout[-3000:] + done.stderr[-3000:]
    seen = [json.loads((tmp_path / f"seen-rank{r}.json").read_text()) for r in range(2)]
    return done, seen, int((tmp_path / "code-rank0").read_text())


def _outputs(folder):
    return {p.name: p.read_text() for p in sorted(folder.glob("*.txt"))}


def test_transcribe_splits_the_inputs_across_ranks(robust_package, fixture_utterances, run_cli, tmp_path):
    """6 good files and a corrupt one on 2 processes. With --output-dir and --skip-existing after an
    interrupted run: the finished inputs are skipped before the split, the rest are shared out evenly and each
    transcribed once, untouched outputs keep their mtimes, the new ones are those of one process, and the
    corrupt file gives exit 1. Without --output-dir: rank 0 prints every rank's lines in input order."""
    inputs = tmp_path / "in"
    inputs.mkdir()
    for u in fixture_utterances[:6]:
        shutil.copy(u.audio, inputs / Path(u.audio).name)
    flac = Path(fixture_utterances[0].audio).read_bytes()
    (inputs / "1001-10-0000x.flac").write_bytes(flac[: len(flac) // 2])  # corrupt, sorted second
    names = sorted(str(p) for p in inputs.iterdir())
    options = ["--model", robust_package, "--beam-size", "1", inputs]
    code, out, err = run_cli("transcribe", *options, "--output-dir", tmp_path / "one", "-q")
    assert code == 1 and out == "" and "1 of 7 input(s) failed" in err
    one = _outputs(tmp_path / "one")
    assert len(one) == 6

    # as if an interrupted run had written 2 of the 6 outputs: the rest and the corrupt file are done
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    kept = sorted(one)[1::3]
    for name in set(one) - set(kept):
        (tmp_path / "two" / name).unlink()
    mtimes = {name: (tmp_path / "two" / name).stat().st_mtime_ns for name in kept}
    done, seen, code = _transcribe_2(tmp_path, *options, "--output-dir", tmp_path / "two", "--skip-existing")
    todo = [n for n in names if Path(n).stem + ".txt" not in kept]
    assert done.returncode == 1 and code == 1, done.stderr[-3000:]
    assert seen == [todo[0::2], todo[1::2]] and len(todo) == 5, "the remaining inputs, shared out, each once"
    assert done.stderr.count("skipping 2 input(s) whose output exists") == 1
    assert done.stderr.count("1 of 5 input(s) failed") == 1 and "1001-10-0000x.flac: corrupt" in done.stderr
    assert {name: (tmp_path / "two" / name).stat().st_mtime_ns for name in kept} == mtimes
    assert _outputs(tmp_path / "two") == one

    # no --output-dir: rank 0 prints the lines of both ranks, as one process would
    done, seen, code = _transcribe_2(tmp_path, *options, "-q")
    assert done.returncode == 1 and code == 1 and seen == [names[0::2], names[1::2]]
    code, out, _ = run_cli("transcribe", *options, "-q")
    assert done.stdout == out and len(out.splitlines()) == 6 and done.stderr.count("1 of 7 input(s) failed") == 1


GATHER_WORKER = textwrap.dedent(
    """
    import os, sys
    from asr_s2s import distributed
    from asr_s2s.errors import AsrS2SError

    distributed.init_from_env("cpu")
    rank = distributed.get_rank()

    def work():
        if rank == int(sys.argv[1]):
            raise OSError(28, "No space left on device")
        return rank * 10

    try:
        print(distributed.gather_or_fail(work, lambda r, e: AsrS2SError(f"rank {r} stopped ({e})"), catch=(OSError,)))
    except (OSError, AsrS2SError) as exc:
        print(type(exc).__name__, exc)
    distributed.cleanup()
    """
)


@pytest.mark.parametrize("failing", [-1, 1])
def test_gather_or_fail_stops_every_rank_with_the_failure(tmp_path, failing):
    """Every rank's result, in rank order; or, if one rank fails, its own error there and the same message on
    every other rank (which would otherwise wait for it in their next collective)."""
    worker = tmp_path / "gather.py"
    worker.write_text(GATHER_WORKER)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, str(worker), str(failing)], text=True, stdout=subprocess.PIPE,
                              env={**os.environ, "OMP_NUM_THREADS": "1", "RANK": str(rank), "LOCAL_RANK": str(rank),
                                   "WORLD_SIZE": "2", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)})
             for rank in range(2)]
    try:
        outs = [proc.communicate(timeout=120)[0].strip() for proc in procs]
    finally:
        for proc in procs:
            proc.kill()
    if failing < 0:
        assert outs == ["[0, 10]", "[0, 10]"]
    else:
        assert outs == ["AsrS2SError rank 1 stopped (OSError: [Errno 28] No space left on device)",
                        "OSError [Errno 28] No space left on device"]
    assert distributed.gather_or_fail(lambda: 3, lambda r, e: AssertionError(e)) == [3], "one process: [fn()]"


def test_transcribe_refuses_stdin_under_torchrun(robust_package, fixture_utterances, run_cli, monkeypatch):
    monkeypatch.setattr(distributed, "init_from_env", lambda device: distributed.DistInfo(0, 2, 0, device))
    code, out, err = run_cli("transcribe", "--model", robust_package, fixture_utterances[0].audio, "-", "-q")
    assert code == 2 and out == "" and "'-' (stdin) cannot be split across torchrun processes" in err
