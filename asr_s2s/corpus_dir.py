"""Extracted corpus subsets in a shared data folder (``DATA_DIR/LibriSpeech/SUBSET``), used in place.

Several experiments, and people, share one data folder, and a copy may have come from elsewhere (ESPnet,
icefall, rsync) without its tarball. So:

* a subset folder holding a ``.complete`` marker is complete and is used as it is (ESPnet's
  ``download_and_untar.sh`` writes the same marker, so its copies are recognised too);
* a folder without the marker is checked (:func:`check_subset`): every transcript line has its audio, every
  audio file is in a transcript, none is empty, and the count of utterances is the published one when that
  is known. A complete copy gets the marker and is used; an incomplete one is refused with the reasons,
  and **nothing in it is ever deleted**: it is not ours to delete;
* a tarball is extracted into a temporary folder beside the data (``DATA_DIR/.extract-SUBSET-*``), checked,
  marked, and renamed into place, so a cut-short extraction leaves only that temporary folder, which the
  next run removes (it is the only thing this module deletes, besides the tarball on request);
* one process at a time per subset: an ``flock`` on ``DATA_DIR/.SUBSET.extract.lock``; a second experiment
  waits for the first one's extraction and then uses its result.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from asr_s2s.archive import extract_archive
from asr_s2s.errors import AsrS2SError
from asr_s2s.files import fsync_directory, write_text_atomically

MARKER = ".complete"  # DATA_DIR/CORPUS/SUBSET/.complete: the folder is whole (the name ESPnet uses too)
AUDIO_SUFFIXES = (".flac", ".wav")
TEMP_PREFIX = ".extract-"  # DATA_DIR/.extract-SUBSET-XXXXXXXX: an extraction under way (or cut short)
SHOWN = 3  # problems of each kind quoted in an error


class SubsetError(AsrS2SError):
    """A subset folder is incomplete, or a tarball does not hold the subset it should."""


@dataclass(frozen=True)
class SubsetCheck:
    """What :func:`check_subset` found in a folder. ``missing``: transcript lines without audio;
    ``unlisted``: audio files in no transcript; ``empty``: zero-byte audio files (paths relative to it)."""

    utterances: int
    missing: tuple[str, ...]
    unlisted: tuple[str, ...]
    empty: tuple[str, ...]

    def problems(self, expected: int | None = None) -> list[str]:
        """Why the folder is not complete; empty when it is."""
        found = []
        for what, items in (("transcript line(s) without audio", self.missing),
                            ("audio file(s) in no transcript", self.unlisted), ("empty audio file(s)", self.empty)):
            if items:
                found.append(f"{len(items)} {what} ({', '.join(items[:SHOWN])}{', ...' if len(items) > SHOWN else ''})")
        if self.utterances == 0:
            found.append("no transcripts (*.trans.txt)")
        elif expected is not None and self.utterances != expected:
            found.append(f"{self.utterances:,} utterances where the corpus publishes {expected:,}")
        return found


@dataclass(frozen=True)
class InstalledSubset:
    """A complete subset folder; ``source`` is how it got there: ``marked`` (found with its marker),
    ``found`` (found without one, checked and marked) or ``extracted`` (from ``tarball`` by this call)."""

    folder: Path
    source: str
    utterances: int


def check_subset(folder: str | os.PathLike) -> SubsetCheck:
    """Check a LibriSpeech-layout folder (``spk/chapter/spk-chapter.trans.txt`` beside ``UTT.flac``)."""
    folder = Path(folder)
    listed: set[Path] = set()
    missing, utterances = [], 0
    for trans in sorted(folder.rglob("*.trans.txt")):
        for line in trans.read_text(encoding="utf-8", errors="replace").splitlines():
            utt_id = line.split(" ", 1)[0].strip()
            if not utt_id:
                continue
            utterances += 1
            audio = next((trans.parent / f"{utt_id}{s}" for s in AUDIO_SUFFIXES
                          if (trans.parent / f"{utt_id}{s}").is_file()), None)
            if audio is None:
                missing.append(str(trans.parent.relative_to(folder) / utt_id))
            else:
                listed.add(audio)
    unlisted, empty = [], []
    for path in sorted(p for s in AUDIO_SUFFIXES for p in folder.rglob(f"*{s}")):
        name = str(path.relative_to(folder))
        if path not in listed:
            unlisted.append(name)
        elif path.stat().st_size == 0:
            empty.append(name)
    return SubsetCheck(utterances, tuple(missing), tuple(unlisted), tuple(empty))


def install_subset(
    data_dir: str | os.PathLike, subset: str, tarball: str | os.PathLike | None, *, md5: str | None = None,
    verified_marker: str | os.PathLike | None = None, expected_utterances: int | None = None,
    keep_tarball: bool = True,
) -> InstalledSubset:
    """Make ``DATA_DIR/SUBSET`` (e.g. ``LibriSpeech/dev-clean``) a complete folder, without ever deleting
    data: use it in place when it is there, else extract ``tarball`` (which must hold ``SUBSET``).

    ``keep_tarball=False`` deletes the tarball once the subset is complete and marked.

    :raises SubsetError: an incomplete folder that was already there (nothing is deleted), no tarball to
        extract, or a tarball without a complete ``SUBSET`` inside.
    :raises asr_s2s.archive.ArchiveError: an MD5 mismatch, a damaged archive, a refused member.
    """
    data_dir = Path(data_dir)
    target = data_dir / subset
    data_dir.mkdir(parents=True, exist_ok=True)
    with _subset_lock(data_dir, subset):
        if (target / MARKER).is_file():
            installed = InstalledSubset(target, "marked", _marked_utterances(target))
        elif target.exists():
            installed = _adopt(target, expected_utterances)
        else:
            installed = _extract_into_place(data_dir, subset, tarball, md5, verified_marker, expected_utterances)
        if not keep_tarball and tarball is not None and Path(tarball).is_file():
            Path(tarball).unlink()
    return installed


@contextlib.contextmanager
def _subset_lock(data_dir: Path, subset: str) -> Iterator[None]:
    path = data_dir / f".{subset.replace('/', '-')}.extract.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print(f"{data_dir / subset}: another process is extracting it; waiting for it", flush=True)
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)


def _marked_utterances(folder: Path) -> int:
    try:
        return int(json.loads((folder / MARKER).read_text())["utterances"])
    except (ValueError, KeyError, TypeError):  # ESPnet's marker is empty
        return check_subset(folder).utterances


def _write_marker(folder: Path, utterances: int, source: str) -> None:
    record = {"utterances": utterances, "source": source, "checked": time.strftime("%Y-%m-%d %H:%M:%S")}
    write_text_atomically(folder / MARKER, json.dumps(record) + "\n")


def _adopt(target: Path, expected: int | None) -> InstalledSubset:
    """A folder that was there already: mark it if it is complete; refuse it, untouched, if it is not."""
    if not target.is_dir():
        raise SubsetError(f"{target}: exists but is not a folder; move it away and run again")
    check = check_subset(target)
    problems = check.problems(expected)
    if problems:
        raise SubsetError(
            f"{target}: an incomplete copy, not extracted by this recipe ({'; '.join(problems)}); nothing in it "
            f"was changed or deleted. Complete it, or move it away and run again to download and extract it")
    _write_marker(target, check.utterances, "found in place, checked")
    return InstalledSubset(target, "found", check.utterances)


def _extract_into_place(data_dir: Path, subset: str, tarball, md5, verified_marker, expected) -> InstalledSubset:
    target = data_dir / subset
    if tarball is None or not Path(tarball).is_file():
        raise SubsetError(f"{target}: not there, and no tarball to extract it from ({tarball}); download it first")
    stem = f"{TEMP_PREFIX}{subset.replace('/', '-')}-"
    for leftover in data_dir.glob(f"{stem}*"):  # a cut-short extraction of ours (we hold the lock)
        shutil.rmtree(leftover)
    staging = Path(tempfile.mkdtemp(prefix=stem, dir=data_dir))
    try:
        extract_archive(tarball, staging, md5=md5, verified_marker=verified_marker)
        extracted = staging / subset
        if not extracted.is_dir():
            raise SubsetError(f"{tarball}: holds no {subset} folder; is it the right archive?")
        check = check_subset(extracted)
        problems = check.problems(expected)
        if problems:
            raise SubsetError(f"{tarball}: {subset} inside is incomplete ({'; '.join(problems)}); delete the "
                              f"tarball and download it again")
        _write_marker(extracted, check.utterances, f"extracted from {Path(tarball).name}")
        target.parent.mkdir(parents=True, exist_ok=True)
        os.rename(extracted, target)
        _move_siblings(extracted.parent, target.parent)  # LibriSpeech/README.TXT, SPEAKERS.TXT, ... if absent
        fsync_directory(target.parent)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return InstalledSubset(target, "extracted", check.utterances)


def _move_siblings(staged_parent: Path, parent: Path) -> None:
    for item in staged_parent.iterdir():
        if item.is_file() and not (parent / item.name).exists():
            os.rename(item, parent / item.name)
