"""Resumable, checksummed downloads of corpus archives over HTTP(S), with the standard library.

A file is fetched into ``NAME.part`` beside its destination. An interrupted
download (a dropped connection, a killed process) resumes from the bytes
already on disk with an HTTP ``Range`` request; a server that ignores
``Range`` makes it start over. Only a file whose MD5 matches the published sum
is renamed to its final name; a mismatch deletes the download, and every
error names the file.

A mirror is not trusted to behave: a transfer slower than ``min_speed``
(bytes/s, measured over ``timeout_s``) counts as broken off and is resumed;
``deadline_s`` bounds the whole download; a file is never written past the
size the server announced, nor past ``max_bytes``, nor when the announced
size exceeds the free disk space. HTTP 429 and 5xx are retried with
exponential back-off (a ``Retry-After`` is honoured, up to
``max_retry_wait_s``); other 4xx and every disk error (full, read-only,
permission denied) fail at once, naming the URL or the path.
"""

from __future__ import annotations

import errno
import hashlib
import http.client
import logging
import os
import re
import shutil
import socket
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path

from asr_s2s.progress import progress_bar

from asr_s2s.errors import AsrS2SError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
USER_AGENT = "asr-s2s-download/1"
DEFAULT_MAX_BYTES = 64 << 30  # LibriSpeech's largest archive (train-other-500) is about 30 GB
DEFAULT_MIN_SPEED = 1024  # bytes/s, averaged over timeout_s
DEFAULT_MAX_RETRY_WAIT_S = 300.0
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_NETWORK_ERRORS = (http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError, urllib.error.URLError, OSError)
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*([kmgt]?)i?b?", re.IGNORECASE)


class DownloadError(AsrS2SError):
    """A download failed for good: the server refused it, it kept breaking off, or its checksum is wrong."""


class _Interrupted(Exception):
    """The body stopped short of its announced size, or came too slowly (retried)."""


class _Unavailable(Exception):
    """HTTP 429 or 5xx (retried after ``retry_after`` seconds if the server said so, else with back-off)."""

    def __init__(self, code: int, reason: str, retry_after: float | None) -> None:
        super().__init__(f"HTTP {code} {reason}")
        self.code, self.reason, self.retry_after = code, reason, retry_after


@dataclass(frozen=True)
class Downloaded:
    """The outcome for one file."""

    path: Path
    fetched_bytes: int  # bytes transferred by this call (0 when the file was already there)
    resumed: bool  # True if a partial download was continued


@dataclass
class _Job:
    """One file's download: where from, where to, and the limits it runs under."""

    url: str
    part: Path
    name: str
    timeout_s: float
    min_speed: float
    max_bytes: int
    deadline: float | None  # time.monotonic() by which the whole download must be done
    deadline_s: float | None
    progress: bool

    def have(self) -> int:
        return self.part.stat().st_size if self.part.is_file() else 0

    def socket_timeout(self) -> float:
        return self.timeout_s if self.deadline is None else max(0.01, min(self.timeout_s, self.left()))

    def left(self) -> float:
        return float("inf") if self.deadline is None else self.deadline - time.monotonic()

    def past_deadline(self) -> DownloadError:
        return DownloadError(
            f"{self.name}: the download from {self.url} did not finish within the {self.deadline_s:g} s deadline; "
            f"{self.have()} bytes are kept in {self.part} and the next run resumes from there "
            f"(allow more time with --deadline, or use a faster mirror)")


def md5sum(path: str | os.PathLike) -> str:
    """Hex MD5 of a file, read in 1 MiB blocks."""
    digest = hashlib.md5()  # noqa: S324 - checks the publisher's checksum, not a security measure
    with open(path, "rb") as handle:
        while block := handle.read(CHUNK_BYTES):
            digest.update(block)
    return digest.hexdigest()


def read_md5sums(path: str | os.PathLike) -> dict[str, str]:
    """Parse an ``md5sum``-style file (``HEX  NAME`` per line; ``#`` starts a comment).

    :raises DownloadError: naming the file and line of a malformed entry.
    """
    sums: dict[str, str] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as exc:
        raise DownloadError(f"{path}: cannot read checksum file: {exc.strerror}") from None
    for number, line in enumerate(lines, 1):
        line = line.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) != 2 or not re.fullmatch(r"[0-9a-fA-F]{32}", parts[0]):
            raise DownloadError(f"{path}:{number}: expected 'MD5  FILENAME', got {line!r}")
        sums[parts[1].lstrip("*")] = parts[0].lower()
    return sums


def parse_size(text: str) -> int:
    """Bytes from ``123``, ``500M``, ``40G``, ``1.5TiB`` (powers of 1024). :raises ValueError: on anything else."""
    match = _SIZE.fullmatch(text.strip())
    if not match:
        raise ValueError(f"expected a size such as 500M or 40G, got {text!r}")
    return int(float(match.group(1)) * 1024 ** " kmgt".index(match.group(2).lower() or " "))


