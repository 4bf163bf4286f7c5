"""Extracting downloaded tar archives safely.

An archive is untrusted input, and the extraction may run as root. So, as
Python's ``tarfile`` ``data`` filter does (and as this module does itself on
Pythons without that filter): a member whose path is absolute, holds ``..``
or resolves outside the output folder is refused, as are links that point
outside it and device files and FIFOs; the archive's owners are never applied
(the files belong to whoever extracts them), and its modes only as far as
safe (no setuid/setgid/sticky bits, no group or world write; folders get the
default mode). A refused member stops the extraction with an error naming it.

When an MD5 is given, the tarball is checked again right before it is
extracted unless ``verified_marker`` (a file touched after its last check,
such as run.sh's download marker) is at least as new as the tarball.
"""

from __future__ import annotations

import logging
import os
import tarfile
import zlib
from pathlib import Path

from asr_s2s.download import md5sum
from asr_s2s.errors import AsrS2SError

log = logging.getLogger(__name__)

_HAS_DATA_FILTER = hasattr(tarfile, "data_filter")  # Python 3.12, and 3.8.17 / 3.9.17 / 3.10.12 / 3.11.4 on
_TRUSTED = {"filter": "fully_trusted"} if hasattr(tarfile, "fully_trusted_filter") else {}


class ArchiveError(AsrS2SError):
    """An archive is damaged, fails its checksum, or holds a member that must not be extracted."""


class _Refused(Exception):
    """A member the fallback checks refuse (the message says why)."""


def extract_archive(tarball: str | os.PathLike, out_dir: str | os.PathLike, md5: str | None = None,
                    verified_marker: str | os.PathLike | None = None) -> int:
    """Extract ``tarball`` (any compression tarfile reads) into ``out_dir``; returns the number of members.

    :raises ArchiveError: naming the tarball: an MD5 mismatch (nothing is extracted), a refused
        member (extraction stops there), a damaged archive, or a folder that cannot be written.
    """
    tarball, out_dir = Path(tarball), Path(out_dir)
    if md5 is not None and not _checked_since_written(tarball, verified_marker):
        found = md5sum(tarball)
        if found != md5.lower():
            raise ArchiveError(f"{tarball}: MD5 {found} does not match the published {md5.lower()}; the file "
                               f"changed since it was downloaded and checked, so nothing was extracted: delete "
                               f"it and download it again")
    out_dir.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(tarball, "r:*") as tar:
            return _extract_all(tar, tarball, out_dir)
    except (tarfile.TarError, EOFError, zlib.error) as exc:
        raise ArchiveError(_damaged(tarball, exc)) from None
    except OSError as exc:
        if exc.errno is None:  # a decompressor's complaint (bad gzip or bz2 data), not the disk's
            raise ArchiveError(_damaged(tarball, exc)) from None
        raise ArchiveError(f"{exc.filename or out_dir}: cannot extract {tarball.name} there: "
                           f"{exc.strerror or exc}; free some space or pick another folder, then run again") from None


def _damaged(tarball: Path, exc: BaseException) -> str:
    return f"{tarball}: damaged archive ({exc or type(exc).__name__}); delete it and download it again"

def _checked_since_written(tarball: Path, marker: str | os.PathLike | None) -> bool:
    """True when ``marker`` exists and is no older than ``tarball`` (the MD5 was checked after its last write)."""
    if marker is None:
        return False
    try:
        return os.stat(marker).st_mtime >= tarball.stat().st_mtime
    except FileNotFoundError:
        return False


def _extract_all(tar: tarfile.TarFile, tarball: Path, out_dir: Path) -> int:
    """One pass over the members (a .tar.gz is read once), each checked just before it is written."""
    count = 0
    if _HAS_DATA_FILTER:
        def strict(member: tarfile.TarInfo, dest: str) -> tarfile.TarInfo:
            nonlocal count
            if member.name.startswith(("/", os.sep)):  # the data filter would strip the slash; refuse instead
                raise ArchiveError(_refusal(tarball, member, "an absolute path"))
            count += 1
            return tarfile.data_filter(member, dest)

        try:
            tar.extractall(out_dir, filter=strict)
        except tarfile.FilterError as exc:
            raise ArchiveError(_refusal(tarball, exc.tarinfo, str(exc))) from None
        return count
    tar.chown = _never_chown  # type: ignore[method-assign]
    tar.chmod = _safe_chmod  # type: ignore[method-assign]
    dest = os.path.realpath(out_dir)
    for member in tar:
        try:
            _check_member(member, dest)
        except _Refused as exc:
            raise ArchiveError(_refusal(tarball, member, str(exc))) from None
        tar.extract(member, out_dir, **_TRUSTED)  # checked above; owners and modes are handled below
        count += 1
    return count


def _refusal(tarball: Path, member: tarfile.TarInfo, why: str) -> str:
    return (f"{tarball}: refusing to extract {member.name!r}: {why}; the archive is not trustworthy (members "
            f"before it were extracted, nothing outside the output folder): delete it and download it from "
            f"the official source")


def _check_member(member: tarfile.TarInfo, dest: str) -> None:
    """The fallback's rules (tarfile's ``data`` filter's, but absolute paths are refused, not stripped)."""
    name = member.name
    if name.startswith(("/", os.sep)) or os.path.isabs(name):
        raise _Refused("an absolute path")
    if ".." in name.replace(os.sep, "/").split("/"):
        raise _Refused("a path with '..'")
    if not _inside(os.path.realpath(os.path.join(dest, name)), dest):
        raise _Refused(f"it would be written outside {dest}")
    if member.ischr() or member.isblk() or member.isfifo() or not (member.isreg() or member.isdir()
                                                                      or member.issym() or member.islnk()):
        raise _Refused("a device, FIFO or other special file")
    if member.issym():
        if os.path.isabs(member.linkname):
            raise _Refused(f"a symbolic link to the absolute path {member.linkname!r}")
        target = os.path.join(dest, os.path.dirname(name), member.linkname)
    elif member.islnk():
        target = os.path.join(dest, member.linkname)
    else:
        return
    if not _inside(os.path.realpath(target), dest):
        raise _Refused(f"a link to {member.linkname!r}, outside {dest}")


def _inside(path: str, dest: str) -> bool:
    return os.path.commonpath([path, dest]) == dest


def _never_chown(tarinfo: tarfile.TarInfo, targetpath: str, numeric_owner: bool = False) -> None:
    """Files belong to whoever extracts them, never to the archive's owners."""


def _safe_chmod(tarinfo: tarfile.TarInfo, targetpath: str) -> None:
    """The ``data`` filter's modes: files keep at most rwxr-xr-x (and are rw for the owner); folders and links
    keep the default mode."""
    if tarinfo.isreg() or tarinfo.islnk():
        mode = tarinfo.mode & 0o755
        if not mode & 0o100:
            mode &= ~0o111
        os.chmod(targetpath, mode | 0o600)
