"""A training run's record: ``EXP_DIR/train_log.jsonl`` (one JSON row per logged step, per epoch and per
skipped batch), mirrored to TensorBoard; the training curves and attention plots drawn from it; and,
on resume, the rows cut back to the checkpoint and the validation history read from them.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from asr_s2s.experiment import LOG_FILE
from asr_s2s.files import write_text_atomically

log = logging.getLogger("asr_s2s.trainer")  # a training run's messages keep the trainer's logger name


class TrainLog:
    """The log of the run in ``exp_dir``. Only an ``enabled`` log writes (under torchrun, rank 0's)."""

    def __init__(self, exp_dir: Path, enabled: bool, tensorboard: bool = False) -> None:
        self.exp_dir = exp_dir
        self.path = exp_dir / LOG_FILE
        self.enabled = enabled
        self._tensorboard = None
        if tensorboard and enabled:
            from torch.utils.tensorboard import SummaryWriter  # needs the [tensorboard] extra

            self._tensorboard = SummaryWriter(str(exp_dir / "tensorboard"))

    def write(self, row: dict) -> None:
        """Append ``row`` (its ``kind`` names what it is about); float values also go to TensorBoard."""
        if not self.enabled:
            return
        with self.path.open("a") as handle:
            handle.write(json.dumps(row) + "\n")
        if self._tensorboard is not None:
            for key, value in row.items():
                if isinstance(value, float) and key not in ("step", "epoch"):
                    self._tensorboard.add_scalar(f"{row['kind']}/{key}", value, row["step"])

    def start_afresh(self) -> None:
        """Remove the log of an earlier run (a fresh run starts an empty one)."""
        if self.enabled:
            self.path.unlink(missing_ok=True)

    def trim(self, epoch: int, batches_done: int, step: int) -> None:
        """Drop the rows written after a restored checkpoint (``epoch`` finished epochs, ``batches_done``
        batches into the next, ``step`` optimizer steps): that work is about to be redone."""
        if not self.enabled or not self.path.is_file():
            return
        kept = []
        for line in self.path.read_text().splitlines():
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short by the crash
            if row.get("kind") == "epoch":
                before = row.get("epoch", 0) <= epoch
            elif "batch" in row:  # about one batch (bad_loss, oom): epoch and batch are 1-based
                before = (row.get("epoch", 0), row["batch"]) <= (epoch + 1, batches_done)
            else:
                before = row.get("step", 0) <= step
            if before:
                kept.append(line + "\n")
        write_text_atomically(self.path, "".join(kept))

    def history(self, epoch: int) -> list[dict]:
        """Validation results (``{"epoch", "valid_loss", "valid_cer"}``) of the epochs up to ``epoch``; every rank reads them."""
        rows: dict[int, dict] = {}
        if self.path.is_file():
            for line in self.path.read_text().splitlines():
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line cut short by a crash
                if row.get("kind") == "epoch" and row.get("epoch", 0) <= epoch:
                    rows[row["epoch"]] = {k: row[k] for k in ("epoch", "valid_loss", "valid_cer")}
        return [rows[e] for e in sorted(rows)]

    def plot_curves(self) -> None:
        """``EXP_DIR/training_curves.png`` from the log; a failed plot only warns."""
        if not self.enabled:
            return
        from asr_s2s.plotting import plot_training_curves

        try:
            plot_training_curves(self.path, self.exp_dir / "training_curves.png")
        except Exception as exc:  # noqa: BLE001 - a failed plot must not stop training
            log.warning("could not plot training curves: %s", exc)

    def plot_attention(self, utt_id: str, text: str, weights: np.ndarray, epoch: int) -> None:
        """``EXP_DIR/attention/epoch-N.png``: one validation utterance's attention after ``epoch``; a failed plot only warns."""
        from asr_s2s.plotting import plot_attention

        folder = self.exp_dir / "attention"
        folder.mkdir(exist_ok=True)
        title = f"{utt_id}, epoch {epoch}: {text[:60]}"
        try:
            plot_attention(weights, folder / f"epoch-{epoch}.png", title=title, labels=text)
        except Exception as exc:  # noqa: BLE001 - a failed plot must not stop training
            log.warning("could not plot attention: %s", exc)
