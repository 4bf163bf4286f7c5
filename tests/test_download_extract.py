"""Extracting downloaded archives (issue 16): never the archive's owners or modes, nothing outside the
output folder, and the MD5 checked again right before extracting when the tarball changed since its check.

Covers asr_s2s.archive, ``asr-s2s extract`` and stage 2 of recipes/librispeech/run.sh."""

from __future__ import annotations

import io
import os
import shutil
import stat
import subprocess
import sys
import tarfile

import pytest

import asr_s2s.archive as archive
from conftest import FIXTURE_DIR, REPO
from corpus_server import md5_hex

HOSTILE_UID = 4242
UNSAFE_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH


def _tarball(path, members: list[tuple[tarfile.TarInfo, bytes]]) -> bytes:
    with tarfile.open(path, "w:gz") as tar:
        for info, data in members:
            info.size = len(data) if info.isreg() else 0
            tar.addfile(info, io.BytesIO(data) if info.isreg() else None)
    return path.read_bytes()


def _member(name: str, kind=tarfile.REGTYPE, mode=0o4777, linkname="", uid=HOSTILE_UID) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.linkname, info.uid, info.gid = kind, mode, linkname, uid, uid
    info.uname = info.gname = "mallory"
    return info


def _hostile_owners(path) -> bytes:
    """A setuid, world-writable file and a world-writable folder, owned by someone else."""
    return _tarball(path, [(_member("LibriSpeech", tarfile.DIRTYPE, 0o777), b""),
                           (_member("LibriSpeech/tool.sh"), b"#!/bin/sh\n"),
                           (_member("LibriSpeech/README.TXT", mode=0o666), b"read me\n")])


@pytest.fixture(params=["data_filter", "fallback"])
def how(request, monkeypatch):
    """Each test runs with tarfile's 'data' filter and with the fallback for Pythons without it."""
    if request.param == "fallback":
        monkeypatch.setattr(archive, "_HAS_DATA_FILTER", False)
    elif not archive._HAS_DATA_FILTER:
        pytest.skip("this Python's tarfile has no 'data' filter")
    return request.param


# -- the archive's owners and modes are never applied ------------------------------------------------
def test_owners_and_unsafe_modes_are_not_applied(how, tmp_path):
    _hostile_owners(tmp_path / "a.tar.gz")
    archive.extract_archive(tmp_path / "a.tar.gz", tmp_path / "out")
    for name in ("LibriSpeech", "LibriSpeech/tool.sh", "LibriSpeech/README.TXT"):
        st = (tmp_path / "out" / name).stat()
        assert st.st_uid == os.geteuid() and st.st_gid == os.getegid(), name
        assert not st.st_mode & UNSAFE_BITS, f"{name}: {oct(st.st_mode)}"
    assert (tmp_path / "out" / "LibriSpeech" / "README.TXT").read_bytes() == b"read me\n"


@pytest.mark.parametrize("member", [
    _member("../escape.txt"),
    _member("/tmp/absolute.txt"),
    _member("LibriSpeech/../../escape.txt"),
    _member("link", tarfile.SYMTYPE, linkname="/etc/passwd"),
    _member("link", tarfile.SYMTYPE, linkname="../../outside"),
    _member("hard", tarfile.LNKTYPE, linkname="../outside"),
    _member("dev", tarfile.CHRTYPE),
    _member("fifo", tarfile.FIFOTYPE),
], ids=["dotdot", "absolute", "dotdot-inside", "symlink-absolute", "symlink-outside", "hardlink-outside",
        "device", "fifo"])
def test_members_that_escape_or_are_special_are_refused(how, tmp_path, member):
    (tmp_path / "outside").write_text("keep")
    _tarball(tmp_path / "a.tar.gz", [(member, b"evil")])
    with pytest.raises(archive.ArchiveError, match=rf"{tmp_path / 'a.tar.gz'}: refusing to extract "
                                                   rf"{member.name!r}: .*; the archive is not trustworthy"):
        archive.extract_archive(tmp_path / "a.tar.gz", tmp_path / "out" / "deep")
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "out" / "escape.txt").exists()
    assert not os.path.exists("/tmp/absolute.txt") and (tmp_path / "outside").read_text() == "keep"


