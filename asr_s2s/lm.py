"""Language-model training on plain text, for shallow fusion (the ``lm`` scorer).

Text files hold one sentence per line; each is normalised like the acoustic
transcripts and modelled as ``<sos> characters <eos>``. ``train-lm`` encodes the
text once into token files and trains from them a window at a time
(:mod:`asr_s2s.lm_data`, :mod:`asr_s2s.lm_batches`), so a text of any size trains
in bounded memory. The trained model is exported as a package (see
:func:`asr_s2s.package.save_lm_package`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from asr_s2s.checkpoints import load_training_state, read_checkpoint, write_checkpoint
from asr_s2s.config import load_config
from asr_s2s.errors import CheckpointError, ConfigError, ManifestError, TokenizerError
from asr_s2s.experiment import seed_everything, warmup_cosine
from asr_s2s.files import write_text_atomically
from asr_s2s.interfaces import LanguageModel
from asr_s2s.lm_batches import PAD_ID, Position, StreamBatches, sorted_batches
from asr_s2s.lm_data import TokenStream
from asr_s2s.lm_encode import held_out
from asr_s2s.progress import progress_bar
from asr_s2s.tokenizer import CharTokenizer, normalize_text
from asr_s2s.training_state import restore_rng_states, rng_states

log = logging.getLogger(__name__)

__all__ = ["PAD_ID", "LMTrainConfig", "LMExperimentConfig", "LMTrainer", "load_lm_config", "read_text",
           "split_valid", "token_batches", "collate_text", "lm_loss"]
LOG_FILE = "lm_train_log.jsonl"
CHECKPOINT = "checkpoint.pt"
# train config keys that decide which batches an epoch visits, in which order
DATA_ORDER_KEYS = ("seed", "max_batch_tokens", "window_tokens", "valid_fraction")


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
    # sentences are sorted into batches, and the batches shuffled, within windows of this many tokens of the
    # text, visited in random order: memory per window (1 byte a token), not per text
    window_tokens: int = 20_000_000
    checkpoint_every_steps: int | None = 1000  # also checkpoint mid-epoch every N steps (null: at epoch ends only)


@dataclass(frozen=True)
class LMExperimentConfig:
    """``lm`` is ``{name: PLUGIN, **params}`` of kind ``lm``."""

    lm: dict[str, Any] = field(default_factory=lambda: {"name": "lstm"})
    train: LMTrainConfig = field(default_factory=LMTrainConfig)


def load_lm_config(path: str | os.PathLike | None) -> LMExperimentConfig:
    """Read a language-model YAML (``lm:`` and ``train:``); None gives the defaults."""
    return LMExperimentConfig() if path is None else load_config(path, LMExperimentConfig)


def check_train_config(config: LMTrainConfig) -> None:
    """:raises ConfigError: for a size or interval that is not a positive integer."""
    for key in ("max_batch_tokens", "window_tokens", "log_interval", "checkpoint_every_steps"):
        value = getattr(config, key)
        if value is not None and value < 1:
            raise ConfigError(f"train.{key} must be a positive integer, got {value}")


def check_fresh_start(exp_dir: Path, resume: bool) -> Path:
    """The checkpoint of ``exp_dir``; a run to continue only with ``resume``.

    :raises CheckpointError: if it holds one and ``resume`` is not set.
    """
    checkpoint = exp_dir / CHECKPOINT
    if not resume and checkpoint.is_file():
        raise CheckpointError(
            f"{exp_dir} already holds a training run ({checkpoint}); pass --resume to continue it, "
            "or choose another --exp-dir"
        )
    return checkpoint


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
    """Hold out ``fraction`` of the sentences (at least one) for validation, deterministically.

    ``train-lm`` splits its text this way block by block as it encodes it (:mod:`asr_s2s.lm_data`).
    """
    if len(sentences) < 2:
        held_out(len(sentences), fraction, seed)  # a bad fraction is named first
        raise ManifestError("need at least two sentences to hold one out for validation; pass --valid-text")
    keep, hold = held_out(len(sentences), fraction, seed)
    return [sentences[i] for i in keep], [sentences[i] for i in hold]


def token_batches(sentences: Sequence[Sequence[int]], max_tokens: int, shuffle: bool, seed: int = 0) -> list[list[int]]:
    """Index batches of similar-length sentences, each at most ``max_tokens`` padded tokens (+2 for sos/eos).

    The batching of one window of :class:`asr_s2s.lm_batches.StreamBatches`, on sentences in memory.
    """
    order, bounds = sorted_batches(np.array([len(s) for s in sentences], dtype=np.int64), max_tokens)
    batches = [order[a:b].tolist() for a, b in bounds]
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
    """Trains a language model; checkpoints at each epoch's end and every ``checkpoint_every_steps`` steps.

    ``fit(resume=True)`` continues a run where its checkpoint left it, mid-epoch included: the checkpoint
    records the batches of the epoch done (and the window of the token stream they reached), the epoch's
    running totals and every random generator, so that the resumed run trains on the batches the
    uninterrupted one would have, with the same dropout masks.

    :param train: the training sentences: a :class:`~asr_s2s.lm_data.TokenStream` (token files on disk) or,
        for small texts, lists of token ids.
    :param text_key: what the streams were encoded from (:func:`asr_s2s.lm_data.cache_key`); a resume onto
        other text is warned about.
    """

    def __init__(
        self, lm: LanguageModel, tokenizer: CharTokenizer, config: LMTrainConfig,
        train: TokenStream | Sequence[Sequence[int]], valid: TokenStream | Sequence[Sequence[int]],
        exp_dir: str | os.PathLike, device: str | torch.device = "cpu", progress: bool = True, text_key: str = "",
    ) -> None:
        check_train_config(config)
        self.lm = lm.to(device)
        self.tokenizer = tokenizer
        self.config = config
        self.train, self.valid = (
            StreamBatches(s if isinstance(s, TokenStream) else TokenStream.from_sentences(s),
                          config.max_batch_tokens, config.window_tokens) for s in (train, valid))
        self.text_key = text_key
        self.exp_dir = Path(exp_dir)
        self.device = torch.device(device)
        self.progress = progress
        self.steps_per_epoch = len(self.train)
        self.optimizer = torch.optim.Adam(lm.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(config.warmup_steps, config.epochs * self.steps_per_epoch, config.final_lr_ratio)
        )
        self.epoch = self.step = 0
        self._resume_batches, self._resume_totals = 0, (0.0, 0)  # set by a mid-epoch checkpoint

    def fit(self, resume: bool = False) -> list[LMEpochResult]:
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        checkpoint = check_fresh_start(self.exp_dir, resume)
        if resume and checkpoint.is_file():
            self.load_checkpoint(checkpoint)
        else:
            seed_everything(self.config.seed)
            (self.exp_dir / LOG_FILE).unlink(missing_ok=True)
        results = []
        while self.epoch < self.config.epochs:
            results.append(self.train_one_epoch())
            self.save_checkpoint()
        return results

    def train_one_epoch(self) -> LMEpochResult:
        self.lm.train()
        started = time.perf_counter()
        done, (total, count) = self._resume_batches, self._resume_totals
        self._resume_batches, self._resume_totals = 0, (0.0, 0)
        batches = self.train.epoch(self.config.seed * 1000 + self.epoch, done, self.tokenizer.sos_id, self.tokenizer.eos_id)
        bar = progress_bar(batches, total=self.steps_per_epoch, initial=done, unit="batch",
                           desc=f"LM epoch {self.epoch + 1}/{self.config.epochs}", disable=not self.progress, leave=False)
        for inputs, targets, position in bar:
            loss, tokens = lm_loss(self.lm, inputs.to(self.device), targets.to(self.device))
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
            every = self.config.checkpoint_every_steps
            if every and self.step % every == 0 and position.batches_done < self.steps_per_epoch:
                self.save_checkpoint(position, (total, count))  # after the step's log row: each row once
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
    def perplexity(self, sentences: StreamBatches | Sequence[Sequence[int]]) -> float:
        """Per-token perplexity (``<eos>`` included) of ``sentences``."""
        if not isinstance(sentences, StreamBatches):
            sentences = StreamBatches(TokenStream.from_sentences(sentences), self.config.max_batch_tokens,
                                      self.config.window_tokens)
        self.lm.eval()
        total, count = 0.0, 0
        for inputs, targets, _ in sentences.epoch(None, sos=self.tokenizer.sos_id, eos=self.tokenizer.eos_id):
            loss, tokens = lm_loss(self.lm, inputs.to(self.device), targets.to(self.device))
            total, count = total + loss.item(), count + tokens
        self.lm.train()
        return math.exp(total / max(1, count))

    # -- checkpoints -----------------------------------------------------------------------------
    def save_checkpoint(self, position: Position | None = None, totals: tuple[float, int] = (0.0, 0)) -> Path:
        """Write ``EXP_DIR/checkpoint.pt`` atomically: at an epoch's end, or mid-epoch at ``position``
        with the epoch's running totals (summed loss, tokens)."""
        state = {
            "lm": self.lm.state_dict(), "optimizer": self.optimizer.state_dict(), "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch, "step": self.step, **rng_states(),
            "batches_done": position.batches_done if position else 0,
            "epoch_totals": {"loss_sum": totals[0], "tokens": totals[1]},
            "stream": {"text_key": self.text_key, "batches_per_epoch": self.steps_per_epoch,
                       "window": position.window if position else 0, "first_token": position.first_token if position else 0,
                       **{key: getattr(self.config, key) for key in DATA_ORDER_KEYS}},
        }
        return write_checkpoint(state, self.exp_dir / CHECKPOINT)

    def load_checkpoint(self, path: Path) -> None:
        """Restore a state written by :meth:`save_checkpoint` (or an older epoch-end one, without generators).

        :raises CheckpointError: naming the file, if it is unreadable, unsafe or does not fit this model.
        """
        state = read_checkpoint(path, required=("lm", "optimizer", "scheduler", "epoch", "step"))
        load_training_state(path, state, "the language model of --config", lm=self.lm, optimizer=self.optimizer,
                            scheduler=self.scheduler)
        if "torch_rng" in state:
            restore_rng_states(path, state)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self._resume_batches = int(state.get("batches_done", 0))
        totals = state.get("epoch_totals") or {}
        self._resume_totals = (float(totals.get("loss_sum", 0.0)), int(totals.get("tokens", 0)))
        changed = self._data_order_changes(state.get("stream", {}))
        if changed and self._resume_batches:
            log.warning("%s: %s changed since this checkpoint; the resumed epoch will not visit the same batches",
                        path, ", ".join(changed))
        self._trim_log()
        where = f", {self._resume_batches} of {self.steps_per_epoch} batches into epoch {self.epoch + 1}" \
            if self._resume_batches else ""
        log.info("resumed from %s (epoch %d, step %d%s)", path, self.epoch, self.step, where)

    def _data_order_changes(self, saved: dict) -> list[str]:
        changed = [f"train.{key}" for key in DATA_ORDER_KEYS if key in saved and saved[key] != getattr(self.config, key)]
        if saved.get("text_key", self.text_key) != self.text_key:
            changed.append("the LM text")
        return changed

    def _trim_log(self) -> None:
        """Drop the log rows of steps and epochs after the checkpoint: the resumed run does them again."""
        path = self.exp_dir / LOG_FILE
        if not path.is_file():
            return
        rows = path.read_text().splitlines(keepends=True)
        kept = [row for row in rows if self._before_checkpoint(json.loads(row))]
        if len(kept) < len(rows):
            write_text_atomically(path, "".join(kept))

    def _before_checkpoint(self, row: dict) -> bool:
        return row.get("step", 0) <= self.step if row.get("kind") == "step" else row.get("epoch", 0) <= self.epoch

    def _log(self, row: dict) -> None:
        with (self.exp_dir / LOG_FILE).open("a") as handle:
            handle.write(json.dumps(row) + "\n")
