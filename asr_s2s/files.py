"""Atomic, durable file writes: readers never see a half-written file, and after a power cut a file is
either its old or its new self, whole.

Each write goes to a temporary sibling made by :func:`tempfile.mkstemp` (a random
name, created exclusively, so a symlink planted in the folder is never followed),
is flushed to disk (``fsync``), renamed over the target (``os.replace``), and then
the folder entry itself is flushed. Files get the usual mode (``0o666`` less the
umask), as a plain ``open`` would give them.
"""

from __future__ import annotations

import ctypes
import errno
import os
import tempfile
from collections.abc import Callable
from pathlib import Path


def write_text_atomically(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically and durably (see the module docstring).

    The parent folder is created; an interrupted write leaves the old file (or
    none) and no temporary file behind.
    """
    data = text.encode("utf-8")

    def write(fd: int, tmp: Path) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]

    return _replace_with(Path(path), write)


def write_atomically(path: str | os.PathLike, write: Callable[[Path], object]) -> Path:
    """Call ``write(temporary sibling)``, then move it onto ``path`` atomically and durably.

    ``write`` gets the path of an empty file this process created (a random name
    in ``path``'s folder) and may reopen and overwrite it by name. The parent
    folder is created; an interrupted write leaves the old file (or none) and no
    temporary file behind.
    """
    return _replace_with(Path(path), lambda fd, tmp: write(tmp))


def fsync_directory(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename or a new file in it) to disk; a no-op where folders cannot be opened."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass  # some filesystems (and Windows) do not sync folders
    finally:
        os.close(fd)


def exchange(a: str | os.PathLike, b: str | os.PathLike) -> bool:
    """Swap two paths in one atomic step (Linux ``renameat2(RENAME_EXCHANGE)``), so that no reader ever finds
    neither. :returns: False where the system or filesystem cannot, and nothing changed."""
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return False
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0:
        return True
    error = ctypes.get_errno()
    if error in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP, errno.EPERM):
        return False
    raise OSError(error, os.strerror(error), os.fspath(b))


def default_mode(directory: bool = False) -> int:
    """The mode ``open`` (``0o666``) or ``mkdir`` (``0o777``) would give a new entry under the current umask."""
    return (0o777 if directory else 0o666) & ~_umask()


# -- internals -------------------------------------------------------------------------------
def _replace_with(path: Path, write: Callable[[int, Path], object]) -> Path:
    """Create the temporary sibling, ``write(its descriptor, its path)``, flush it and move it onto ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        try:
            os.fchmod(fd, default_mode())
            write(fd, tmp)
        finally:
            os.close(fd)
        fsync_file(tmp)  # reopened: ``write`` may have rewritten the file by name
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_directory(path.parent)
    return path


def fsync_file(path: str | os.PathLike) -> None:
    """Flush a file's data to disk (symlinks are not followed)."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _umask() -> int:
    try:  # Linux 4.7+: read without changing it (os.umask would, for a moment, for every thread)
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    current = os.umask(0o022)
    os.umask(current)
    return current
