"""train-lm stops mid-epoch and resumes where it stopped; on a text of many MB its memory stays bounded."""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import random
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch

from asr_s2s.lm import CHECKPOINT, LOG_FILE, LMTrainConfig, LMTrainer
from asr_s2s.lm_data import describe_sources, prepare_lm_data

LM = {"name": "lstm", "embed_dim": 8, "hidden_size": 16, "num_layers": 1, "dropout": 0.3}  # dropout: RNG state matters
CONFIG = LMTrainConfig(epochs=2, lr=0.01, warmup_steps=2, max_batch_tokens=150, window_tokens=400, valid_fraction=0.1,
                       log_interval=1, checkpoint_every_steps=2)


class _Crash(Exception):
    """Stands in for the process dying (kill -9) in the middle of a step."""


@pytest.fixture(scope="module")
def lm_text(tmp_path_factory, tokenizer):
    folder = tmp_path_factory.mktemp("lm_resume")
    rng = random.Random(0)
    words = ["THE", "CAT", "SAT", "ON", "A", "MAT", "DOG", "RAN", "HOME", "I'M"]
    (folder / "text.txt").write_text("".join(" ".join(rng.choices(words, k=rng.randint(1, 8))) + "\n" for _ in range(150)))
    sources = describe_sources([folder / "text.txt"])
    return prepare_lm_data(sources, tokenizer, (CONFIG.valid_fraction, CONFIG.seed), folder / "exp")


def _trainer(registry, tokenizer, data, exp, config=CONFIG, seed=0):
    torch.manual_seed(seed)
    lm = registry.build("lm", LM, "lm", vocab_size=len(tokenizer))
    return LMTrainer(lm, tokenizer, config, data.train, data.valid, exp, progress=False, text_key=data.key)


def _rows(exp, kind):
    return [r for line in (exp / LOG_FILE).read_text().splitlines() if (r := json.loads(line))["kind"] == kind]


@pytest.fixture(scope="module")
def reference(registry, tokenizer, lm_text, tmp_path_factory):
    exp = tmp_path_factory.mktemp("lm_reference")
    trainer = _trainer(registry, tokenizer, lm_text, exp)
    assert len(trainer.train.windows) > 2 and trainer.steps_per_epoch > 6, "several windows, several checkpoints"
    return trainer, trainer.fit(), exp


def _die_at(trainer, step):
    """Raise :class:`_Crash` in the forward pass of training step ``step`` (validation passes are not counted)."""

    def die(module, args):
        if module.training and trainer.step + 1 == step:
            raise _Crash

    trainer.lm.register_forward_pre_hook(die)


