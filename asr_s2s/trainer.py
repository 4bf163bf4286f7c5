"""Training: joint CTC-attention loss, Adam with warm-up and cosine decay, checkpoints."""

from __future__ import annotations

import json
import logging
import math
import random
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from asr_s2s.progress import progress_bar

from asr_s2s import distributed
from asr_s2s.checkpoints import load_training_state, read_checkpoint, write_checkpoint
from asr_s2s.config import TrainConfig
from asr_s2s.errors import CheckpointError, ConfigError, TrainingError
from asr_s2s.experiment import CHECKPOINT_DIR, LOG_FILE, seed_everything, warmup_cosine
from asr_s2s.dataset import SpeechDataset, make_loader
from asr_s2s.features import num_frames
from asr_s2s.files import write_text_atomically
from asr_s2s.audio import SAMPLE_RATE_HZ
from asr_s2s.metrics import error_rates
from asr_s2s.model import ASRModel
from asr_s2s.search import greedy_search

log = logging.getLogger(__name__)


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
    skipped_batches: int  # non-finite loss or gradient
    failed_items: int
    oom_batches: int = 0  # skipped after running out of (GPU) memory
    augment_failures: int = 0  # augmentations that failed on an utterance, which trained without them


@dataclass
class EpochTotals:
    """Running totals of the epoch in progress; a mid-epoch checkpoint saves them by field name."""

    loss_sum: float = 0.0  # training loss summed over the batches trained on
    batches: int = 0  # batches trained on
    audio_s: float = 0.0  # seconds of audio in them
    skipped: int = 0  # batches skipped for a non-finite loss or gradient
    failed: int = 0  # utterances that failed to load
    oom: int = 0  # batches skipped after running out of memory

    @classmethod
    def restore(cls, saved: object) -> EpochTotals:
        """Totals from a checkpoint: a dict by field name, or (older checkpoints) a list in field order."""
        if isinstance(saved, dict):
            return cls(**{f.name: saved[f.name] for f in fields(cls) if f.name in saved})
        return cls(*saved) if saved else cls()

    @classmethod
    def summed(cls, parts: list[EpochTotals]) -> EpochTotals:
        """The totals of every rank's share, added up field by field."""
        return cls(*(sum(getattr(p, f.name) for p in parts) for f in fields(cls)))


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


