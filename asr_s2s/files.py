"""Atomic file writes: readers never see a half-written file."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` through a temporary sibling and ``os.replace``.

    The parent folder is created; an interrupted write leaves the old file (or
    none) and no temporary file behind.
    """
    return write_atomically(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary sibling)``, then ``os.replace`` it onto ``path``.

    The parent folder is created; an interrupted write leaves the old file (or
    none) and no temporary file behind. The temporary name holds the process id,
    so processes writing the same file at once do not write into each other's.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return path
