"""asr_s2s.errors: one base class; suggestions for near-miss names."""

from __future__ import annotations

import pytest

from asr_s2s import errors


@pytest.mark.parametrize(
    "cls",
    [errors.AudioLoadError, errors.ManifestError, errors.TokenizerError, errors.ConfigError, errors.PluginError,
     errors.ModelPackageError, errors.CMVNError, errors.CheckpointError, errors.TrainingError],
)
def test_every_user_error_shares_the_base_class(cls):
    assert issubclass(cls, errors.AsrS2SError)


def test_did_you_mean():
    assert errors.did_you_mean("pblsm", ["pblstm", "attention"]) == " Did you mean 'pblstm'?"
    assert errors.did_you_mean("epoch", ["epochs", "epoch_s", "lr"]) == " Did you mean 'epochs' or 'epoch_s'?"
    assert errors.did_you_mean("zzz", ["epochs"]) == ""
    assert errors.did_you_mean("x", []) == ""


def test_python_dash_m_entry(monkeypatch, capsys):
    import runpy
    import sys

    monkeypatch.setattr(sys, "argv", ["asr-s2s", "--version"])
    with pytest.raises(SystemExit) as info:
        runpy.run_module("asr_s2s", run_name="__main__")
    assert info.value.code == 0 and "asr-s2s" in capsys.readouterr().out
