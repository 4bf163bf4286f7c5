"""Language-model training on plain text, for shallow fusion (the ``lm`` scorer).

Text files hold one sentence per line; each is normalised like the acoustic
transcripts and modelled as ``<sos> characters <eos>``. The trained model is
exported as a package (see :func:`asr_s2s.package.save_lm_package`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence
from asr_s2s.progress import progress_bar

from asr_s2s.config import load_config
from asr_s2s.checkpoints import load_training_state, read_checkpoint, write_checkpoint
from asr_s2s.errors import CheckpointError, ConfigError, ManifestError, TokenizerError
from asr_s2s.interfaces import LanguageModel
from asr_s2s.tokenizer import CharTokenizer, normalize_text
from asr_s2s.experiment import seed_everything, warmup_cosine

log = logging.getLogger(__name__)

PAD_ID = -1  # ignored by the loss
LOG_FILE = "lm_train_log.jsonl"
CHECKPOINT = "checkpoint.pt"


@dataclass(frozen=True)
class LMTrainConfig:
    """How to train a language model. LR: linear warm-up, then cosine decay."""

    epochs: int = 10
    lr: float = 2e-3
    warmup_steps: int = 200
    final_lr_ratio: float = 0.05
    grad_clip: float = 1.0
    max_batch_tokens: int = 8000  # padded tokens per batch
    valid_fraction: float = 0.02  # held-out share of the text when no validation text is given
    seed: int = 0
    log_interval: int = 50  # steps between JSONL log lines


@dataclass(frozen=True)
class LMExperimentConfig:
    """``lm`` is ``{name: PLUGIN, **params}`` of kind ``lm``."""

    lm: dict[str, Any] = field(default_factory=lambda: {"name": "lstm"})
    train: LMTrainConfig = field(default_factory=LMTrainConfig)


def load_lm_config(path: str | os.PathLike | None) -> LMExperimentConfig:
    """Read a language-model YAML (``lm:`` and ``train:``); None gives the defaults."""
    return LMExperimentConfig() if path is None else load_config(path, LMExperimentConfig)


def read_text(paths: Sequence[str | os.PathLike], tokenizer: CharTokenizer) -> list[list[int]]:
    """Token ids of every non-empty line of ``paths``, normalised like transcripts.

    :raises ManifestError: for an unreadable file.
    :raises TokenizerError: listing (up to five) lines the tokenizer cannot represent, as ``file:line``.
    """
    sentences, bad, total_bad = [], [], 0
    for path in paths:
        try:
            handle = open(path, encoding="utf-8")
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read text file: {exc.strerror}") from None
        with handle:
            for number, line in enumerate(handle, 1):
                text = normalize_text(line)
                if not text:
                    continue
                try:
                    sentences.append(tokenizer.encode(text, where=f"{path}:{number}"))
                except TokenizerError as exc:
                    total_bad += 1
                    if len(bad) < 5:
                        bad.append(str(exc))
    if total_bad:
        raise TokenizerError(f"{total_bad} line(s) contain characters the tokenizer cannot represent:\n  " + "\n  ".join(bad))
    if not sentences:
        raise ManifestError(f"no text in {', '.join(map(str, paths))}")
    return sentences


def split_valid(sentences: list[list[int]], fraction: float, seed: int) -> tuple[list[list[int]], list[list[int]]]:
    """Hold out ``fraction`` of the sentences (at least one) for validation, deterministically."""
    if not 0 < fraction < 1:
        raise ConfigError(f"train.valid_fraction must be between 0 and 1, got {fraction}")
    if len(sentences) < 2:
        raise ManifestError("need at least two sentences to hold one out for validation; pass --valid-text")
    order = list(range(len(sentences)))
    random.Random(seed).shuffle(order)
    cut = max(1, round(fraction * len(sentences)))
    return [sentences[i] for i in order[cut:]], [sentences[i] for i in order[:cut]]


def token_batches(sentences: Sequence[Sequence[int]], max_tokens: int, shuffle: bool, seed: int = 0) -> list[list[int]]:
    """Index batches of similar-length sentences, each at most ``max_tokens`` padded tokens (+2 for sos/eos)."""
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i]))
    batches, current, longest = [], [], 0
    for i in order:
        length = len(sentences[i]) + 2
        if current and max(longest, length) * (len(current) + 1) > max_tokens:
            batches.append(current)
            current, longest = [], 0
        current.append(i)
        longest = max(longest, length)
    if current:
        batches.append(current)
    if shuffle:
        random.Random(seed).shuffle(batches)
    return batches


def collate_text(sentences: Sequence[Sequence[int]], sos: int, eos: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs ``(B, U)`` (``<sos>`` + tokens, padded with ``<eos>``) and targets ``(B, U)`` (tokens + ``<eos>``, padded with ``PAD_ID``)."""
    inputs = pad_sequence([torch.tensor([sos, *s]) for s in sentences], batch_first=True, padding_value=eos)
    targets = pad_sequence([torch.tensor([*s, eos]) for s in sentences], batch_first=True, padding_value=PAD_ID)
    return inputs, targets


