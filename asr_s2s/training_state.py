"""What a training checkpoint holds besides the weights: the run's place, every random generator, an
unfinished epoch's running totals; where a run's checkpoints lie, and which one a resumed run starts from.

Writing and reading the files safely (atomically; plain data only) is :mod:`asr_s2s.checkpoints`;
:class:`asr_s2s.trainer.Trainer` saves and loads the state with these pieces.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch

from asr_s2s.checkpoints import read_checkpoint
from asr_s2s.config import TrainConfig
from asr_s2s.errors import CheckpointError
from asr_s2s.experiment import CHECKPOINT_DIR

# the keys every training checkpoint holds (mid-epoch ones add batches_done, epoch_totals, bad_in_a_row)
REQUIRED_KEYS = ("model", "optimizer", "scheduler", "epoch", "step", "torch_rng", "numpy_rng", "python_rng")

# train config keys that decide which batches an epoch visits, in which order
DATA_ORDER_KEYS = ("seed", "max_batch_seconds", "max_batch_size", "sortagrad_epochs", "accum_grad", "global_batch_seconds",
                   "max_input_frames", "max_output_chars")
# with train.global_batch_seconds, the step batches do not depend on the per-rank cap, accum_grad or the ranks
GLOBAL_ORDER_KEYS = ("seed", "sortagrad_epochs", "global_batch_seconds", "max_input_frames", "max_output_chars")


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


# -- random generators -----------------------------------------------------
def rng_states() -> dict:
    """Every generator a run draws from (torch's, CUDA's, numpy's, Python's), as checkpoint keys."""
    return {
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy_rng": _numpy_rng_state(),
        "python_rng": list(random.getstate()[1]),
    }


def restore_rng_states(path: Path, state: dict) -> None:
    """Set every generator from a state holding :func:`rng_states`' keys.

    :raises CheckpointError: naming ``path``, if a saved generator state is malformed.
    """
    try:
        torch.set_rng_state(state["torch_rng"])
        if torch.cuda.is_available():  # as many GPUs as both runs have
            for device, cuda_state in enumerate(state.get("cuda_rng", [])[: torch.cuda.device_count()]):
                torch.cuda.set_rng_state(cuda_state, device)
        _set_numpy_rng_state(state["numpy_rng"])
        random.setstate((3, tuple(state["python_rng"]), None))
    except (RuntimeError, ValueError, TypeError, KeyError) as exc:
        raise CheckpointError(f"{path}: malformed random-generator state ({exc})") from None


def _numpy_rng_state() -> dict:
    """numpy's global RNG state as tensors and numbers (loadable with ``weights_only``)."""
    kind, key, pos, has_gauss, cached = np.random.get_state()
    return {"key": torch.from_numpy(key.astype(np.int64)), "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)}


def _set_numpy_rng_state(state: dict) -> None:
    np.random.set_state(("MT19937", state["key"].numpy().astype(np.uint32), state["pos"], state["has_gauss"], state["cached"]))


def data_order_changes(state: dict, config: TrainConfig, train_utterances: int, world_size: int = 1) -> list[str]:
    """What changed since ``state`` was saved that makes a resumed run visit other batches than the saved one would."""
    saved = state.get("train_config", {})
    keys = DATA_ORDER_KEYS if config.global_batch_seconds is None else GLOBAL_ORDER_KEYS
    defaults = {f.name: f.default for f in fields(TrainConfig)}  # what a run saved before the key existed did
    changed = [k for k in keys if saved and saved.get(k, defaults[k]) != getattr(config, k)]
    if state.get("train_utterances", train_utterances) != train_utterances:
        changed.append("the training manifest")
    if config.global_batch_seconds is None and state.get("world_size", world_size) != world_size:
        changed.append("the number of ranks")
    return changed


def resumed_batches(state: dict, config: TrainConfig, accum_grad: int) -> int:
    """The batches of the unfinished epoch that this rank has already trained on, by ``state``.

    With ``train.global_batch_seconds`` a mid-epoch checkpoint lies between two steps, and every step
    is ``accum_grad`` batches on every rank: on another number of ranks the run goes on at the same step.
    """
    done = int(state.get("batches_done", 0))
    saved_accum = state.get("accum_grad")
    if config.global_batch_seconds is None or not saved_accum or not done:
        return done
    return done // int(saved_accum) * accum_grad


# -- the files of a run ----------------------------------------------------
def epoch_checkpoint_path(exp_dir: Path, epoch: int) -> Path:
    return exp_dir / CHECKPOINT_DIR / f"epoch-{epoch}.pt"


def step_checkpoint_path(exp_dir: Path, step: int) -> Path:
    return exp_dir / CHECKPOINT_DIR / f"step-{step}.pt"


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


def remove_step_checkpoints(exp_dir: Path, keep: Path | None = None) -> None:
    """Delete mid-epoch checkpoints other than ``keep`` (after a newer checkpoint is safely written)."""
    for old in (exp_dir / CHECKPOINT_DIR).glob("step-*.pt"):
        if old != keep:
            old.unlink(missing_ok=True)
