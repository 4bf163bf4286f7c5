"""asr_s2s.package: self-contained model directories, loaded without unpickling."""

from __future__ import annotations

import importlib.metadata
import json
import pickle
import shutil

import pytest
import torch
import yaml

from asr_s2s.errors import ModelPackageError, PluginError
from asr_s2s.package import FILES, load_package, save_package
from asr_s2s.tokenizer import CharTokenizer

from conftest import greedy_texts


@pytest.fixture
def package_copy(trained_package, tmp_path):
    """A private copy of the trained package that a test may break."""
    return shutil.copytree(trained_package, tmp_path / "model")


def test_package_layout(trained_package):
    assert sorted(p.name for p in trained_package.iterdir()) == sorted(FILES)
    assert not [p for p in trained_package.parent.rglob("*") if p.suffix in (".pt", ".pkl", ".pickle", ".bin")]
    assert not [p for p in trained_package.parent.iterdir() if p != trained_package], "no temp or .old dirs left"
    versions = json.loads((trained_package / "versions.json").read_text())
    assert versions["asr-s2s"] == importlib.metadata.version("asr-s2s")
    assert versions["torch"] == torch.__version__
    assert f"asr-s2s {versions['asr-s2s']}" in versions["plugins"]
    config = yaml.safe_load((trained_package / "config.yaml").read_text())
    assert config["format_version"] == 1 and set(config) == {"format_version", "model", "decode"}


def test_round_trip_gives_identical_weights_and_greedy_output(trained_package, overfit, registry, fixture_batch, tiny_config):
    model, config = load_package(trained_package, registry)
    assert not model.training
    assert config.model == overfit.model.config and config.decode == tiny_config.decode
    assert model.tokenizer.tokens == overfit.model.tokenizer.tokens
    original = overfit.model.state_dict()
    loaded = model.state_dict()
    assert loaded.keys() == original.keys()
    for name, value in loaded.items():
        assert torch.equal(value, original[name]), name
    torch.testing.assert_close(model.frontend.mean, overfit.model.frontend.mean, atol=0, rtol=0)
    torch.testing.assert_close(model.frontend.inv_std, overfit.model.frontend.inv_std, atol=1e-7, rtol=1e-6)
    assert greedy_texts(model, fixture_batch) == greedy_texts(overfit.model, fixture_batch)


def test_loading_never_unpickles(trained_package, registry, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("load_package must not unpickle anything")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    monkeypatch.setattr(pickle, "Unpickler", refuse)
    monkeypatch.setattr(torch, "load", refuse)
    model, _ = load_package(trained_package, registry)
    assert model.vocab_size == 30


def test_saving_over_an_existing_package_replaces_it(overfit, make_model, tiny_config, registry, tmp_path):
    path = tmp_path / "model"
    save_package(make_model(seed=3), tiny_config.decode, path, registry)
    (path / "stray.txt").write_text("old")
    save_package(overfit.model, tiny_config.decode, path, registry)
    assert sorted(p.name for p in path.iterdir()) == sorted(FILES)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]
    model, _ = load_package(path, registry)
    assert torch.equal(model.ctc.weight, overfit.model.ctc.weight)


# -- broken packages ------------------------------------------------------------------------
def _raises(path, registry, *fragments) -> str:
    with pytest.raises(ModelPackageError) as info:
        load_package(path, registry)
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message
    return message


def test_not_a_directory(tmp_path, registry):
    _raises(tmp_path / "nothing", registry, "no such model directory")


def test_missing_file(package_copy, registry):
    (package_copy / "cmvn.json").unlink()
    _raises(package_copy, registry, str(package_copy), "missing cmvn.json")


def test_tokens_with_an_extra_token(package_copy, registry):
    tokens = CharTokenizer.load(package_copy / "tokens.txt").tokens + ["!"]
    CharTokenizer(tokens).save(package_copy / "tokens.txt")
    _raises(package_copy, registry, "model.safetensors", "do not match", "31 tokens")


def test_weights_of_a_different_size(package_copy, registry):
    config = yaml.safe_load((package_copy / "config.yaml").read_text())
    config["model"]["decoder"]["hidden_size"] = 80
    (package_copy / "config.yaml").write_text(yaml.safe_dump(config))
    _raises(package_copy, registry, "model.safetensors", "do not match", "config gives")


def test_truncated_weights(package_copy, registry):
    weights = package_copy / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    _raises(package_copy, registry, str(weights), "corrupt or truncated")


def test_garbage_weights(package_copy, registry):
    (package_copy / "model.safetensors").write_bytes(b"\x00" * 100)
    _raises(package_copy, registry, "model.safetensors")


@pytest.mark.parametrize(
    ("edit", "fragment"),
    [
        (lambda c: c.update(format_version=99), "format_version 99"),
        (lambda c: c.pop("format_version"), "format_version None"),
        (lambda c: c["model"].update(ctc_wieght=0.3), "ctc_wieght"),
        (lambda c: c["decode"].update(beam_size="wide"), "decode.beam_size"),
    ],
)
def test_bad_config_yaml(package_copy, registry, edit, fragment):
    config = yaml.safe_load((package_copy / "config.yaml").read_text())
    edit(config)
    (package_copy / "config.yaml").write_text(yaml.safe_dump(config))
    _raises(package_copy, registry, "config.yaml", fragment)


def test_config_yaml_that_is_a_list(package_copy, registry):
    (package_copy / "config.yaml").write_text("- just\n- a list\n")
    _raises(package_copy, registry, "config.yaml")


@pytest.mark.parametrize("text", ["", "just a string\n"])
def test_config_yaml_that_is_not_a_mapping(package_copy, registry, text):
    (package_copy / "config.yaml").write_text(text)
    _raises(package_copy, registry, "config.yaml")


def test_bad_cmvn(package_copy, registry):
    (package_copy / "cmvn.json").write_text('{"mean": [0.0], "std": [-1.0], "frames": 1}')
    _raises(package_copy, registry, "cmvn.json")


def test_package_needing_an_unknown_plugin(package_copy, registry):
    config = yaml.safe_load((package_copy / "config.yaml").read_text())
    config["model"]["encoder"] = {"name": "conformer"}
    (package_copy / "config.yaml").write_text(yaml.safe_dump(config))
    with pytest.raises(PluginError, match="unknown encoder 'conformer'.*Known encoders: pblstm"):
        load_package(package_copy, registry)


# -- untrusted packages: nothing in them runs ----------------------------------------------------
@pytest.mark.parametrize("torch_format", [True, False], ids=["torch-zip", "bare-pickle"])
def test_pickled_code_as_weights_is_refused_unrun(package_copy, registry, tmp_path, torch_format):
    """A .pt or pickle renamed model.safetensors: safetensors parses no pickle, so it is just corrupt weights."""
    from conftest import write_pickle_bomb

    marker = tmp_path / "marker"
    write_pickle_bomb(package_copy / "model.safetensors", marker, torch_format=torch_format)
    _raises(package_copy, registry, str(package_copy / "model.safetensors"), "corrupt or truncated weights")
    assert not marker.exists()


def test_yaml_that_would_run_code_is_refused_unrun(package_copy, registry, tmp_path):
    marker = tmp_path / "marker"
    (package_copy / "config.yaml").write_text(f"!!python/object/apply:os.system ['touch {marker}']\n")
    _raises(package_copy, registry, "config.yaml", "could not determine a constructor")
    assert not marker.exists()
