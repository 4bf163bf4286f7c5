"""Training checkpoints on disk: written atomically, read without running any code.

A checkpoint is a ``torch.save`` file of plain data: tensors, numbers,
strings, lists and dicts. :func:`read_checkpoint` loads it with
``weights_only=True``, so a file that holds anything else (a pickled class or
function, which could run code as it is unpickled) is refused with
:class:`~asr_s2s.errors.CheckpointError` before any of it runs.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import warnings
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from asr_s2s.errors import CheckpointError
from asr_s2s.files import write_atomically

log = logging.getLogger(__name__)

def write_checkpoint(state: dict[str, Any], path: str | os.PathLike) -> Path:
    """Write ``state`` to ``path`` through a temporary sibling and ``os.replace``.

    A crash (or ``kill -9``) at any moment leaves either the old file or the
    new one at ``path``, never a mix.

    :raises CheckpointError: naming the file, when it cannot be written (a full disk, permissions).
    """
    path = Path(path)
    try:
        return write_atomically(path, lambda tmp: torch.save(state, tmp))
    except OSError as exc:
        kept = "the previous checkpoints are intact" if path.parent.is_dir() else "nothing was written"
        raise CheckpointError(f"{path}: could not write checkpoint ({exc}); {kept}") from None


def read_checkpoint(path: str | os.PathLike, required: Iterable[str] = (), mmap: bool = False) -> dict[str, Any]:
    """Load a checkpoint written by :func:`write_checkpoint`; nothing in it is run.

    :param required: keys the state must hold.
    :param mmap: map tensors lazily (cheap when only the small fields are read).
    :raises CheckpointError: naming the file, if it is missing, truncated or
        corrupt, holds objects other than plain data (refused unread), or lacks
        a required key.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        with warnings.catch_warnings():  # e.g. torch's note on pickle protocols of foreign files
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{path}: refused to load: the file holds {_what_was_refused(exc)}, not only tensors and plain data, "
            "and unpickling it could run code. asr-s2s loads only the checkpoints it writes; "
            "do not resume from a file of unknown origin"
        ) from None
    except Exception as exc:  # noqa: BLE001 - zip, pickle and storage errors all mean an unreadable file
        raise CheckpointError(
            f"{path}: unreadable checkpoint, truncated or corrupt ({type(exc).__name__}: {_first_line(exc)}). "
            "Delete it to resume from the checkpoint before it"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: not an asr-s2s checkpoint (it holds a {type(state).__name__}, not a dict)")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(f"{path}: not an asr-s2s checkpoint of this kind; missing key(s) {', '.join(missing)}")
    return state


def load_training_state(path: str | os.PathLike, state: dict[str, Any], what: str, **parts: Any) -> None:
    """Load ``state[name]`` into each of ``parts`` (modules, optimizers, schedulers: anything with ``load_state_dict``).

    :param path: the checkpoint ``state`` was read from, for the error.
    :param what: what the parts were built from, e.g. "the model built from --config".
    :raises CheckpointError: naming the file, if a part's saved state does not fit it.
    """
    try:
        for name, part in parts.items():
            part.load_state_dict(state[name])
    except (RuntimeError, ValueError, KeyError) as exc:
        detail = str(exc).split("\n", 1)[-1].strip()
        raise CheckpointError(f"{path}: does not match {what}: {detail}") from None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0].split(". ")[0] if text else "no detail"


def _what_was_refused(exc: BaseException) -> str:
    """'GLOBAL builtins.exec' and the like, from torch's long weights-only message."""
    found = re.search(r"Unsupported (?:global: )?(GLOBAL \S+|operand \d+)", str(exc))
    return f"a pickled object ({found.group(1)})" if found else "pickled objects"
