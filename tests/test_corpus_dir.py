"""asr_s2s.corpus_dir and 'asr-s2s extract --subset': a shared data folder's subsets are used in place when
complete, extracted into place atomically otherwise, and never deleted when they were there already."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from asr_s2s.corpus_dir import MARKER, SubsetError, check_subset, install_subset
from conftest import FIXTURE_DIR
from corpus_server import librispeech_tarball

SUBSET = "LibriSpeech/dev-clean"


def _snapshot(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Every file under folder: (inode, size, mtime_ns), to see that nothing was touched."""
    return {str(p.relative_to(folder)): (p.stat().st_ino, p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _copy_in_place(data: Path) -> Path:
    target = data / SUBSET
    shutil.copytree(FIXTURE_DIR, target)
    return target


@pytest.fixture()
def tarball(tmp_path) -> Path:
    path = tmp_path / "dev-clean.tar.gz"
    path.write_bytes(librispeech_tarball("dev-clean"))
    return path


def test_check_subset_finds_every_kind_of_gap(tmp_path):
    target = _copy_in_place(tmp_path)
    assert check_subset(target).problems(expected=8) == []
    flacs = sorted(target.rglob("*.flac"))
    flacs[0].unlink()
    flacs[1].write_bytes(b"")
    (flacs[2].parent / "9-9-9.flac").write_bytes(b"x")
    problems = check_subset(target).problems(expected=8)
    assert [p.split(" (")[0] for p in problems] == ["1 transcript line(s) without audio", "1 audio file(s) in no transcript",
                                                   "1 empty audio file(s)"]
    assert check_subset(tmp_path / "nothing").problems() == ["no transcripts (*.trans.txt)"]


def test_a_complete_copy_without_tarball_is_used_in_place_and_marked(tmp_path):
    target = _copy_in_place(tmp_path)
    before = _snapshot(target)
    got = install_subset(tmp_path, SUBSET, tmp_path / "dev-clean.tar.gz", expected_utterances=8)
    assert (got.source, got.utterances, got.folder) == ("found", 8, target)
    after = _snapshot(target)
    assert json.loads((target / MARKER).read_text())["utterances"] == 8
    del after[MARKER]
    assert after == before, "nothing in the copy changed"
    assert install_subset(tmp_path, SUBSET, None).source == "marked"


def test_an_espnet_marker_is_trusted(tmp_path):
    target = _copy_in_place(tmp_path)
    (target / MARKER).write_text("")  # ESPnet's download_and_untar.sh touches an empty .complete
    assert install_subset(tmp_path, SUBSET, None).utterances == 8


def test_an_incomplete_copy_is_refused_and_left_untouched(tmp_path, tarball):
    target = _copy_in_place(tmp_path)
    next(target.rglob("*.flac")).unlink()
    before = _snapshot(tmp_path / "LibriSpeech")
    with pytest.raises(SubsetError, match=r"incomplete copy, not extracted by this recipe \(1 transcript line"):
        install_subset(tmp_path, SUBSET, tarball, expected_utterances=8)
    assert _snapshot(tmp_path / "LibriSpeech") == before, "nothing deleted, nothing extracted over it"
    with pytest.raises(SubsetError, match="8 utterances where the corpus publishes 2,703"):
        install_subset(tmp_path, SUBSET, tarball, expected_utterances=2703)


def test_extraction_goes_through_a_temporary_folder_and_clears_a_cut_short_one(tmp_path, tarball):
    data = tmp_path / "data"
    leftover = data / ".extract-LibriSpeech-dev-clean-abcd1234" / SUBSET / "1003"
    leftover.mkdir(parents=True)
    (leftover / "junk.flac").write_bytes(b"junk")
    got = install_subset(data, SUBSET, tarball, expected_utterances=8, keep_tarball=False)
    assert (got.source, got.utterances) == ("extracted", 8)
    assert sorted(p.name for p in data.iterdir()) == [".LibriSpeech-dev-clean.extract.lock", "LibriSpeech"]
    assert (data / "LibriSpeech" / "README.TXT").is_file(), "the tarball's files beside the subset come along"
    assert not tarball.exists(), "--keep-tarball false deletes it once the subset is complete"
    assert json.loads((data / SUBSET / MARKER).read_text())["source"] == "extracted from dev-clean.tar.gz"


def test_a_tarball_with_an_incomplete_subset_leaves_nothing_in_place(tmp_path, tarball):
    with pytest.raises(SubsetError, match="inside is incomplete"):
        install_subset(tmp_path / "data", SUBSET, tarball, expected_utterances=9)
    assert not (tmp_path / "data" / SUBSET).exists()
    assert not list((tmp_path / "data").glob(".extract-*"))
    with pytest.raises(SubsetError, match="holds no LibriSpeech/dev-other folder"):
        install_subset(tmp_path / "data", "LibriSpeech/dev-other", tarball)
    with pytest.raises(SubsetError, match="no tarball to extract it from"):
        install_subset(tmp_path / "data", SUBSET, tmp_path / "missing.tar.gz")
    assert tarball.exists(), "a failed extraction keeps the tarball"


def test_two_processes_extract_once(tmp_path, tarball):
    data = tmp_path / "data"
    results, errors = [], []

    def one() -> None:
        try:
            results.append(install_subset(data, SUBSET, tarball, expected_utterances=8).source)
        except Exception as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors and sorted(results) == ["extracted", "marked"]


def test_cli_extract_subset(tmp_path, tarball):
    data = tmp_path / "data"
    command = [sys.executable, "-m", "asr_s2s", "extract", "--subset", SUBSET, "--out-dir", str(data),
               "--expected-utterances", "8", str(tarball)]
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == str(data / SUBSET)
    next((data / SUBSET).rglob("*.flac")).unlink()
    (data / SUBSET / MARKER).unlink()
    done = subprocess.run(command, capture_output=True, text=True)
    assert done.returncode == 1 and "incomplete copy" in done.stderr and "Traceback" not in done.stderr
    done = subprocess.run(command[:4] + command[6:], capture_output=True, text=True)
    assert done.returncode == 2 and "go with --subset" in done.stderr