def download(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    retries: int = 5,
    retry_wait_s: float = 2.0,
    timeout_s: float = 60.0,
    progress: bool = True,
    *,
    min_speed: float = DEFAULT_MIN_SPEED,
    deadline_s: float | None = None,
    max_bytes: int = DEFAULT_MAX_BYTES,
    max_retry_wait_s: float = DEFAULT_MAX_RETRY_WAIT_S,
) -> Downloaded:
    """Fetch ``url`` to ``dest``, resuming a partial ``dest.part`` and checking ``md5``.

    An existing ``dest`` whose MD5 matches is kept without any request.

    :param retries: how many times a broken-off transfer (or an HTTP 429/5xx) is retried before giving
        up (the partial file is kept, so that a later call resumes it).
    :param retry_wait_s: seconds before the first retry; doubled each time (a server's ``Retry-After``
        replaces it); no wait is longer than ``max_retry_wait_s``.
    :param timeout_s: seconds a socket may stay silent, and the window over which ``min_speed``
        (bytes/s; 0 turns it off) is measured.
    :param deadline_s: seconds the whole download may take, retries included (None: no limit).
    :param max_bytes: the most bytes a file may have, whatever the server says.
    :raises DownloadError: naming the file: an HTTP error, too many broken transfers, a deadline, a size
        over the cap or the free space, a disk error, or an MD5 mismatch (the corrupt file is deleted).
    """
    started = time.monotonic()
    dest = Path(dest)
    if dest.is_file():
        if md5 is None or md5sum(dest) == md5.lower():
            log.info("%s: already downloaded%s", dest, "" if md5 is None else ", checksum OK")
            return Downloaded(dest, 0, False)
        log.warning("%s: checksum does not match the published one; fetching it again", dest)
        with _disk(dest):
            dest.unlink()
    with _disk(dest.parent):
        dest.parent.mkdir(parents=True, exist_ok=True)
    job = _Job(url, dest.with_name(dest.name + ".part"), dest.name, timeout_s, min_speed, max_bytes,
               None if deadline_s is None else started + deadline_s, deadline_s, progress)
    resumed = job.have() > 0
    fetched, resumed = _fetch_with_retries(job, retries, retry_wait_s, max_retry_wait_s, resumed)
    if md5 is not None:
        found = md5sum(job.part)
        if found != md5.lower():
            job.part.unlink()
            raise DownloadError(
                f"{job.name}: MD5 {found} does not match the published {md5.lower()}; "
                f"the corrupt download was deleted (run again to fetch it anew)"
            )
    with _disk(dest):
        os.replace(job.part, dest)
    return Downloaded(dest, fetched, resumed)


def _fetch_with_retries(job: _Job, retries: int, wait: float, max_wait: float, resumed: bool) -> tuple[int, bool]:
    """Request until the body is whole; returns (bytes fetched, whether a partial file was continued)."""
    failures = 0
    while True:
        if job.left() <= 0:
            raise job.past_deadline()
        try:
            return _fetch(job), resumed
        except _Deadline:
            raise job.past_deadline() from None
        except urllib.error.HTTPError as exc:
            exc.close()
            if exc.code != 429 and exc.code < 500:
                raise DownloadError(f"{job.name}: {job.url} answered HTTP {exc.code} {exc.reason}; this is not "
                                    f"retried: check the URL (--base-url) and the file name") from None
            failure: Exception = _Unavailable(exc.code, exc.reason, _retry_after(exc.headers))
        except (_Interrupted, *_NETWORK_ERRORS) as exc:
            failure = exc
        failures += 1
        have = job.have()
        if failures > retries:
            raise DownloadError(_gave_up(job, failure, failures, have)) from None
        delay = min(max_wait, failure.retry_after if getattr(failure, "retry_after", None) is not None else wait)
        if delay >= job.left():
            raise job.past_deadline()
        log.warning("%s: %s at %d bytes; retrying in %.0f s (%d/%d)", job.name,
                    f"{job.url} answered {failure}" if isinstance(failure, _Unavailable) else
                    f"transfer broke off ({failure or type(failure).__name__})", have, delay, failures, retries)
        time.sleep(delay)
        wait *= 2
        resumed = resumed or have > 0


def _gave_up(job: _Job, failure: Exception, failures: int, have: int) -> str:
    kept = f"{have} bytes are kept in {job.part} and the next run resumes from there"
    if isinstance(failure, _Unavailable):
        return (f"{job.name}: {job.url} answered HTTP {failure.code} {failure.reason} {failures} times; the server "
                f"is busy or down: try again later or use another mirror ({kept})")
    return (f"{job.name}: the transfer from {job.url} broke off {failures} time{'s' if failures != 1 else ''} "
            f"({failure or type(failure).__name__}); {kept}")


def _retry_after(headers) -> float | None:
    """Seconds from a ``Retry-After`` header (a number of seconds or an HTTP date), or None."""
    value = (headers.get("Retry-After") if headers is not None else None) or ""
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    return max(0.0, when.timestamp() - time.time())