@pytest.mark.parametrize("when", ["epoch-1-step-4", "epoch-1-step-5", "epoch-1-last-step", "epoch-2-step-5"])
def test_a_run_killed_mid_epoch_resumes_step_for_step(registry, tokenizer, lm_text, reference, tmp_path, when):
    """Checkpoints every 2 steps and at the end of each epoch; the run dies in a step; a new process resumes from the
    last checkpoint. Its loss curve, epoch results and final weights equal the uninterrupted run's."""
    ref_trainer, ref_results, ref_exp = reference
    per_epoch = ref_trainer.steps_per_epoch
    dying_step = {"epoch-1-step-4": 4, "epoch-1-step-5": 5, "epoch-1-last-step": per_epoch,
                  "epoch-2-step-5": per_epoch + 5}[when]
    crashed = _trainer(registry, tokenizer, lm_text, tmp_path)
    _die_at(crashed, dying_step)
    with pytest.raises(_Crash):
        crashed.fit()
    saved = torch.load(tmp_path / CHECKPOINT, weights_only=True)
    done = dying_step - 1
    assert saved["step"] == max(done // 2 * 2, done // per_epoch * per_epoch)
    assert saved["batches_done"] == saved["step"] - per_epoch * saved["epoch"]
    assert saved["stream"]["text_key"] == lm_text.key and saved["stream"]["window"] in range(len(ref_trainer.train.windows))

    random.seed(999)  # a new process: other initial weights, other global RNG states
    np.random.seed(999)
    resumed = _trainer(registry, tokenizer, lm_text, tmp_path, seed=123)
    results = resumed.fit(resume=True)
    assert [r.epoch for r in results] == ([1, 2] if dying_step <= per_epoch else [2])
    for got, want in zip(results, ref_results[-len(results):]):
        assert (got.step, got.tokens) == (want.step, want.tokens)
        assert got.train_ppl == pytest.approx(want.train_ppl, rel=1e-6) and got.valid_ppl == pytest.approx(want.valid_ppl, rel=1e-6)
    steps, want_steps = _rows(tmp_path, "step"), _rows(ref_exp, "step")
    assert [r["step"] for r in steps] == list(range(1, 2 * per_epoch + 1)), "every step logged once"
    for got, want in zip(steps, want_steps):
        assert got["loss"] == pytest.approx(want["loss"], rel=1e-5) and got["lr"] == pytest.approx(want["lr"], rel=1e-9)
    assert [r["epoch"] for r in _rows(tmp_path, "epoch")] == [1, 2]
    expected = ref_trainer.lm.state_dict()
    for name, value in resumed.lm.state_dict().items():
        torch.testing.assert_close(value, expected[name], atol=1e-5, rtol=1e-5, msg=name)


def test_resuming_onto_another_text_is_warned_about(registry, tokenizer, lm_text, tmp_path, caplog):
    config = dataclasses.replace(CONFIG, epochs=1)
    caplog.set_level(logging.INFO)
    trainer = _trainer(registry, tokenizer, lm_text, tmp_path, config)
    _die_at(trainer, 4)
    with pytest.raises(_Crash):
        trainer.fit()
    other = dataclasses.replace(lm_text, key="another")
    resumed = _trainer(registry, tokenizer, other, tmp_path, dataclasses.replace(config, max_batch_tokens=160))
    resumed.fit(resume=True)
    assert "train.max_batch_tokens, the LM text changed since this checkpoint" in caplog.text
    assert "resumed from" in caplog.text and "2 of" in caplog.text


# -- memory -------------------------------------------------------------------------------------------
_MEMORY_SCRIPT = textwrap.dedent("""
    import json, random, resource, sys
    from pathlib import Path
    import torch
    from asr_s2s.lm import LMTrainConfig, LMTrainer
    from asr_s2s.lm_data import describe_sources, prepare_lm_data, record_sources
    from asr_s2s.tokenizer import CharTokenizer

    class Bigram(torch.nn.Module):  # a fast tiny model: the next character from this one
        def __init__(self, vocab):
            super().__init__()
            self.table = torch.nn.Embedding(vocab, vocab)

        def forward(self, tokens_in):
            return self.table(tokens_in)

    def train(folder, megabytes):
        rng = random.Random(0)
        lines = [" ".join("".join(rng.choices("AB", k=rng.randint(1, 6))) for _ in range(rng.randint(2, 12))) + "\\n"
                 for _ in range(5000)]
        text = folder / f"{megabytes}.txt"
        with open(text, "w") as handle:
            while handle.tell() < megabytes * 1e6:
                handle.write("".join(rng.choices(lines, k=2000)))
        config = LMTrainConfig(epochs=1, lr=0.05, warmup_steps=1, max_batch_tokens=100_000, window_tokens=1_000_000,
                               valid_fraction=0.001, log_interval=10**6)
        exp = folder / f"exp{megabytes}"
        sources = describe_sources([text])
        data = prepare_lm_data(sources, tokenizer, (config.valid_fraction, config.seed), exp)
        record_sources(exp, sources, data)
        result = LMTrainer(Bigram(len(tokenizer)), tokenizer, config, data.train, data.valid, exp, progress=False).fit()
        return {"tokens": result[-1].tokens, "train_ppl": result[-1].train_ppl,
                "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    torch.set_num_threads(1)
    tokenizer = CharTokenizer(["<blank>", "<sos/eos>", " ", "A", "B"])
    folder = Path(sys.argv[1])
    print(json.dumps([train(folder, 0.3), train(folder, float(sys.argv[2]))]))
""")


def test_memory_does_not_grow_with_the_text(tmp_path):
    """A 12 MB text (12M tokens, 384k sentences; read into Python lists as train-lm did before, 147 MB) is encoded
    and trained on for a full epoch within 20 MB of the peak of a 0.3 MB text. glibc's mmap threshold is fixed low so that RSS
    follows the memory in use rather than what malloc keeps for later."""
    env = dict(os.environ, MALLOC_MMAP_THRESHOLD_="65536")
    done = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, str(tmp_path), "12"], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    small, large = json.loads(done.stdout)
    assert large["tokens"] > 11_000_000 and large["train_ppl"] < min(small["train_ppl"], 4), "it trained on all of it"
    assert large["peak_mb"] - small["peak_mb"] < 20, (small, large)
