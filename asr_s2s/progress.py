"""Progress bars that suit where stderr goes.

On a terminal, :func:`progress_bar` is a plain tqdm bar. Off a terminal (a
log file, a pipe, CI), a redrawn bar would write a ``\\r`` frame per update
into the file; there it prints one whole line every ``LOG_INTERVAL_S``
seconds instead, and one when the bar closes.
"""

from __future__ import annotations

import sys
from typing import Any, TextIO

from tqdm import tqdm

LOG_INTERVAL_S = 30.0  # seconds between progress lines when stderr is not a terminal


class _LineWriter:
    """A file for tqdm that turns each redraw (``\\r`` + bar) into one line of its own."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def write(self, text: str) -> int:
        line = text.replace("\r", "").rstrip()
        if line:
            self.stream.write(line + "\n")
        return len(text)

    def flush(self) -> None:
        self.stream.flush()


def on_terminal(stream: TextIO | None = None) -> bool:
    """Whether ``stream`` (default: stderr) is an interactive terminal."""
    stream = sys.stderr if stream is None else stream
    try:
        return stream.isatty()
    except (AttributeError, ValueError):  # no isatty, or closed
        return False


def progress_bar(iterable: Any = None, **kwargs: Any) -> tqdm:
    """``tqdm(iterable, **kwargs)`` on stderr: a live bar on a terminal, a line every ``LOG_INTERVAL_S`` s off one."""
    if not on_terminal():
        kwargs.setdefault("file", _LineWriter(sys.stderr))
        kwargs.setdefault("mininterval", LOG_INTERVAL_S)
        kwargs.setdefault("maxinterval", LOG_INTERVAL_S * 4)
        kwargs.setdefault("ascii", True)
    return tqdm(iterable, **kwargs)