_DISK_ADVICE = {
    errno.ENOSPC: "free some space on that disk or pick another --out-dir",
    errno.EDQUOT: "your disk quota is used up: free some space or pick another --out-dir",
    errno.EROFS: "that file system is read-only: pick another --out-dir",
    errno.EACCES: "check the folder's permissions or pick another --out-dir",
    errno.EPERM: "check the folder's permissions or pick another --out-dir",
}


@contextmanager
def _disk(path: Path):
    """Turn an OSError of a disk operation into a DownloadError naming the path (never retried)."""
    try:
        yield
    except OSError as exc:
        where = exc.filename or path
        advice = _DISK_ADVICE.get(exc.errno, "check that disk, or pick another --out-dir")
        raise DownloadError(f"{where}: cannot write the download: {exc.strerror or exc}; this is not retried: "
                            f"{advice}, then run again (the bytes already downloaded are kept)") from None


def _fetch(job: _Job) -> int:
    """One request: continue ``job.part`` from its size. Returns the bytes written."""
    have = job.have()
    request = urllib.request.Request(job.url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=job.socket_timeout())  # noqa: S310 - the user's URL
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the partial file is whole
            exc.close()
            return 0
        raise
    with response:
        length = response.headers.get("Content-Length")
        length = int(length) if length is not None and length.strip().isdigit() else None
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if not match or int(match.group(1)) != have:
                raise DownloadError(f"{job.name}: {job.url} answered a range request with Content-Range "
                                    f"{response.headers.get('Content-Range')!r}, not one starting at byte {have}")
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:  # 200: the server ignored Range; start over
            if have:
                log.warning("%s: %s does not resume downloads; starting over", job.name, job.url)
            have, mode, total = 0, "wb", length
        limit = _size_limit(job, have, total, length)
        written = _stream(job, response, have, total, limit, mode)
        if length is not None and written < length:
            raise _Interrupted(f"got {written} of {length} bytes")
    return written


def _size_limit(job: _Job, have: int, total: int | None, length: int | None) -> tuple[int, bool]:
    """The most bytes the file may reach, and whether the server announced it; refuses sizes over the
    cap or the free disk space before any byte is written."""
    announced = total if total is not None else have + length if length is not None else None
    if announced is None:
        return job.max_bytes, False
    if announced > job.max_bytes:
        raise DownloadError(f"{job.name}: {job.url} announces {announced} bytes, more than the {job.max_bytes}-byte "
                            f"cap (--max-size); nothing was written. If the file really is that big, raise the cap")
    if length is not None and have + length > announced:
        raise DownloadError(f"{job.name}: {job.url} announces {have + length} bytes from byte {have} of a "
                            f"{announced}-byte file; the mirror is broken: use another one")
    try:
        free = shutil.disk_usage(job.part.parent).free
    except OSError:
        free = None
    if free is not None and announced - have > free:
        raise DownloadError(f"{job.name}: {announced - have} more bytes are needed but only {free} are free on the "
                            f"disk of {job.part.parent}; free some space or pick another --out-dir")
    return announced, True


def _stream(job: _Job, response, have: int, total: int | None, limit: tuple[int, bool], mode: str) -> int:
    """Copy the body into ``job.part``, within the size limit, the minimum speed and the deadline."""
    most, announced = limit
    read = getattr(response, "read1", response.read)  # read1: one system call, so that a trickle is measured
    written, window_start, window_bytes = 0, time.monotonic(), 0
    with _open_part(job.part, mode) as handle, progress_bar(
        total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
        desc=job.name, disable=not job.progress, leave=False,
    ) as bar:
        while block := read(CHUNK_BYTES):
            if have + written + len(block) > most:
                handle.close()
                job.part.unlink()
                raise DownloadError(f"{job.name}: {job.url} sent more than " + (
                    f"the {most} bytes it announced" if announced else
                    f"the {most}-byte cap (--max-size) with no size announced") +
                    "; the download was deleted: use another mirror, or raise --max-size if the file is that big")
            with _disk(job.part):
                handle.write(block)
            written += len(block)
            bar.update(len(block))
            now = time.monotonic()
            if job.deadline is not None and now > job.deadline:
                raise _Deadline()
            window_bytes += len(block)
            if now - window_start >= job.timeout_s:
                if window_bytes < job.min_speed * (now - window_start):
                    raise _Interrupted(f"only {window_bytes} bytes in the last {job.timeout_s:g} s, below the "
                                       f"minimum speed of {job.min_speed:g} bytes/s")
                window_start, window_bytes = now, 0
    return written


class _Deadline(Exception):
    """The overall deadline passed mid-transfer (not retried)."""


@contextmanager
def _open_part(part: Path, mode: str):
    """``part`` opened for writing; errors opening, flushing or closing it are disk errors."""
    with _disk(part):
        handle = open(part, mode)
    try:
        yield handle
    finally:
        with _disk(part):
            handle.close()