def lm_loss(lm: LanguageModel, inputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, int]:
    """Summed cross-entropy (nats) over the non-padding targets, and their count."""
    logits = lm(inputs)
    loss = F.cross_entropy(logits.transpose(1, 2), targets, ignore_index=PAD_ID, reduction="sum")
    return loss, int((targets != PAD_ID).sum())


@dataclass(frozen=True)
class LMEpochResult:
    epoch: int
    step: int
    train_ppl: float  # per token, <eos> included
    valid_ppl: float
    tokens: int
    wall_seconds: float


class LMTrainer:
    """Trains a language model; checkpoints each epoch and ``fit(resume=True)`` continues a run."""

    def __init__(
        self, lm: LanguageModel, tokenizer: CharTokenizer, config: LMTrainConfig,
        train: list[list[int]], valid: list[list[int]], exp_dir: str | os.PathLike,
        device: str | torch.device = "cpu", progress: bool = True,
    ) -> None:
        self.lm = lm.to(device)
        self.tokenizer = tokenizer
        self.config = config
        self.train, self.valid = train, valid
        self.exp_dir = Path(exp_dir)
        self.device = torch.device(device)
        self.progress = progress
        self.steps_per_epoch = len(token_batches(train, config.max_batch_tokens, shuffle=False))
        self.optimizer = torch.optim.Adam(lm.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(config.warmup_steps, config.epochs * self.steps_per_epoch, config.final_lr_ratio)
        )
        self.epoch = self.step = 0

    def fit(self, resume: bool = False) -> list[LMEpochResult]:
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = self.exp_dir / CHECKPOINT
        if resume and checkpoint.is_file():
            state = read_checkpoint(checkpoint, required=("lm", "optimizer", "scheduler", "epoch", "step"))
            load_training_state(
                checkpoint, state, "the language model of --config", lm=self.lm, optimizer=self.optimizer, scheduler=self.scheduler
            )
            self.epoch, self.step = int(state["epoch"]), int(state["step"])
            log.info("resumed from %s (epoch %d)", checkpoint, self.epoch)
        elif checkpoint.is_file():
            raise CheckpointError(
                f"{self.exp_dir} already holds a training run ({checkpoint}); pass --resume to continue it, "
                "or choose another --exp-dir"
            )
        else:
            seed_everything(self.config.seed)
            (self.exp_dir / LOG_FILE).unlink(missing_ok=True)
        results = []
        while self.epoch < self.config.epochs:
            results.append(self.train_one_epoch())
            state = {"lm": self.lm.state_dict(), "optimizer": self.optimizer.state_dict(),
                     "scheduler": self.scheduler.state_dict(), "epoch": self.epoch, "step": self.step}
            write_checkpoint(state, checkpoint)
        return results

    def _batches(self, sentences: list[list[int]], shuffle: bool) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        seed = self.config.seed * 1000 + self.epoch
        for batch in token_batches(sentences, self.config.max_batch_tokens, shuffle, seed):
            inputs, targets = collate_text([sentences[i] for i in batch], self.tokenizer.sos_id, self.tokenizer.eos_id)
            yield inputs.to(self.device), targets.to(self.device)

    def train_one_epoch(self) -> LMEpochResult:
        self.lm.train()
        started = time.perf_counter()
        total, count = 0.0, 0
        bar = progress_bar(self._batches(self.train, shuffle=True), total=self.steps_per_epoch, unit="batch",
                   desc=f"LM epoch {self.epoch + 1}/{self.config.epochs}", disable=not self.progress, leave=False)
        for inputs, targets in bar:
            loss, tokens = lm_loss(self.lm, inputs, targets)
            if not torch.isfinite(loss):
                log.warning("non-finite LM loss at step %d; batch skipped", self.step)
                continue
            self.optimizer.zero_grad(set_to_none=True)
            (loss / tokens).backward()
            torch.nn.utils.clip_grad_norm_(self.lm.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            total, count = total + loss.item(), count + tokens
            bar.set_postfix(ppl=f"{math.exp(loss.item() / tokens):.2f}", refresh=False)
            if self.step % self.config.log_interval == 0:
                self._log({"kind": "step", "step": self.step, "loss": loss.item() / tokens, "lr": self.scheduler.get_last_lr()[0]})
        bar.close()
        self.epoch += 1
        result = LMEpochResult(
            self.epoch, self.step, math.exp(total / max(1, count)), self.perplexity(self.valid), count,
            time.perf_counter() - started,
        )
        self._log({"kind": "epoch", **dataclasses.asdict(result)})
        log.info("LM epoch %d: train ppl %.3f, valid ppl %.3f", result.epoch, result.train_ppl, result.valid_ppl)
        return result

    @torch.inference_mode()
    def perplexity(self, sentences: list[list[int]]) -> float:
        """Per-token perplexity (``<eos>`` included) of ``sentences``."""
        self.lm.eval()
        total, count = 0.0, 0
        for inputs, targets in self._batches(sentences, shuffle=False):
            loss, tokens = lm_loss(self.lm, inputs, targets)
            total, count = total + loss.item(), count + tokens
        self.lm.train()
        return math.exp(total / max(1, count))

    def _log(self, row: dict) -> None:
        with (self.exp_dir / LOG_FILE).open("a") as handle:
            handle.write(json.dumps(row) + "\n")
