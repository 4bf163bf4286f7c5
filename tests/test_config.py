"""asr_s2s.config: strict YAML configs; a bad key or value is named with its path."""

from __future__ import annotations

import dataclasses

import pytest

from asr_s2s.lm import LMExperimentConfig, load_lm_config
from asr_s2s.config import (
    DecodeConfig,
    ExperimentConfig,
    ModelConfig,
    TrainConfig,
    from_dict,
    load_config,
    to_dict,
)
from asr_s2s.errors import ConfigError
from asr_s2s.features import SpecAugmentConfig

from conftest import REPO


def _write(tmp_path, text: str):
    path = tmp_path / "exp.yaml"
    path.write_text(text)
    return path


def _assert_error_names(path, fragments) -> None:
    """Loading ``path`` is a ConfigError whose message names the file and holds every fragment."""
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


def test_tiny_config_loads(tiny_config):
    assert tiny_config.model.encoder == {
        "name": "pblstm", "hidden_size": 48, "base_layers": 1, "pyramid_layers": 2, "dropout": 0.0,
    }
    assert tiny_config.model.specaug is None
    assert tiny_config.train.epochs == 2 and tiny_config.train.lr == 0.003
    assert tiny_config.train.warmup_steps == 5 and tiny_config.train.final_lr_ratio == TrainConfig().final_lr_ratio
    assert tiny_config.train.max_batch_seconds == 20.0 and isinstance(tiny_config.train.max_batch_seconds, float)
    assert tiny_config.decode.scorers == {"decoder": 1.0, "length_bonus": 0.0}


@pytest.mark.parametrize("path", sorted((REPO / "recipes").glob("*/conf/*.yaml")), ids=lambda p: p.name)
def test_recipe_configs_load(path):
    """Acoustic configs load as experiments; language-model configs (``lm_*.yaml``) as LM experiments."""
    if path.name.startswith("lm_"):
        assert isinstance(load_lm_config(path), LMExperimentConfig)
    else:
        assert isinstance(load_config(path), ExperimentConfig)


def test_empty_file_gives_defaults(tmp_path):
    assert load_config(_write(tmp_path, "")) == ExperimentConfig()


def test_nested_sections(tmp_path):
    cfg = load_config(_write(tmp_path, "model:\n  specaug: {freq_masks: 1, time_mask_frames: 10}\ntrain: {max_batch_size: 4}\n"))
    assert cfg.model.specaug == SpecAugmentConfig(freq_masks=1, time_mask_frames=10)
    assert cfg.train.max_batch_size == 4
    cfg = load_config(_write(tmp_path, "train: {max_batch_size: null, lr: 1}\n"))
    assert cfg.train.max_batch_size is None and cfg.train.lr == 1.0 and isinstance(cfg.train.lr, float)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("trian: {epochs: 1}\n", ["unknown key 'trian'", "Did you mean 'train'"]),
        ("train: {epoch: 3}\n", ["config.train", "unknown key 'epoch'", "Did you mean 'epochs'"]),
        ("model: {encodr: {name: pblstm}}\n", ["config.model", "'encodr'", "'encoder'"]),
        ("model: {specaug: {freq_mask: 2}}\n", ["config.model.specaug", "'freq_mask'", "'freq_masks'"]),
        ("decode: {beam: 3}\n", ["config.decode", "'beam'", "'beam_size'"]),
        ("train: {zzz: 3}\n", ["unknown key 'zzz'", "Known keys:", "epochs"]),
    ],
)
def test_unknown_keys_are_named_with_path_and_suggestion(tmp_path, text, fragments):
    _assert_error_names(_write(tmp_path, text), fragments)


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        ("train: {epochs: ten}\n", ["config.train.epochs", "expected int", "'ten'"]),
        ("train: {epochs: 2.5}\n", ["config.train.epochs", "expected int"]),
        ("train: {epochs: true}\n", ["config.train.epochs", "expected int"]),
        ("train: {lr: fast}\n", ["config.train.lr", "expected float"]),
        ("train: {tensorboard: 1}\n", ["config.train.tensorboard", "expected bool"]),
        ("model: {ctc_weight: [0.3]}\n", ["config.model.ctc_weight", "expected float"]),
        ("model: {encoder: pblstm}\n", ["config.model.encoder", "expected a mapping"]),
        ("decode: {scorers: {decoder: high}}\n", ["config.decode.scorers.decoder", "expected float"]),
        ("model: [1, 2]\n", ["config.model", "expected a mapping"]),
        ("model: {specaug: {freq_masks: two}}\n", ["config.model.specaug.freq_masks", "expected int"]),
    ],
)
def test_wrong_types_are_named(tmp_path, text, fragments):
    _assert_error_names(_write(tmp_path, text), fragments)


