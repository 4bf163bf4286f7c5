"""Training: joint CTC-attention loss, Adam with warm-up and cosine decay, checkpoints.

The loop reads top to bottom: fit, train_one_epoch (_accumulate, _step), _finish_epoch. Beside it:
training_data.py, optimization.py, validation.py, training_state.py (what a checkpoint holds), train_log.py.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from asr_s2s import distributed
from asr_s2s.checkpoints import load_training_state, read_checkpoint, write_checkpoint
from asr_s2s.config import TrainConfig
from asr_s2s.dataset import SpeechDataset
from asr_s2s.errors import CheckpointError, ConfigError, TrainingError
from asr_s2s.experiment import seed_everything
from asr_s2s.model import ASRModel
from asr_s2s.optimization import (
    all_reduce_gradients, autocast, build_optimizer, guarded, is_out_of_memory, log_plan, plan_steps, release_memory,
)
from asr_s2s.progress import progress_bar
from asr_s2s.train_log import TrainLog
from asr_s2s.training_data import (
    count_ctc_infeasible, drop_long_utterances, epoch_batches, report_augment_failures, report_failed, training_loaders,
)
from asr_s2s.training_state import (
    REQUIRED_KEYS, EpochTotals, data_order_changes, epoch_checkpoint_path, latest_checkpoint,
    remove_step_checkpoints, restore_rng_states, resumed_batches, rng_states, step_checkpoint_path,
)
from asr_s2s.validation import merged_scores, validate_share

# importable from here as before they moved
__all__ = ["EpochResult", "EpochTotals", "Trainer", "count_ctc_infeasible", "is_out_of_memory", "latest_checkpoint"]

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
        train_set = drop_long_utterances(train_set, config, announce=self.is_main)  # before any batch is cut
        self.train_loader, self.valid_loader = training_loaders(train_set, valid_set, config, self.rank, self.world_size)
        # each rank's batch, accum_grad and the schedule's length (train.global_batch_seconds: whatever the world size)
        self.plan = plan_steps(config, sum(u.duration for u in train_set.utterances), self.world_size,
                               batches_per_rank=len(self.train_loader.batch_sampler))
        self.steps_per_epoch = self.plan.steps_per_epoch
        self.history: list[dict] = []  # {"epoch", "valid_loss", "valid_cer"} of every finished epoch
        self.optimizer, self.scheduler = build_optimizer(model, config, self.plan.total_steps)
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
        self.train_log = TrainLog(self.exp_dir, enabled=self.is_main, tensorboard=config.tensorboard)

    # -- the loop ----------------------------------------------------------
    def fit(self, resume: bool = False) -> list[EpochResult]:
        """Train until ``config.epochs``; with ``resume``, continue from the latest checkpoint."""
        self.exp_dir.mkdir(parents=True, exist_ok=True)
        if self.is_main:
            log_plan(self.plan, self.config)
        latest = self.latest_checkpoint()
        if latest is not None and not resume:
            raise CheckpointError(
                f"{self.exp_dir} already holds a training run (latest checkpoint {latest}); "
                "pass --resume to continue it, or choose another --exp-dir"
            )
        if latest is not None:
            self.load_checkpoint(latest)
            self.train_log.trim(self.epoch, self._resume_batches, self.step)  # that work is about to be redone
            self.history = self.train_log.history(self.epoch)
            if self.rank:  # the checkpoint holds rank 0's generators; other ranks draw their own masks
                seed_everything(self.config.seed + 1000 * self.rank + self.epoch)
        else:
            seed_everything(self.config.seed + self.rank)
            self.train_log.start_afresh()
        results = []
        while self.epoch < self.config.epochs and not self.early_stop():
            results.append(self.train_one_epoch())
            self.save_checkpoint()
            self._remove_step_checkpoints()
        return results

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
        bar = progress_bar(epoch_batches(self.train_loader, done), total=len(self.train_loader.batch_sampler),
                           initial=done, desc=f"epoch {self.epoch + 1}/{self.config.epochs}", unit="batch",
                           disable=not self.progress, leave=False)
        accum, n_local = self.plan.accum_grad, len(self.train_loader.batch_sampler)
        contributed, out = 0, None  # batches backpropagated since the last step; the last good output
        self.optimizer.zero_grad(set_to_none=True)
        self._augment_failures = {}
        for index, batch in enumerate(bar, start=done):
            totals.failed += report_failed(batch)
            report_augment_failures(batch, self._augment_failures)
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
        result, oom_hit = guarded(self._forward, batch) if len(batch) else (None, False)
        ok = result is not None and bool(torch.isfinite(result.loss))
        if result is not None and not ok:
            totals.skipped += 1
            self._bad_batch("non-finite loss", result.loss.item(), batch, index)
        synced = self.ddp is not None and group_end and distributed.all_true(ok)
        if self.ddp is not None and group_end and ok and not synced:
            totals.skipped += 1  # another rank's batch failed: every rank drops its last batch of this step
            ok = False
        if ok:
            _, oom_hit = guarded(lambda: (result.loss / group_size).backward())
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

    def _forward(self, batch):
        """The training loss of one batch (through DDP under torchrun; bf16 autocast on CUDA)."""
        batch = batch.to(self.device)
        with autocast(self.device, self.bf16):
            return (self.ddp or self.model)(batch.feats, batch.feat_lengths, batch.tokens, batch.token_lengths)

    def _step(self, contributed: int, synced: bool, batch, index: int, totals: EpochTotals) -> torch.Tensor | None:
        """The optimizer step closing a group of batches; returns the gradient norm, or None if no step was taken."""
        if self.ddp is not None and not synced:
            if not distributed.any_rank(contributed > 0):
                return None
            all_reduce_gradients(self.model, self.world_size)  # the step's earlier batches, which DDP did not reduce
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
            self.train_log.write({
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
        self.train_log.write({"kind": "epoch", **asdict(result), "best_epoch": self.best_epoch()})
        log.info(
            "epoch %d: train loss %.3f, valid loss %.3f, valid CER %.2f%%, %.1f audio-s/s",
            self.epoch, result.train_loss, valid_loss, valid_cer, totals.audio_s / wall,
        )
        self.train_log.plot_curves()
        return result

    @torch.inference_mode()
    def validate(self) -> tuple[float, float]:
        """Validation loss (teacher forced) and greedy CER in percent (over every rank's share)."""
        share = validate_share(self.model, self.valid_loader, self.device, self.bf16)
        if share.example is not None and self.is_main:
            self.train_log.plot_attention(*share.example, epoch=self.epoch)
        return merged_scores(share, self.world_size)

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

    # -- checkpoints (what they hold: asr_s2s/training_state.py) ----------
    def checkpoint_path(self, epoch: int) -> Path:
        return epoch_checkpoint_path(self.exp_dir, epoch)

    def step_checkpoint_path(self, step: int) -> Path:
        return step_checkpoint_path(self.exp_dir, step)

    def latest_checkpoint(self) -> Path | None:
        """The newer of the last epoch checkpoint and the (mid-epoch) step checkpoint, if any."""
        return latest_checkpoint(self.exp_dir)

    def save_checkpoint(self, path: Path | None = None, batches_done: int = 0, totals: EpochTotals | None = None) -> Path:
        """Write the full training state atomically: a crash mid-write keeps the old file.

        :param path: where; by default the checkpoint of the last finished epoch, ``epoch-N.pt``.
        :param batches_done: for a mid-epoch checkpoint, the batches of the current epoch already trained on;
        :param totals: and the epoch's running totals (every rank's, added up), so that the resumed epoch reports
            the same result.
        :raises CheckpointError: if it cannot be written (the previous checkpoints stay intact). Under torchrun
            rank 0 alone writes, and every rank waits for it and raises at once if it failed.
        """
        path = path or self.checkpoint_path(self.epoch)
        distributed.on_main(lambda: write_checkpoint(self._state(batches_done, totals), path), lambda error: CheckpointError(
            f"{path}: rank 0 could not save this checkpoint, so every rank stops ({error})"))
        return path

    def _state(self, batches_done: int, totals: EpochTotals | None) -> dict:
        """The full training state, as :meth:`save_checkpoint` writes it."""
        return {
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            **rng_states(),  # torch_rng, cuda_rng, numpy_rng, python_rng
            "train_config": asdict(self.config),
            "train_utterances": len(self.train_loader.dataset),
            "batches_done": batches_done,
            "epoch_totals": asdict(totals) if totals is not None else {},
            "bad_in_a_row": self._bad_in_a_row,
            "world_size": self.world_size,
            "accum_grad": self.plan.accum_grad,
        }

    def load_checkpoint(self, path: Path) -> None:
        """Restore a state written by :meth:`save_checkpoint`, mid-epoch ones included.

        Only plain data is loaded (see :func:`asr_s2s.checkpoints.read_checkpoint`).

        :raises CheckpointError: naming the file, if it is unreadable, unsafe or does not fit this model.
        """
        state = read_checkpoint(path, required=REQUIRED_KEYS)
        load_training_state(
            path, state, "the model built from --config", model=self.model, optimizer=self.optimizer, scheduler=self.scheduler
        )
        restore_rng_states(path, state)
        self.epoch, self.step = int(state["epoch"]), int(state["step"])
        self._resume_batches = resumed_batches(state, self.config, self.plan.accum_grad)
        # the saved totals are every rank's together: rank 0 alone carries them on, or the epoch counts them W times
        self._resume_totals = EpochTotals.restore(state["epoch_totals"]) if state.get("epoch_totals") and self.is_main else None
        self._bad_in_a_row = int(state.get("bad_in_a_row", 0))
        changed = data_order_changes(state, self.config, len(self.train_loader.dataset), self.world_size)
        if changed:
            log.warning("%s: %s changed since this checkpoint; the resumed run will not visit the same batches",
                        path, ", ".join(changed))
        where = f", {self._resume_batches} batches into epoch {self.epoch + 1}" if self._resume_batches else ""
        log.info("resumed from %s (epoch %d, step %d%s)", path, self.epoch, self.step, where)

    def _maybe_checkpoint_step(self, batches_done: int, totals: EpochTotals) -> None:
        """Every ``checkpoint_every_steps`` optimizer steps, save a mid-epoch checkpoint (only the latest is kept)."""
        every = self.config.checkpoint_every_steps
        if every and self.step % every == 0:
            everyone = EpochTotals.summed(distributed.all_gather_objects(totals))  # all ranks' totals so far
            path = self.save_checkpoint(self.step_checkpoint_path(self.step), batches_done, everyone)
            self._remove_step_checkpoints(keep=path)

    def _remove_step_checkpoints(self, keep: Path | None = None) -> None:
        """Delete mid-epoch checkpoints other than ``keep`` (after a newer checkpoint is safely written)."""
        if self.is_main:
            remove_step_checkpoints(self.exp_dir, keep)

    # -- skipped batches ---------------------------------------------------
    def _out_of_memory(self, batch, index: int) -> None:
        """Free what an out-of-memory batch left behind, warn, and log it."""
        release_memory(self.optimizer)
        padded_s = len(batch) * batch.feats.shape[1] / 100
        log.warning(
            "out of memory on epoch %d batch %d (%d utterances, %.0f padded audio-s, e.g. %s); batch skipped. "
            "Lower train.max_batch_seconds if this repeats", self.epoch + 1, index + 1, len(batch), padded_s, batch.ids[0],
        )
        self.train_log.write({
            "kind": "oom", "epoch": self.epoch + 1, "batch": index + 1, "step": self.step, "utterances": batch.ids,
        })

    def _bad_batch(self, what: str, value: float, batch, index: int) -> None:
        """Count, warn and log a batch skipped for a NaN/inf loss or gradient; stop after too many in a row.

        :raises TrainingError: on the ``max_consecutive_bad_losses``-th such batch in a row.
        """
        self._bad_in_a_row += 1
        log.warning(
            "%s (%s) on epoch %d batch %d (utterances %s); batch skipped (%d in a row)",
            what, value, self.epoch + 1, index + 1, ", ".join(batch.ids[:5]), self._bad_in_a_row,
        )
        self.train_log.write({
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
