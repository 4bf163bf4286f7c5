"""Running the ffmpeg and ffprobe binaries on untrusted audio, on a leash.

* They open only the file they are given (``file:`` + its absolute path, so a name
  such as ``concat:a.wav`` or ``http:x`` is a file name, not a protocol) or a pipe we
  feed: ``-protocol_whitelist file,pipe``, so nothing inside a file (a playlist, a
  reference) reaches the network.
* Each block of output must arrive within :data:`FFMPEG_TIMEOUT_S` of asking for it
  (reading a file; a stream fed from stdin waits for its writer), or the process is killed.
* Their error output is read as it comes and only its last :data:`STDERR_TAIL_BYTES` kept,
  for the message; a flood of warnings costs no memory.

Failures raise :class:`FfmpegError`, whose message is the reason (the last line of
the error output, or the time-out); :mod:`asr_s2s.audio` names the file.
"""

from __future__ import annotations

import os
import select
import shutil
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

FFMPEG_TIMEOUT_S = 60.0  # seconds ffmpeg or ffprobe may take to deliver each block of output (of a file) before it is killed
STDERR_TAIL_BYTES = 4096  # bytes at the end of their error output kept for the message; the rest is read and dropped
PROTOCOLS = "file,pipe"  # the only protocols they may open: the named local file, or the pipe we feed
PROBE_OUTPUT_BYTES = 4096  # ffprobe's answer (a line of numbers) is never longer
FEED_BYTES = 1 << 16  # bytes of a stream copied to ffmpeg's stdin at a time


class FfmpegError(Exception):
    """ffmpeg or ffprobe failed, timed out or is not installed; the message says why."""


def _input_url(source: Path | None) -> str:
    return "pipe:0" if source is None else "file:" + os.path.abspath(source)


class _Process:
    """A child process whose stdout is read against a deadline and whose stderr is drained to a bounded tail.

    ``feed``: a binary file object copied to its stdin by a thread (else stdin is /dev/null).
    Use it as a context manager: leaving kills the process if it still runs.
    """

    def __init__(self, command: list[str], feed: BinaryIO | None = None) -> None:
        self.name = Path(command[0]).name
        self.tail = b""
        self.proc = subprocess.Popen(
            command, stdin=subprocess.PIPE if feed is not None else subprocess.DEVNULL,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )
        self.threads = [threading.Thread(target=self._drain, daemon=True, name=f"{self.name}-stderr")]
        if feed is not None:
            self.threads.append(threading.Thread(target=self._feed, args=(feed,), daemon=True, name=f"{self.name}-stdin"))
        for thread in self.threads:
            thread.start()

    def _drain(self) -> None:
        fd = self.proc.stderr.fileno()
        try:
            while chunk := os.read(fd, 1 << 16):
                self.tail = (self.tail + chunk)[-STDERR_TAIL_BYTES:]
        except OSError:
            pass

    def _feed(self, source: BinaryIO) -> None:
        try:
            while chunk := source.read(FEED_BYTES):
                self.proc.stdin.write(chunk)
        except (OSError, ValueError):  # ffmpeg stopped reading (done, failed or killed), or the source failed
            pass
        finally:
            try:
                self.proc.stdin.close()
            except OSError:
                pass

    def read(self, size: int, timeout_s: float | None) -> bytes:
        """Up to ``size`` bytes of stdout, less only at its end.

        :raises FfmpegError: if they do not all arrive within ``timeout_s`` (None: no limit).
        """
        fd, parts, got = self.proc.stdout.fileno(), [], 0
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        while got < size:
            wait = None if deadline is None else deadline - time.monotonic()
            if wait is not None and (wait <= 0 or not select.select([fd], [], [], wait)[0]):
                self.kill()
                raise FfmpegError(f"{self.name} timed out after {timeout_s:g} s")
            chunk = os.read(fd, size - got)
            if not chunk:
                break
            parts.append(chunk)
            got += len(chunk)
        return b"".join(parts)

    def finish(self, timeout_s: float | None) -> None:
        """Wait for the exit; :raises FfmpegError: with the last line of the error output unless it is 0."""
        try:
            code = self.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise FfmpegError(f"{self.name} timed out after {timeout_s:g} s") from None
        self.threads[0].join(1.0)
        if code != 0:
            raise FfmpegError(self.reason(f"exit code {code}"))

    def reason(self, default: str) -> str:
        lines = self.tail.decode(errors="replace").strip().splitlines()
        return lines[-1].strip() if lines else default

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> _Process:
        return self

    def __exit__(self, *exc_info) -> None:
        self.kill()
        for thread in self.threads:
            thread.join(1.0)
        self.proc.stdout.close()
        if not self.threads[0].is_alive():  # else a grandchild holds the pipe open: its reader closes nothing under it
            self.proc.stderr.close()


def probe(path: Path) -> tuple[int, int] | None:
    """``(sample rate in Hz, channels)`` of the first audio stream of a file, from its header; None without ffprobe.

    :raises FfmpegError: if ffprobe fails or times out, or the file holds no audio stream.
    """
    exe = shutil.which("ffprobe")
    if exe is None:
        return None
    command = [
        exe, "-v", "error", "-protocol_whitelist", PROTOCOLS, "-select_streams", "a:0",
        "-show_entries", "stream=sample_rate,channels", "-of", "csv=p=0", _input_url(path),
    ]
    with _Process(command) as proc:
        answer = proc.read(PROBE_OUTPUT_BYTES, FFMPEG_TIMEOUT_S)
        proc.finish(FFMPEG_TIMEOUT_S)
    fields = answer.decode(errors="replace").strip().splitlines()[:1]
    values = fields[0].split(",") if fields else []
    if len(values) < 2 or not all(v.strip().isdigit() for v in values[:2]):
        raise FfmpegError("no audio stream")
    rate, channels = int(values[0]), int(values[1])  # csv order: sample_rate, channels
    return rate, channels


def decode(source: Path | BinaryIO, sample_rate_hz: int, block_samples: int) -> Iterator[np.ndarray]:
    """A file (a path) or a stream (a binary file object, fed through a pipe) as mono float32 blocks
    of ``block_samples`` at ``sample_rate_hz``, downmixed and resampled by ffmpeg.

    :raises FfmpegError: if ffmpeg is not installed, fails, or (reading a file) stalls for
        :data:`FFMPEG_TIMEOUT_S` on a block.
    """
    exe = shutil.which("ffmpeg")
    if exe is None:
        raise FfmpegError("ffmpeg is not installed (it reads this format)")
    path = source if isinstance(source, Path) else None
    command = [
        exe, "-nostdin", "-v", "error", "-protocol_whitelist", PROTOCOLS, "-i", _input_url(path),
        "-vn", "-ac", "1", "-ar", str(sample_rate_hz), "-f", "f32le", "-",
    ]
    timeout_s = FFMPEG_TIMEOUT_S if path is not None else None  # a stream waits for whoever writes it
    with _Process(command, feed=None if path is not None else source) as proc:
        while data := proc.read(4 * block_samples, timeout_s):
            yield np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4").astype(np.float32)
        proc.finish(timeout_s)