def test_top_level_must_be_a_mapping(tmp_path):
    with pytest.raises(ConfigError, match="expected a mapping"):
        load_config(_write(tmp_path, "- a\n- b\n"))


def test_missing_file_and_bad_yaml(tmp_path):
    with pytest.raises(ConfigError, match="no such config file"):
        load_config(tmp_path / "nope.yaml")
    path = _write(tmp_path, "model: {encoder: [\n")
    with pytest.raises(ConfigError, match=f"{path}: not valid YAML"):
        load_config(path)


def test_scientific_notation_floats(tmp_path):
    assert load_config(_write(tmp_path, "train: {lr: 1e-3}\n")).train.lr == pytest.approx(1e-3)


def test_to_dict_round_trip(tiny_config):
    assert from_dict(ExperimentConfig, to_dict(tiny_config)) == tiny_config
    default = ExperimentConfig()
    assert from_dict(ExperimentConfig, to_dict(default)) == default


def test_configs_are_frozen():
    for cls in (ModelConfig, TrainConfig, DecodeConfig, ExperimentConfig):
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(cls(), dataclasses.fields(cls)[0].name, None)



def test_scale_out_and_selection_fields(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("train: {accum_grad: 4, precision: fp32, speed_perturb: [0.9, 1, 1.1], "
                    "early_stopping_patience: 3, selection_metric: valid_cer}\n")
    train = load_config(path).train
    assert train.accum_grad == 4 and train.precision == "fp32" and train.speed_perturb == [0.9, 1.0, 1.1]
    assert train.early_stopping_patience == 3 and train.selection_metric == "valid_cer"
    for bad, message in [
        ("speed_perturb: [0.9, fast]", r"train.speed_perturb\[1\]: expected float"),
        ("speed_perturb: 0.9", "train.speed_perturb: expected a list"),
        ("speed_perturb: [3.0]", "factors must lie in"),
        ("accum_grad: 0", "accum_grad must be at least 1"),
        ("precision: fp16", "precision must be 'bf16' or 'fp32'"),
        ("selection_metric: wer", "selection_metric must be"),
        ("early_stopping_patience: 0", "early_stopping_patience must be at least 1"),
    ]:
        path.write_text(f"train: {{{bad}}}\n")
        with pytest.raises(ConfigError, match=message):
            load_config(path)


def test_librispeech_configs_load_and_use_4x_with_ctc():
    for name in ("las_100h", "las_960h", "las_tiny"):
        config = load_config(REPO / "recipes" / "librispeech" / "conf" / f"{name}.yaml")
        assert config.model.ctc_weight == 0.3 and config.model.encoder["pyramid_layers"] == 2, name
        assert config.train.augment[0] == {"name": "speed", "factors": [0.9, 1.0, 1.1]}, name
        assert config.train.augment[1]["name"] == "specaugment" and config.model.specaug is None, name
        assert config.model.decoder.get("attention_type", "location") == "location", name
    big = load_config(REPO / "recipes" / "librispeech" / "conf" / "las_960h.yaml").model
    assert 320 <= big.encoder["hidden_size"] <= 512 and big.decoder["num_layers"] in (1, 2)
