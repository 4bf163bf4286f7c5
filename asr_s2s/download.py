"""Resumable, checksummed downloads of corpus archives over HTTP(S), with the standard library.

A file is fetched into ``NAME.part`` beside its destination. An interrupted
download (a dropped connection, a killed process) resumes from the bytes
already on disk with an HTTP ``Range`` request; a server that ignores
``Range`` makes it start over. Only a file whose MD5 matches the published sum
is renamed to its final name; a mismatch deletes the download, and every
error names the file.
"""

from __future__ import annotations

import hashlib
import http.client
import logging
import os
import re
import socket
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from asr_s2s.progress import progress_bar

from asr_s2s.errors import AsrS2SError

log = logging.getLogger(__name__)

CHUNK_BYTES = 1 << 20
USER_AGENT = "asr-s2s-download/1"
_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+|\*)")
_NETWORK_ERRORS = (http.client.HTTPException, ConnectionError, socket.timeout, TimeoutError, urllib.error.URLError, OSError)


class DownloadError(AsrS2SError):
    """A download failed for good: the server refused it, it kept breaking off, or its checksum is wrong."""


class _Interrupted(Exception):
    """The body stopped short of its announced size (retried)."""


@dataclass(frozen=True)
class Downloaded:
    """The outcome for one file."""

    path: Path
    fetched_bytes: int  # bytes transferred by this call (0 when the file was already there)
    resumed: bool  # True if a partial download was continued


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


def download(
    url: str,
    dest: str | os.PathLike,
    md5: str | None = None,
    retries: int = 5,
    retry_wait_s: float = 2.0,
    timeout_s: float = 60.0,
    progress: bool = True,
) -> Downloaded:
    """Fetch ``url`` to ``dest``, resuming a partial ``dest.part`` and checking ``md5``.

    An existing ``dest`` whose MD5 matches is kept without any request.

    :param retries: how many times a broken-off transfer is resumed before giving up
        (the partial file is kept, so that a later call resumes it).
    :param retry_wait_s: seconds before the first retry; doubled each time.
    :raises DownloadError: naming the file: an HTTP error, too many broken
        transfers, or an MD5 mismatch (the corrupt file is deleted).
    """
    dest = Path(dest)
    name = dest.name
    if dest.is_file():
        if md5 is None or md5sum(dest) == md5.lower():
            log.info("%s: already downloaded%s", dest, "" if md5 is None else ", checksum OK")
            return Downloaded(dest, 0, False)
        log.warning("%s: checksum does not match the published one; fetching it again", dest)
        dest.unlink()
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(name + ".part")
    resumed = part.is_file() and part.stat().st_size > 0
    fetched, failures, wait = 0, 0, retry_wait_s
    while True:
        try:
            fetched += _fetch(url, part, name, timeout_s, progress)
            break
        except (_Interrupted, *_NETWORK_ERRORS) as exc:
            if isinstance(exc, urllib.error.HTTPError):
                raise DownloadError(f"{name}: {url} answered HTTP {exc.code} {exc.reason}") from None
            failures += 1
            have = part.stat().st_size if part.is_file() else 0
            if failures > retries:
                raise DownloadError(
                    f"{name}: the transfer from {url} broke off {failures} times ({exc or type(exc).__name__}); "
                    f"{have} bytes are kept in {part} and the next run resumes from there"
                ) from None
            log.warning("%s: transfer broke off at %d bytes (%s); resuming in %.0f s (%d/%d)",
                        name, have, exc or type(exc).__name__, wait, failures, retries)
            time.sleep(wait)
            wait *= 2
            resumed = resumed or have > 0
    if md5 is not None:
        found = md5sum(part)
        if found != md5.lower():
            part.unlink()
            raise DownloadError(
                f"{name}: MD5 {found} does not match the published {md5.lower()}; "
                f"the corrupt download was deleted (run again to fetch it anew)"
            )
    os.replace(part, dest)
    return Downloaded(dest, fetched, resumed)


def _fetch(url: str, part: Path, name: str, timeout_s: float, progress: bool) -> int:
    """One request: continue ``part`` from its size. Returns the bytes written."""
    have = part.stat().st_size if part.is_file() else 0
    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if have:
        request.add_header("Range", f"bytes={have}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout_s)  # noqa: S310 - the user's URL
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # nothing left to fetch: the partial file is whole
            return 0
        raise
    with response:
        length = response.headers.get("Content-Length")
        if response.status == 206:
            match = _CONTENT_RANGE.fullmatch(response.headers.get("Content-Range", "").strip())
            if not match or int(match.group(1)) != have:
                raise DownloadError(f"{name}: {url} answered a range request with Content-Range "
                                    f"{response.headers.get('Content-Range')!r}, not one starting at byte {have}")
            total = None if match.group(3) == "*" else int(match.group(3))
            mode = "ab"
        else:  # 200: the server ignored Range; start over
            if have:
                log.warning("%s: %s does not resume downloads; starting over", name, url)
            have, mode = 0, "wb"
            total = int(length) if length is not None else None
        expected = int(length) if length is not None else None
        written = 0
        with open(part, mode) as handle, progress_bar(
            total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
            desc=name, disable=not progress, leave=False,
        ) as bar:
            while True:
                block = response.read(CHUNK_BYTES)
                if not block:
                    break
                handle.write(block)
                written += len(block)
                bar.update(len(block))
        if expected is not None and written < expected:
            raise _Interrupted(f"got {written} of {expected} bytes")
    return written
