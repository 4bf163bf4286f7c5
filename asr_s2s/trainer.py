"""Training: joint CTC-attention loss, Adam with warm-up and cosine decay, checkpoints."""

from __future__ import annotations

import json
import logging
import math
import os
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from asr_s2s.config import TrainConfig
from asr_s2s.dataset import SpeechDataset, make_loader
from asr_s2s.features import num_frames
from asr_s2s.audio import SAMPLE_RATE_HZ
from asr_s2s.metrics import error_rates
from asr_s2s.model import ASRModel
from asr_s2s.search import greedy_search

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoints"
LOG_FILE = "train_log.jsonl"


@dataclass(frozen=True)
class EpochResult:
    """What one epoch achieved."""

    epoch: int
    step: int
    train_loss: float
    valid_loss: float
    valid_cer: float
    audio_seconds: float
    wall_seconds: float
    skipped_batches: int
    failed_items: int


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def warmup_cosine(warmup_steps: int, total_steps: int, final_ratio: float):
    """LR multiplier: linear warm-up over ``warmup_steps``, then cosine decay to ``final_ratio``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        progress = min(1.0, (step - warmup_steps) / max(1, total_steps - warmup_steps))
        return final_ratio + (1 - final_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def count_ctc_infeasible(dataset: SpeechDataset, model: ASRModel) -> int:
    """Warn about, and count, utterances whose labels are too long for their encoder length.

    CTC needs one frame per label plus one per repeated pair; such utterances
    still train the attention decoder but give the CTC head nothing.
    """
    if model.ctc is None:
        return 0
    bad = []
    for utt, ids in zip(dataset.utterances, dataset.token_ids):
        frames = num_frames(int(utt.duration * SAMPLE_RATE_HZ))
        enc = int(model.encoder.output_lengths(torch.tensor([frames]))[0])
        need = len(ids) + sum(a == b for a, b in zip(ids, ids[1:]))
        if need > enc:
            bad.append(f"{utt.id} ({need} labels > {enc} frames)")
    if bad:
        log.warning(
            "%d of %d utterances are too long for CTC at %dx time reduction, e.g. %s. "
            "Use fewer pyramid layers or set model.ctc_weight: 0.",
            len(bad), len(dataset), model.encoder.time_reduction, ", ".join(bad[:3]),
        )
    return len(bad)


def _numpy_rng_state() -> dict:
    """numpy's global RNG state as tensors and numbers (loadable with ``weights_only``)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    return {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_numpy_rng_state(state: dict) -> None:
    np.random.set_state(("MT19937", state["key"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"]))


class Trainer:
    """Runs epochs, validates, logs and checkpoints. ``fit(resume=True)`` continues a run."""

    def __init__(
        self, model: ASRModel, config: TrainConfig, train_set: SpeechDataset, valid_set: SpeechDataset,
        exp_dir: str | Path, device: str | torch.device = "cpu", progress: bool = True,
    ) -> None:
        self.model = model.to(device)
        self.config = config
        self.device = torch.device(device)
        self.exp_dir = Path(exp_dir)
        self.progress = progress
        self.train_loader = make_loader(
            train_set, config.max_batch_seconds, shuffle=True, seed=config.seed,
            num_workers=config.num_workers, max_batch_size=config.max_batch_size,
            sortagrad_epochs=config.sortagrad_epochs,
        )
        self.valid_loader = make_loader(valid_set, config.valid_max_batch_seconds, shuffle=False, num_workers=0)
        self.steps_per_epoch = len(self.train_loader.batch_sampler)
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(config.warmup_steps, config.epochs * self.steps_per_epoch, config.final_lr_ratio)
        )
        self.step = 0
        self.epoch = 0
        self.infeasible = count_ctc_infeasible(train_set, model)
        self._tensorboard = None
        if config.tensorboard:
            from torch.utils.tensorboard import SummaryWriter  # needs the [tensorboard] extra

            self._tensorboard = SummaryWriter(str(self.exp_dir / "tensorboard"))

    # -- checkpoints -------------------------------------------------------
    def checkpoint_path(self, epoch: int) -> Path:
        return self.exp_dir / CHECKPOINT_DIR / f"epoch-{epoch}.pt"

    def save_checkpoint(self) -> Path:
        """Write the full training state atomically: a crash mid-write keeps the old file."""
        path = self.checkpoint_path(self.epoch)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "torch_rng": torch.get_rng_state(),
            "numpy_rng": _numpy_rng_state(),
            "python_rng": list(random.getstate()[1]),
            "train_config": asdict(self.config),
        }
        tmp = path.with_suffix(".pt.tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)
        return path

    def latest_checkpoint(self) -> Path | None:
        folder = self.exp_dir / CHECKPOINT_DIR
        found = sorted(folder.glob("epoch-*.pt"), key=lambda p: int(p.stem.split("-")[1])) if folder.is_dir() else []
        return found[-1] if found else None

    def load_checkpoint(self, path: Path) -> None:
        """Restore a state written by :meth:`save_checkpoint` (tensors only; nothing is unpickled as code)."""
        state = torch.load(path, map_location="cpu", weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        torch.set_rng_state(state["torch_rng"])
        _set_numpy_rng_state(state["numpy_rng"])
        random.setstate((3, tuple(state["python_rng"]), None))
        log.info("resumed from %s (epoch %d, step %d)", path, self.epoch, self.step)

    # -- the loop ----------------------------------------------------------
    def fit(self, resume: bool = False) -> list[EpochResult]:
        """Train until ``config.epochs``; with ``resume``, continue from the latest checkpoint."""
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        if resume and (latest := self.latest_checkpoint()) is not None:
            self.load_checkpoint(latest)
        else:
            seed_everything(self.config.seed)
            (self.exp_dir / LOG_FILE).unlink(missing_ok=True)
        results = []
        while self.epoch < self.config.epochs:
            results.append(self.train_one_epoch())
            self.save_checkpoint()
        return results

    def train_one_epoch(self) -> EpochResult:
        self.model.train()
        self.train_loader.batch_sampler.set_epoch(self.epoch)
        started = time.perf_counter()
        total_loss, batches, audio_s, skipped, failed = 0.0, 0, 0.0, 0, 0
        bar = tqdm(self.train_loader, desc=f"epoch {self.epoch + 1}/{self.config.epochs}", unit="batch", disable=not self.progress, leave=False)
        for batch in bar:
            failed += self._report_failed(batch)
            if len(batch) == 0:
                continue
            batch = batch.to(self.device)
            out = self.model(batch.feats, batch.feat_lengths, batch.tokens, batch.token_lengths)
            if not torch.isfinite(out.loss):
                skipped += 1
                log.warning("non-finite loss at step %d (batch of %s); batch skipped", self.step, batch.ids[0])
                self.optimizer.zero_grad(set_to_none=True)
                continue
            self.optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
            self.optimizer.step()
            self.scheduler.step()
            self.step += 1
            batches += 1
            total_loss += out.loss.item()
            audio_s += batch.audio_seconds
            bar.set_postfix(loss=f"{out.loss.item():.3f}", acc=f"{out.accuracy.item():.2f}")
            if self.step % self.config.log_interval == 0:
                self._log({
                    "kind": "step", "step": self.step, "epoch": self.epoch + 1, "loss": out.loss.item(),
                    "attention_loss": out.attention_loss.item(),
                    "ctc_loss": None if out.ctc_loss is None else out.ctc_loss.item(),
                    "accuracy": out.accuracy.item(), "grad_norm": grad_norm.item(), "lr": self.scheduler.get_last_lr()[0],
                })
        bar.close()
        self.epoch += 1
        valid_loss, valid_cer = self.validate()
        wall = time.perf_counter() - started
        result = EpochResult(self.epoch, self.step, total_loss / max(1, batches), valid_loss, valid_cer, audio_s, wall, skipped, failed)
        self._log({"kind": "epoch", **asdict(result)})
        log.info(
            "epoch %d: train loss %.3f, valid loss %.3f, valid CER %.2f%%, %.1f audio-s/s",
            self.epoch, result.train_loss, valid_loss, valid_cer, audio_s / wall,
        )
        self._plot()
        return result

    @torch.inference_mode()
    def validate(self) -> tuple[float, float]:
        """Validation loss (teacher forced) and greedy CER in percent."""
        self.model.eval()
        losses, refs, hyps = [], [], []
        tok = self.model.tokenizer
        example = None
        for batch in self.valid_loader:
            self._report_failed(batch)
            if len(batch) == 0:
                continue
            batch = batch.to(self.device)
            states, lengths = self.model.encode(batch.feats, batch.feat_lengths)
            out = self.model.loss(states, lengths, batch.tokens, batch.token_lengths)
            losses.append(float(out.loss) * len(batch))
            found, attention = greedy_search(self.model.decoder, states, lengths, tok.sos_id, tok.eos_id)
            if example is None:
                text = tok.decode(found[0].tokens)
                weights = attention[0, : len(found[0].tokens) + 1, : int(lengths[0])].float().cpu().numpy()
                example = (batch.ids[0], text, weights)
            refs += batch.texts
            hyps += [tok.decode(h.tokens) for h in found]
        self.model.train()
        if example is not None:
            self._plot_attention(*example)
        if not refs:
            return float("nan"), float("nan")
        return sum(losses) / len(refs), error_rates(refs, hyps).cer

    def _report_failed(self, batch) -> int:
        for utt_id, reason in batch.failed:
            log.warning("skipping %s: %s", utt_id, reason)
        return len(batch.failed)

    def _log(self, row: dict) -> None:
        with (self.exp_dir / LOG_FILE).open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self._tensorboard is not None:
            for key, value in row.items():
                if isinstance(value, float) and key not in ("step", "epoch"):
                    self._tensorboard.add_scalar(f"{row['kind']}/{key}", value, row["step"])

    def _plot_attention(self, utt_id: str, text: str, weights: np.ndarray) -> None:
        from asr_s2s.plotting import plot_attention

        folder = self.exp_dir / "attention"
        folder.mkdir(exist_ok=True)
        title = f"{utt_id}, epoch {self.epoch}: {text[:60]}"
        try:
            plot_attention(weights, folder / f"epoch-{self.epoch}.png", title=title, labels=text)
        except Exception as exc:  # noqa: BLE001 - a failed plot must not stop training
            log.warning("could not plot attention: %s", exc)

    def _plot(self) -> None:
        from asr_s2s.plotting import plot_training_curves

        try:
            plot_training_curves(self.exp_dir / LOG_FILE, self.exp_dir / "training_curves.png")
        except Exception as exc:  # noqa: BLE001 - a failed plot must not stop training
            log.warning("could not plot training curves: %s", exc)
