"""asr_s2s.checkpoints: atomic writes, and loads that refuse anything but plain data."""

from __future__ import annotations

import pytest
import torch

from asr_s2s.checkpoints import read_checkpoint, write_checkpoint
from asr_s2s.errors import CheckpointError

from conftest import write_pickle_bomb

STATE = {"model": {"w": torch.arange(4.0)}, "epoch": 3, "step": 12, "note": "plain data", "rng": [1, 2, 3]}


def test_round_trip_of_plain_data(tmp_path):
    path = write_checkpoint(STATE, tmp_path / "sub" / "epoch-3.pt")
    assert sorted(p.name for p in path.parent.iterdir()) == ["epoch-3.pt"], "no temporary file left"
    state = read_checkpoint(path, required=("model", "epoch"))
    assert torch.equal(state["model"]["w"], STATE["model"]["w"]) and state["epoch"] == 3 and state["rng"] == [1, 2, 3]


def test_the_crafted_file_really_runs_code_when_unpickled_unsafely(tmp_path):
    """The control: the bomb used below is live, so its marker staying absent means something."""
    path = write_pickle_bomb(tmp_path / "bomb.pt", tmp_path / "marker")
    torch.load(path, weights_only=False)
    assert (tmp_path / "marker").read_text() == "payload ran"


@pytest.mark.parametrize("torch_format", [True, False], ids=["torch-zip", "bare-pickle"])
def test_code_in_a_checkpoint_is_refused_unrun(tmp_path, torch_format):
    marker = tmp_path / "marker"
    path = write_pickle_bomb(tmp_path / "epoch-1.pt", marker, torch_format=torch_format)
    with pytest.raises(CheckpointError) as info:
        read_checkpoint(path)
    message = str(info.value)
    assert message.startswith(f"{path}: refused to load") and "could run code" in message
    assert "GLOBAL exec" in message if torch_format else "pickled object" in message
    assert not marker.exists()


@pytest.mark.parametrize("keep", [0.0, 0.1, 0.5, 0.99])
def test_truncated_checkpoint(tmp_path, keep):
    path = write_checkpoint(STATE, tmp_path / "epoch-3.pt")
    data = path.read_bytes()
    path.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(CheckpointError, match=f"^{path}: unreadable checkpoint, truncated or corrupt"):
        read_checkpoint(path)


def test_missing_not_a_dict_and_missing_keys(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        read_checkpoint(tmp_path / "none.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="holds a list, not a dict"):
        read_checkpoint(tmp_path / "list.pt")
    with pytest.raises(CheckpointError, match="missing key\\(s\\) optimizer"):
        read_checkpoint(write_checkpoint(STATE, tmp_path / "a.pt"), required=("model", "optimizer"))


def test_a_crash_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    """torch.save dies half way (disk full): the old checkpoint is untouched and loadable, no temp file is left."""
    path = write_checkpoint(STATE, tmp_path / "latest.pt")
    real_save = torch.save

    def dies_half_way(obj, f, *args, **kwargs):
        real_save(obj, f, *args, **kwargs)
        with open(f, "r+b") as handle:
            handle.truncate(handle.seek(0, 2) // 2)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", dies_half_way)
    with pytest.raises(CheckpointError, match="could not write checkpoint.*No space left on device.*previous checkpoints are intact"):
        write_checkpoint({**STATE, "epoch": 4}, path)
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_an_interrupt_while_writing_keeps_the_previous_file(tmp_path, monkeypatch):
    path = write_checkpoint(STATE, tmp_path / "latest.pt")

    def interrupted(obj, f, *args, **kwargs):
        open(f, "wb").write(b"PK\x03\x04 half a zip")
        raise KeyboardInterrupt

    monkeypatch.setattr(torch, "save", interrupted)
    with pytest.raises(KeyboardInterrupt):
        write_checkpoint({**STATE, "epoch": 4}, path)
    monkeypatch.undo()
    assert read_checkpoint(path)["epoch"] == 3 and sorted(p.name for p in tmp_path.iterdir()) == ["latest.pt"]


def test_checkpoint_averaging_refuses_a_crafted_checkpoint(tmp_path):
    """The other reader of training checkpoints (``asr_s2s.average``) goes through the same gate."""
    from asr_s2s.average import average_state_dicts

    good = write_checkpoint(STATE, tmp_path / "checkpoints" / "epoch-1.pt")
    marker = tmp_path / "marker"
    bomb = write_pickle_bomb(tmp_path / "checkpoints" / "epoch-2.pt", marker)
    with pytest.raises(CheckpointError, match="epoch-2.pt: refused to load"):
        average_state_dicts([good, bomb])
    assert not marker.exists()