def test_a_symlink_inside_then_a_path_through_it_cannot_escape(how, tmp_path):
    _tarball(tmp_path / "a.tar.gz", [(_member("here", tarfile.SYMTYPE, linkname="."), b""),
                                     (_member("here/x", tarfile.SYMTYPE, linkname="../../escaped"), b"")])
    with pytest.raises(archive.ArchiveError, match="refusing to extract 'here/x'"):
        archive.extract_archive(tmp_path / "a.tar.gz", tmp_path / "out" / "deep")
    assert not os.path.lexists(tmp_path / "out" / "deep" / "x")


def test_a_damaged_archive_names_it_and_says_what_to_do(tmp_path):
    data = _hostile_owners(tmp_path / "a.tar.gz")
    (tmp_path / "a.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(archive.ArchiveError, match=rf"{tmp_path / 'a.tar.gz'}: damaged archive .*delete it and "
                                                   r"download it again"):
        archive.extract_archive(tmp_path / "a.tar.gz", tmp_path / "out")


# -- the MD5 is checked again when the tarball changed since its check --------------------------------
def test_a_tarball_newer_than_its_check_is_checked_again(tmp_path):
    good = _hostile_owners(tmp_path / "a.tar.gz")
    marker = tmp_path / ".a.download.done"
    marker.touch()
    os.utime(marker, (1_000, 1_000))  # the check happened before the tarball was last written
    (tmp_path / "a.tar.gz").write_bytes(good[:-10] + b"0123456789")
    with pytest.raises(archive.ArchiveError, match=rf"{tmp_path / 'a.tar.gz'}: MD5 [0-9a-f]{{32}} does not match "
                                                   rf"the published {md5_hex(good)}; .*changed since .*download it "
                                                   r"again"):
        archive.extract_archive(tmp_path / "a.tar.gz", tmp_path / "out", md5=md5_hex(good), verified_marker=marker)
    assert not (tmp_path / "out").exists(), "nothing is extracted from a tarball that fails its check"


def test_a_tarball_older_than_its_check_is_not_hashed_again(tmp_path, monkeypatch):
    good = _hostile_owners(tmp_path / "a.tar.gz")
    marker = tmp_path / ".a.download.done"
    marker.touch()
    os.utime(tmp_path / "a.tar.gz", (1_000, 1_000))
    monkeypatch.setattr(archive, "md5sum", lambda path: pytest.fail("hashed again"))
    archive.extract_archive(tmp_path / "a.tar.gz", tmp_path / "out", md5=md5_hex(good), verified_marker=marker)
    assert (tmp_path / "out" / "LibriSpeech" / "README.TXT").exists()


# -- the command ------------------------------------------------------------------------------------------
def test_cli_extract(run_cli, tmp_path):
    good = _hostile_owners(tmp_path / "a.tar.gz")
    (tmp_path / "sums.txt").write_text(f"{md5_hex(good)}  a.tar.gz\n")
    code, out, _ = run_cli("extract", tmp_path / "a.tar.gz", "--out-dir", tmp_path / "out", "--md5sums",
                           tmp_path / "sums.txt", "-q")
    assert code == 0 and out.strip() == str(tmp_path / "out")
    assert not (tmp_path / "out" / "LibriSpeech" / "tool.sh").stat().st_mode & UNSAFE_BITS
    (tmp_path / "sums.txt").write_text(f"{'0' * 32}  a.tar.gz\n")
    code, _, err = run_cli("extract", tmp_path / "a.tar.gz", "--out-dir", tmp_path / "o2", "--md5sums",
                           tmp_path / "sums.txt", "-q")
    assert code == 1 and f"asr-s2s extract: error: {tmp_path / 'a.tar.gz'}: MD5" in err
    (tmp_path / "sums.txt").write_text(f"{'0' * 32}  other.tar.gz\n")
    code, _, err = run_cli("extract", tmp_path / "a.tar.gz", "--out-dir", tmp_path / "o3", "--md5sums",
                           tmp_path / "sums.txt", "-q")
    assert code == 2 and "no checksum for a.tar.gz" in err