# train config keys that decide which batches an epoch visits, in which order
_DATA_ORDER_KEYS = ("seed", "max_batch_seconds", "max_batch_size", "sortagrad_epochs", "accum_grad")


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA's out-of-memory error (and other backends' "out of memory" RuntimeErrors)."""
    oom_type = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
    return isinstance(exc, oom_type) or (isinstance(exc, RuntimeError) and "out of memory" in str(exc))


def _number(path: Path) -> int | None:
    """N of ``epoch-N.pt`` or ``step-N.pt``; None for other names (e.g. an averaged model)."""
    try:
        return int(path.stem.split("-", 1)[1])
    except (IndexError, ValueError):
        return None


def latest_checkpoint(exp_dir: str | Path) -> Path | None:
    """The newer of ``exp_dir``'s last epoch checkpoint and its (mid-epoch) step checkpoint, if any."""
    folder = Path(exp_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return None

    def last(pattern: str) -> Path | None:
        numbered = [(n, p) for p in folder.glob(pattern) if (n := _number(p)) is not None]
        return max(numbered)[1] if numbered else None

    epoch_file, step_file = last("epoch-*.pt"), last("step-*.pt")
    if epoch_file is None or step_file is None:
        return epoch_file or step_file
    # a step checkpoint is removed once its epoch's checkpoint is written; one a crash left behind is older
    finished = int(read_checkpoint(step_file, required=("epoch",), mmap=True)["epoch"])
    return step_file if finished >= _number(epoch_file) else epoch_file


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
        # under torchrun: DDP over the process group; rank 0 alone writes (recipes/librispeech/README.md)
        self.rank, self.world_size = distributed.get_rank(), distributed.get_world_size()
        self.is_main = self.rank == 0
        self.progress = progress and self.is_main
        self.ddp = None
        if self.world_size > 1:
            from torch.nn.parallel import DistributedDataParallel

            cuda = self.device.type == "cuda"
            index = self.device.index if self.device.index is not None else torch.cuda.current_device() if cuda else None
            self.ddp = DistributedDataParallel(self.model, device_ids=[index] if cuda else None)
        self.bf16 = self.device.type == "cuda" and config.precision == "bf16"  # CPU trains in fp32
        self.train_loader = make_loader(
            train_set, config.max_batch_seconds, shuffle=True, seed=config.seed,
            num_workers=config.num_workers, max_batch_size=config.max_batch_size,
            sortagrad_epochs=config.sortagrad_epochs, rank=self.rank, world_size=self.world_size,
        )
        self.valid_loader = make_loader(
            valid_set, config.valid_max_batch_seconds, shuffle=False, num_workers=0,
            rank=self.rank, world_size=min(self.world_size, len(valid_set)),
        ) if self.rank < len(valid_set) else []
        self.steps_per_epoch = math.ceil(len(self.train_loader.batch_sampler) / config.accum_grad)
        self.history: list[dict] = []  # {"epoch", "valid_loss", "valid_cer"} of every finished epoch
        self.optimizer = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, warmup_cosine(config.warmup_steps, config.epochs * self.steps_per_epoch, config.final_lr_ratio)
        )
        self.step = 0
        self.epoch = 0
        for key in ("checkpoint_every_steps", "max_consecutive_bad_losses"):
            value = getattr(config, key)
            if value is not None and value < 1:
                raise ConfigError(f"train.{key} must be a positive integer, got {value}")
        self._bad_in_a_row = 0  # batches with a non-finite loss or gradient since the last good one
        self._augment_failures: dict[str, int] = {}  # train.augment entry -> failures this epoch
        self._resume_batches, self._resume_totals = 0, None  # set by a mid-epoch checkpoint
        self.infeasible = count_ctc_infeasible(train_set, model)
        self._tensorboard = None
        if config.tensorboard and self.is_main:
            from torch.utils.tensorboard import SummaryWriter  # needs the [tensorboard] extra

            self._tensorboard = SummaryWriter(str(self.exp_dir / "tensorboard"))

    # -- checkpoints -------------------------------------------------------
    def checkpoint_path(self, epoch: int) -> Path:
        return self.exp_dir / CHECKPOINT_DIR / f"epoch-{epoch}.pt"

    def step_checkpoint_path(self, step: int) -> Path:
        return self.exp_dir / CHECKPOINT_DIR / f"step-{step}.pt"

    def save_checkpoint(self, path: Path | None = None, batches_done: int = 0, totals: EpochTotals | None = None) -> Path:
        """Write the full training state atomically: a crash mid-write keeps the old file.

        :param path: where; by default the checkpoint of the last finished epoch, ``epoch-N.pt``.
        :param batches_done: for a mid-epoch checkpoint, the batches of the current epoch already trained on;
        :param totals: and the epoch's running totals, so that the resumed epoch reports the same result.
        :raises CheckpointError: if it cannot be written (the previous checkpoints stay intact).
        """
        path = path or self.checkpoint_path(self.epoch)
        if not self.is_main:
            return path  # under torchrun, rank 0 alone writes
        state = {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            "numpy_rng": _numpy_rng_state(),
            "python_rng": list(random.getstate()[1]),
            "train_config": asdict(self.config),
            "train_utterances": len(self.train_loader.dataset),
            "batches_done": batches_done,
            "epoch_totals": asdict(totals) if totals is not None else {},
            "bad_in_a_row": self._bad_in_a_row,
        }
        return write_checkpoint(state, path)

    def latest_checkpoint(self) -> Path | None:
        """The newer of the last epoch checkpoint and the (mid-epoch) step checkpoint, if any."""
        return latest_checkpoint(self.exp_dir)

    def load_checkpoint(self, path: Path) -> None:
        """Restore a state written by :meth:`save_checkpoint`, mid-epoch ones included.

        Only plain data is loaded (see :func:`asr_s2s.checkpoints.read_checkpoint`).

        :raises CheckpointError: naming the file, if it is unreadable, unsafe or does not fit this model.
        """
        state = read_checkpoint(
            path, required=("model", "optimizer", "scheduler", "epoch", "step", "torch_rng", "numpy_rng", "python_rng")
        )
        load_training_state(
            path, state, "the model built from --config", model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
        )
        try:
            torch.set_rng_state(state["torch_rng"])
            if torch.cuda.is_available():  # as many GPUs as both runs have
                for device, cuda_state in enumerate(state.get("cuda_rng", [])[: torch.cuda.device_count()]):
                    torch.cuda.set_rng_state(cuda_state, device)
            _set_numpy_rng_state(state["numpy_rng"])
            random.setstate((3, tuple(state["python_rng"]), None))
        except (RuntimeError, ValueError, TypeError, KeyError) as exc:
            raise CheckpointError(f"{path}: malformed random-generator state ({exc})") from None
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self._resume_batches = int(state.get("batches_done", 0))
        self._resume_totals = EpochTotals.restore(state.get("epoch_totals")) if state.get("epoch_totals") else None
        self._bad_in_a_row = int(state.get("bad_in_a_row", 0))
        saved = state.get("train_config", {})
        changed = [k for k in _DATA_ORDER_KEYS if k in saved and saved[k] != getattr(self.config, k, saved[k])]
        if state.get("train_utterances", len(self.train_loader.dataset)) != len(self.train_loader.dataset):
            changed.append("the training manifest")
        if changed:
            log.warning("%s: %s changed since this checkpoint; the resumed run will not visit the same batches",
                        path, ", ".join(changed))
        where = f", {self._resume_batches} batches into epoch {self.epoch + 1}" if self._resume_batches else ""
        log.info("resumed from %s (epoch %d, step %d%s)", path, self.epoch, self.step, where)

    def _remove_step_checkpoints(self, keep: Path | None = None) -> None:
        """Delete mid-epoch checkpoints other than ``keep`` (after a newer checkpoint is safely written)."""
        if not self.is_main:
            return
        for old in (self.exp_dir / CHECKPOINT_DIR).glob("step-*.pt"):
            if old != keep:
                old.unlink(missing_ok=True)

    def _maybe_checkpoint_step(self, batches_done: int, totals: EpochTotals) -> None:
        """Every ``checkpoint_every_steps`` optimizer steps, save a mid-epoch checkpoint (only the latest is kept)."""
        every = self.config.checkpoint_every_steps
        if every and self.step % every == 0:
            path = self.save_checkpoint(self.step_checkpoint_path(self.step), batches_done, totals)
            self._remove_step_checkpoints(keep=path)

    def _trim_log(self) -> None:
        """Drop the log rows written after the restored checkpoint: that work is about to be redone."""
        path = self.exp_dir / LOG_FILE
        if not self.is_main or not path.is_file():
            return
        kept = []
        for line in path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            if row.get("kind") == "epoch":
                before = row.get("epoch", 0) <= self.epoch
            elif "batch" in row:  # about one batch (bad_loss, oom): epoch and batch are 1-based
                before = (row.get("epoch", 0), row["batch"]) <= (self.epoch + 1, self._resume_batches)
            else:
                before = row.get("step", 0) <= self.step
            if before:
                kept.append(line + "\n")
        write_text_atomically(path, "".join(kept))

    # -- the loop ----------------------------------------------------------
    def fit(self, resume: bool = False) -> list[EpochResult]:
        """Train until ``config.epochs``; with ``resume``, continue from the latest checkpoint."""
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        latest = self.latest_checkpoint()
        if latest is not None and not resume:
            raise CheckpointError(
                f"{self.exp_dir} already holds a training run (latest checkpoint {latest}); "
                "pass --resume to continue it, or choose another --exp-dir"
            )
        if latest is not None:
            self.load_checkpoint(latest)
            self._trim_log()
            self.history = self._read_history()
            if self.rank:  # the checkpoint holds rank 0's generators; other ranks draw their own masks
                seed_everything(self.config.seed + 1000 * self.rank + self.epoch)
        else:
            seed_everything(self.config.seed + self.rank)
            if self.is_main:
                (self.exp_dir / LOG_FILE).unlink(missing_ok=True)
        results = []
        while self.epoch < self.config.epochs and not self.early_stop():
            results.append(self.train_one_epoch())
            self.save_checkpoint()
            self._remove_step_checkpoints()
        return results

    # -- model selection ---------------------------------------------------
    def best_epoch(self) -> int | None:
        """The finished epoch with the lowest ``config.selection_metric`` (the earliest on ties)."""
        metric = self.config.selection_metric
        scored = [(row[metric], row["epoch"]) for row in self.history if math.isfinite(row[metric])]
        return min(scored)[1] if scored else None

    def early_stop(self) -> bool:
        """True once ``config.early_stopping_patience`` epochs have passed without a better selection metric."""
        patience, best = self.config.early_stopping_patience, self.best_epoch()
        if patience is None or best is None or self.epoch - best < patience:
            return False
        log.info("early stopping after epoch %d: %s has not improved on epoch %d's for %d epochs",
                 self.epoch, self.config.selection_metric, best, self.epoch - best)
        return True

    def _read_history(self) -> list[dict]:
        """Validation results of the epochs up to the restored one, from the JSONL log."""
        rows: dict[int, dict] = {}
        path = self.exp_dir / LOG_FILE
        if path.is_file():
            for line in path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if row.get("kind") == "epoch" and row.get("epoch", 0) <= self.epoch:
                    rows[row["epoch"]] = {k: row[k] for k in ("epoch", "valid_loss", "valid_cer")}
        return [rows[e] for e in sorted(rows)]

    def train_one_epoch(self) -> EpochResult:
        """Train on every batch of the next epoch, validate, log and plot.

        One optimizer step per ``accum_grad`` batches (the last group of an epoch
        may be shorter); each batch's loss is divided by its group's size. Under
        DDP only a group's last batch all-reduces.
        """
        self.model.train()
        self.train_loader.batch_sampler.set_epoch(self.epoch)
        started = time.perf_counter()
        # a mid-epoch checkpoint resumes after the batches it had done, with the epoch's totals so far
        totals = self._resume_totals or EpochTotals()
        done, self._resume_batches, self._resume_totals = self._resume_batches, 0, None
        bar = progress_bar(self._epoch_batches(done), total=len(self.train_loader.batch_sampler), initial=done,
                           desc=f"epoch {self.epoch + 1}/{self.config.epochs}", unit="batch",
                           disable=not self.progress, leave=False)
        accum, n_local = self.config.accum_grad, len(self.train_loader.batch_sampler)
        contributed, out = 0, None  # batches backpropagated since the last step; the last good output
        self.optimizer.zero_grad(set_to_none=True)
        self._augment_failures = {}
        for index, batch in enumerate(bar, start=done):
            totals.failed += self._report_failed(batch)
            self._report_augment_failures(batch)
            group_end = (index + 1) % accum == 0 or index + 1 == n_local
            group_size = min(accum, n_local - index // accum * accum)
            with self.ddp.no_sync() if self.ddp is not None and not group_end else nullcontext():
                result, synced, oom_hit = self._accumulate(batch, index, group_size, group_end, totals)
            if oom_hit:  # an out-of-memory batch drops the group's gradients so far
                contributed = 0
            elif result is not None:
                contributed, out = contributed + 1, result
            if not group_end:
                continue
            grad_norm = self._step(contributed, synced, batch, index, totals)
            contributed = 0
            if grad_norm is None:  # no step: nothing trained in the group, or a non-finite gradient
                continue
            if out is not None:  # None: this rank has had no good batch yet; others have
                self._log_step(bar, out, grad_norm)
            # after the step's log row, so that a resumed run's log holds every step exactly once
            self._maybe_checkpoint_step(index + 1, totals)
        bar.close()
        self.epoch += 1
        return self._finish_epoch(totals, started)

    def _accumulate(self, batch, index: int, group_size: int, group_end: bool, totals: EpochTotals):
        """Forward and backward one batch into the gradients of its group.

        :returns: the model output when the batch was trained on (else None); whether every rank
            had a good last batch of the group (DDP; False otherwise); whether it ran out of memory.
        """
        result, oom_hit = self._guarded(self._forward, batch) if len(batch) else (None, False)
        ok = result is not None and bool(torch.isfinite(result.loss))
        if result is not None and not ok:
            totals.skipped += 1
            self._bad_batch("non-finite loss", result.loss.item(), batch, index)
        synced = self.ddp is not None and group_end and distributed.all_true(ok)
        if self.ddp is not None and group_end and ok and not synced:
            totals.skipped += 1  # another rank's batch failed: every rank drops its last batch of this step
            ok = False
        if ok:
            _, oom_hit = self._guarded(lambda: (result.loss / group_size).backward())
            ok = not oom_hit
        if oom_hit:  # this batch, and the group's gradients so far, are dropped
            totals.oom += 1
            self._out_of_memory(batch, index)
            return None, synced, True
        if not ok:
            return None, synced, False
        self._bad_in_a_row = 0
        totals.batches += 1
        totals.loss_sum += result.loss.item()
        totals.audio_s += batch.audio_seconds
        return result, synced, False

    def _step(self, contributed: int, synced: bool, batch, index: int, totals: EpochTotals) -> torch.Tensor | None:
        """The optimizer step closing a group of batches; returns the gradient norm, or None if no step was taken."""
        if self.ddp is not None and not synced:
            if not distributed.any_rank(contributed > 0):
                return None
            self._all_reduce_gradients()  # the step's earlier batches, which DDP did not reduce
        elif contributed == 0:
            return None
        grad_norm = torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.config.grad_clip)
        if not torch.isfinite(grad_norm):
            totals.skipped += 1
            self.optimizer.zero_grad(set_to_none=True)
            self._bad_batch("non-finite gradient", grad_norm.item(), batch, index)
            return None
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return grad_norm

    def _log_step(self, bar, out, grad_norm: torch.Tensor) -> None:
        """Show the last good batch's loss on the bar; every ``log_interval`` steps, log a row."""
        bar.set_postfix(loss=f"{out.loss.item():.3f}", acc=f"{out.accuracy.item():.2f}", refresh=False)
        if self.step % self.config.log_interval == 0:
            self._log({
                "kind": "step", "step": self.step, "epoch": self.epoch + 1, "loss": out.loss.item(),
                "attention_loss": out.attention_loss.item(),
                "ctc_loss": None if out.ctc_loss is None else out.ctc_loss.item(),
                "accuracy": out.accuracy.item(), "grad_norm": grad_norm.item(), "lr": self.scheduler.get_last_lr()[0],
            })

    def _finish_epoch(self, totals: EpochTotals, started: float) -> EpochResult:
        """Add up every rank's totals, validate, and log, report and plot the epoch."""
        if self.world_size > 1:
            totals = EpochTotals.summed(distributed.all_gather_objects(totals))
        if totals.batches == 0:
            raise TrainingError(
                f"epoch {self.epoch}: no batch could be trained on ({totals.failed} utterance(s) failed to load, "
                f"{totals.skipped} batch(es) had a non-finite loss, {totals.oom} ran out of memory; "
                "see the warnings above)"
            )
        augment_failures = sum(self._augment_failures.values())
        if self.world_size > 1:
            augment_failures = sum(distributed.all_gather_objects(augment_failures))
        if augment_failures:
            log.warning("epoch %d: %d augmentation(s) failed and were skipped for their utterance: %s", self.epoch,
                        augment_failures, ", ".join(f"{k} {v}x" for k, v in sorted(self._augment_failures.items())))
        valid_loss, valid_cer = self.validate()
        wall = time.perf_counter() - started
        result = EpochResult(
            self.epoch, self.step, totals.loss_sum / max(1, totals.batches), valid_loss, valid_cer, totals.audio_s,
            wall, totals.skipped, totals.failed, oom_batches=totals.oom, augment_failures=augment_failures,
        )
        self.history.append({"epoch": self.epoch, "valid_loss": valid_loss, "valid_cer": valid_cer})
        self._log({"kind": "epoch", **asdict(result), "best_epoch": self.best_epoch()})
        log.info(
            "epoch %d: train loss %.3f, valid loss %.3f, valid CER %.2f%%, %.1f audio-s/s",
            self.epoch, result.train_loss, valid_loss, valid_cer, totals.audio_s / wall,
        )
        self._plot()
        return result

    def _forward(self, batch):
        """The training loss of one batch (through DDP under torchrun; bf16 autocast on CUDA)."""
        batch = batch.to(self.device)
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
            return (self.ddp or self.model)(batch.feats, batch.feat_lengths, batch.tokens, batch.token_lengths)

    # -- faults ------------------------------------------------------------
    def _epoch_batches(self, done: int):
        """An iterator over this epoch's batches from the ``done``-th on, drawing nothing from the global RNGs.

        Creating a DataLoader iterator draws a worker seed from torch's global
        generator; that draw is undone, so that a run resumed mid-epoch draws
        exactly the random numbers (dropout, SpecAugment) of an uninterrupted one.
        """
        rng = torch.get_rng_state()
        loader = self.train_loader
        if done:
            loader = DataLoader(
                loader.dataset, batch_sampler=loader.batch_sampler.batches()[done:], collate_fn=loader.collate_fn,
                num_workers=loader.num_workers,
            )
        batches = iter(loader)
        torch.set_rng_state(rng)
        return batches

    @staticmethod
    def _guarded(fn, *args):
        """``(fn(*args), False)``, or ``(None, True)`` if it ran out of GPU memory (the error is gone by then)."""
        try:
            return fn(*args), False
        except RuntimeError as exc:
            if not is_out_of_memory(exc):
                raise
        return None, True

    def _out_of_memory(self, batch, index: int) -> None:
        """Free what an out-of-memory batch left behind, warn, and log it."""
        self.optimizer.zero_grad(set_to_none=True)
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        padded_s = len(batch) * batch.feats.shape[1] / 100
        log.warning(
            "out of memory on epoch %d batch %d (%d utterances, %.0f padded audio-s, e.g. %s); batch skipped. "
            "Lower train.max_batch_seconds if this repeats", self.epoch + 1, index + 1, len(batch), padded_s, batch.ids[0],
        )
        self._log({"kind": "oom", "epoch": self.epoch + 1, "batch": index + 1, "step": self.step, "utterances": batch.ids})

    def _bad_batch(self, what: str, value: float, batch, index: int) -> None:
        """Count, warn and log a batch skipped for a NaN/inf loss or gradient; stop after too many in a row.

        :raises TrainingError: on the ``max_consecutive_bad_losses``-th such batch in a row.
        """
        self._bad_in_a_row += 1
        log.warning(
            "%s (%s) on epoch %d batch %d (utterances %s); batch skipped (%d in a row)",
            what, value, self.epoch + 1, index + 1, ", ".join(batch.ids[:5]), self._bad_in_a_row,
        )
        self._log({
            "kind": "bad_loss", "epoch": self.epoch + 1, "batch": index + 1, "step": self.step, "what": what,
            "value": str(value), "utterances": batch.ids, "in_a_row": self._bad_in_a_row,
        })
        limit = self.config.max_consecutive_bad_losses
        if self._bad_in_a_row >= limit:
            latest = self.latest_checkpoint()
            raise TrainingError(
                f"{self._bad_in_a_row} batches in a row had a non-finite loss or gradient (the last: epoch "
                f"{self.epoch + 1} batch {index + 1}, utterances {', '.join(batch.ids[:5])}); training stopped "
                f"(train.max_consecutive_bad_losses is {limit}). Lower train.lr or check those utterances, then "
                + (f"continue from {latest} with --resume" if latest else "start again")
            )

    def _all_reduce_gradients(self) -> None:
        """Average gradients over ranks by hand (when DDP's own reduction was skipped)."""
        import torch.distributed as dist

        for p in self.model.parameters():
            if p.grad is None:
                p.grad = torch.zeros_like(p)
            dist.all_reduce(p.grad)
            p.grad.div_(self.world_size)

    @torch.inference_mode()
    def validate(self) -> tuple[float, float]:
        """Validation loss (teacher forced) and greedy CER in percent (over every rank's share)."""
        self.model.eval()
        losses, refs, hyps = [], [], []
        tok = self.model.tokenizer
        example = None
        for batch in self.valid_loader:
            self._report_failed(batch)
            if len(batch) == 0:
                continue
            batch = batch.to(self.device)
            with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=self.bf16):
                states, lengths = self.model.encode(batch.feats, batch.feat_lengths)
                out = self.model.loss(states, lengths, batch.tokens, batch.token_lengths)
            states = states.float()
            losses.append(float(out.loss) * len(batch))
            found, attention = greedy_search(self.model.decoder, states, lengths, tok.sos_id, tok.eos_id)
            if example is None:
                text = tok.decode(found[0].tokens)
                weights = attention[0, : len(found[0].tokens) + 1, : int(lengths[0])].float().cpu().numpy()
                example = (batch.ids[0], text, weights)
            refs += batch.texts
            hyps += [tok.decode(h.tokens) for h in found]
        self.model.train()
        if example is not None and self.is_main:
            self._plot_attention(*example)
        if self.world_size > 1:
            shares = distributed.all_gather_objects((sum(losses), refs, hyps))
            losses, refs, hyps = [s[0] for s in shares], [r for s in shares for r in s[1]], [h for s in shares for h in s[2]]
        if not refs:
            return float("nan"), float("nan")
        return sum(losses) / len(refs), error_rates(refs, hyps).cer

    def _report_augment_failures(self, batch) -> None:
        """Warn about the first failure of each ``train.augment`` entry in an epoch; count them all."""
        for utt_id, failure in batch.augment_failures:
            if failure.where not in self._augment_failures:
                log.warning("%s failed on %s and was skipped for it: %s (later failures of this entry are only "
                            "counted)", failure.where, utt_id, failure.reason)
            self._augment_failures[failure.where] = self._augment_failures.get(failure.where, 0) + 1

    def _report_failed(self, batch) -> int:
        for utt_id, reason in batch.failed:
            log.warning("skipping %s: %s", utt_id, reason)
        return len(batch.failed)

    def _log(self, row: dict) -> None:
        if not self.is_main:
            return
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
        if not self.is_main:
            return
        from asr_s2s.plotting import plot_training_curves

        try:
            plot_training_curves(self.exp_dir / LOG_FILE, self.exp_dir / "training_curves.png")
        except Exception as exc:  # noqa: BLE001 - a failed plot must not stop training
            log.warning("could not plot training curves: %s", exc)
