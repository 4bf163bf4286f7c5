"""asr_s2s.files and every writer on it: random temporary names that never follow a planted symlink,
the usual file modes, data flushed before a file replaces its old self, and package swaps with no gap."""

from __future__ import annotations

import json
import os
import stat

import pytest
import torch

import asr_s2s.package
from asr_s2s.checkpoints import read_checkpoint, write_checkpoint
from asr_s2s.features import CMVNStats
from asr_s2s.files import default_mode, write_atomically, write_text_atomically
from asr_s2s.package import FILES, load_package, save_package
from asr_s2s.tokenizer import CharTokenizer


def _plant_links(path, victim) -> None:
    """Symlinks at the temporary names a writer could guess (``.NAME.PID.tmp`` and the like) to ``victim``."""
    for name in (f".{path.name}.{os.getpid()}.tmp", f".{path.name}.tmp", f"{path.name}.tmp"):
        (path.parent / name).symlink_to(victim)


def test_a_planted_symlink_is_never_written_through(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    target = tmp_path / "out.txt"
    _plant_links(target, victim)
    write_text_atomically(target, "new\n")
    write_atomically(target, lambda tmp: tmp.write_text("newer\n"))
    assert victim.read_text() == "precious\n" and target.read_text() == "newer\n"
    assert not target.is_symlink()


@pytest.mark.parametrize("what", ["tokens.txt", "cmvn.json"])
def test_small_files_replace_a_symlink_instead_of_writing_through_it(tmp_path, what):
    victim = tmp_path / "victim.txt"
    victim.write_text("precious\n")
    target = tmp_path / what
    target.symlink_to(victim)
    if what == "tokens.txt":
        CharTokenizer().save(target)
        assert CharTokenizer.load(target).tokens == CharTokenizer().tokens
    else:
        CMVNStats((0.0,), (1.0,), 10).save(target)
        assert CMVNStats.load(target).frames == 10
    assert victim.read_text() == "precious\n" and not target.is_symlink()


def test_files_get_the_usual_mode(tmp_path):
    old = os.umask(0o022)
    try:
        path = write_text_atomically(tmp_path / "a.txt", "x")
        written = write_atomically(tmp_path / "b.bin", lambda tmp: tmp.write_bytes(b"x"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644 == stat.S_IMODE(written.stat().st_mode)
    assert default_mode(directory=True) & 0o700 == 0o700


def test_data_and_folder_entry_are_flushed_before_returning(tmp_path, monkeypatch):
    """After a power cut a checkpoint is its old or new self: its data and the rename are on disk."""
    synced = []
    real_fsync = os.fsync

    def recording_fsync(fd):
        synced.append(os.fstat(fd).st_ino)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    path = write_checkpoint({"epoch": 1, "w": torch.ones(3)}, tmp_path / "ckpt" / "epoch-1.pt")
    assert path.stat().st_ino in synced, "the file's data"
    assert path.parent.stat().st_ino in synced, "the folder entry of the rename"
    assert read_checkpoint(path)["epoch"] == 1


def test_a_package_swap_never_leaves_the_path_empty(overfit, make_model, tiny_config, registry, tmp_path, monkeypatch):
    path = tmp_path / "model"
    save_package(make_model(seed=3), tiny_config.decode, path, registry)
    gaps = []
    real_replace = os.replace

    def watching_replace(src, dst):
        real_replace(src, dst)
        if not (path / "config.yaml").is_file():
            gaps.append((src, dst))

    monkeypatch.setattr(asr_s2s.package.os, "replace", watching_replace)
    save_package(overfit.model, tiny_config.decode, path, registry)
    assert gaps == [], "a reader could find no package at all"
    assert sorted(p.name for p in path.iterdir()) == sorted(FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "no temporary or .old folder left"
    model, _ = load_package(path, registry)
    assert torch.equal(model.ctc.weight, overfit.model.ctc.weight)


def test_package_folders_are_readable_by_others(overfit, tiny_config, registry, tmp_path):
    old = os.umask(0o022)
    try:
        path = save_package(overfit.model, tiny_config.decode, tmp_path / "model", registry)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o755
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in path.iterdir())
    assert json.loads((path / "versions.json").read_text())["torch"] == torch.__version__