# -- stage 2 of the LibriSpeech recipe ------------------------------------------------------------------------
def _recipe_tarball(path) -> bytes:
    """dev-clean with one fixture speaker, every entry owned by someone else, setuid and world-writable."""
    members = [(_member(d, tarfile.DIRTYPE, 0o777), b"") for d in ("LibriSpeech", "LibriSpeech/dev-clean")]
    for file in sorted((FIXTURE_DIR / "1001").rglob("*")):
        name = f"LibriSpeech/dev-clean/{file.relative_to(FIXTURE_DIR).as_posix()}"
        members.append((_member(name, tarfile.DIRTYPE, 0o777), b"") if file.is_dir() else
                       (_member(name), file.read_bytes()))
    return _tarball(path, members)


def _stage2(tmp_path, data) -> subprocess.CompletedProcess:
    env = {**os.environ, "PATH": os.pathsep.join([os.path.dirname(sys.executable), os.environ.get("PATH", "")])}
    command = ["bash", str(REPO / "recipes" / "librispeech" / "run.sh"), "--stop-stage", "2", "--data-dir", str(data),
               "--subsets", "dev-clean", "--md5sums", str(tmp_path / "sums.txt"), "--exp-dir", str(tmp_path / "exp"),
               "--device", "cpu", "--mirror", "http://127.0.0.1:9/unreachable",
               "--utterance-counts", str(tmp_path / "counts.txt")]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)


@pytest.fixture
def downloaded(tmp_path):
    """A data folder as stage 1 leaves it: the tarball, then its download marker."""
    data = tmp_path / "data"
    data.mkdir()
    good = _recipe_tarball(data / "dev-clean.tar.gz")
    (tmp_path / "sums.txt").write_text(f"{md5_hex(good)}  dev-clean.tar.gz\n")
    (tmp_path / "counts.txt").write_text("3  dev-clean\n")  # the utterances _recipe_tarball holds
    os.utime(data / "dev-clean.tar.gz", (1_000, 1_000))
    (data / ".dev-clean.download.done").touch()
    return data, good


def test_recipe_extracts_without_the_archives_owners_or_modes(tmp_path, downloaded):
    data, _ = downloaded
    done = _stage2(tmp_path, data)
    assert done.returncode == 0, done.stderr[-3000:]
    extracted = [data / "LibriSpeech", *(data / "LibriSpeech").rglob("*")]
    assert len(extracted) > 5
    for path in extracted:
        st = path.stat()
        assert st.st_uid == os.geteuid() and not st.st_mode & UNSAFE_BITS, f"{path}: {st.st_uid} {oct(st.st_mode)}"


def test_recipe_checks_the_md5_again_when_the_tarball_changed_after_extraction(tmp_path, downloaded):
    data, good = downloaded
    assert _stage2(tmp_path, data).returncode == 0
    shutil.rmtree(data / "LibriSpeech" / "dev-clean")  # extracted and prepared, then removed by its owner ...
    (data / "dev-clean.tar.gz").write_bytes(good[:-10] + b"0123456789")  # ... and the tarball changed
    os.utime(data / ".dev-clean.download.done", (2_000, 2_000))
    done = _stage2(tmp_path, data)
    assert done.returncode != 0, "a changed tarball is checked before it is extracted again"
    assert f"{data / 'dev-clean.tar.gz'}: MD5" in done.stderr and "does not match the published" in done.stderr
    assert "== stage 2: extract (or find) dev-clean and write its manifest (its inputs changed" in done.stderr
