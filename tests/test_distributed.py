"""Scale-out with torch.distributed: a real 2-process ``torchrun`` on the CPU (gloo).

``asr-s2s train`` runs under torchrun exactly as the LibriSpeech recipe runs it. A
small wrapper records which utterances each rank trains on. The test proves that
the ranks' batches are disjoint and cover each epoch, that rank 0 alone writes, and
that 2 processes end with the same weights as 1 process with the same global batch
(1 process, ``accum_grad: 2``). ``asr-s2s evaluate`` under torchrun merges the
ranks' shares into the same results as one process.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

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
    seen, trainers = [], []
    forward, fit = trainer.Trainer._forward, trainer.Trainer.fit

    def traced(self, batch):
        seen.append({"epoch": self.epoch, "ids": list(batch.ids)})
        result = forward(self, batch)
        if nan_at == f"{rank}:{self.epoch}:{len(seen) - 1}":
            result = dataclasses.replace(result, loss=result.loss * float("nan"))
        return result

    def keep(self, *args, **kwargs):
        trainers.append(self)
        return fit(self, *args, **kwargs)

    trainer.Trainer._forward, trainer.Trainer.fit = traced, keep
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
