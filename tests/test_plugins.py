"""asr_s2s.registry: entry-point discovery, the component registry and its errors.

Third-party plugins are installed for real: a module plus a ``.dist-info``
folder with ``entry_points.txt`` on ``sys.path``, which is what pip leaves
behind, so ``importlib.metadata`` discovers them like any installed package.
"""

from __future__ import annotations

import dataclasses
import importlib.metadata

import pytest
import torch

from asr_s2s.errors import PluginError
from asr_s2s.model import ASRModel
from asr_s2s.registry import (
    DISABLE_AUTOLOAD_ENV,
    DISABLE_PLUGINS_ENV,
    ConfigKeyError,
    Registry,
    check_params,
    get_plugin_manager,
)
from asr_s2s.search import BeamSearch, SearchOptions, greedy_search
from asr_s2s.recognizer import build_scorers

from conftest import REPO, install_plugin

ASR_VERSION = importlib.metadata.version("asr-s2s")

CONV_SUBSAMPLE = '''
    """A third-party encoder: strided Conv1d subsampling, then a Linear projection."""
    import torch
    from torch import nn

    from asr_s2s.hookspecs import hookimpl
    from asr_s2s.interfaces import Encoder


    class ConvSubsampleEncoder(Encoder):
        name = "conv_subsample"

        def __init__(self, input_dim, channels=32, output_size=48, stride=4):
            super().__init__()
            self.stride = stride
            self.size = output_size
            self.conv = nn.Conv1d(input_dim, channels, kernel_size=stride, stride=stride)
            self.proj = nn.Linear(channels, output_size)

        @property
        def output_dim(self):
            return self.size

        @property
        def time_reduction(self):
            return self.stride

        def forward(self, feats, lengths):
            x = nn.functional.pad(feats, (0, 0, 0, (-feats.shape[1]) % self.stride))
            y = self.proj(torch.relu(self.conv(x.transpose(1, 2)).transpose(1, 2)))
            out_lengths = self.output_lengths(lengths)
            mask = torch.arange(y.shape[1], device=y.device)[None, :] < out_lengths[:, None]
            return y * mask.unsqueeze(-1), out_lengths


    @hookimpl
    def asr_s2s_register_encoders():
        return [ConvSubsampleEncoder]
'''


def _install_conv_subsample(tmp_path, monkeypatch, **kwargs):
    defaults = dict(module="thirdparty_asr", source=CONV_SUBSAMPLE, dist="thirdparty-asr", version="0.1", entry_point="thirdparty")
    install_plugin(tmp_path / "site", monkeypatch, **{**defaults, **kwargs})


# -- built-ins ---------------------------------------------------------------------------
def test_builtins_register_through_entry_points(registry):
    rows = {(c.kind, c.name): c for c in registry.components()}
    expected = {
        ("encoder", "pblstm"): "pblstm",
        ("decoder", "attention"): "attention",
        ("lm", "lstm"): "lstm_lm",
        ("scorer", "decoder"): "decoder_scorer",
        ("scorer", "length_bonus"): "length_coverage",
        ("scorer", "coverage"): "length_coverage",
        ("scorer", "ctc"): "ctc_prefix",
        ("scorer", "lm"): "lstm_lm",
        ("scorer", "ngram"): "ngram",
        ("scorer", "hotwords"): "hotwords",
        ("augmentation", "framing"): "framing",
        ("augmentation", "noise"): "noise",
        ("augmentation", "reverb"): "reverb",
        ("augmentation", "codec"): "channel",
        ("augmentation", "telephone"): "channel",
        ("augmentation", "gain"): "perturb",
        ("augmentation", "speed"): "perturb",
        ("augmentation", "pitch"): "perturb",
        ("augmentation", "tempo"): "perturb",
        ("augmentation", "vtlp"): "perturb",
        ("augmentation", "specaugment"): "specaugment",
    }
    for key, plugin in expected.items():
        info = rows[key]
        assert info.plugin == plugin
        assert info.distribution == f"asr-s2s {ASR_VERSION}"
        assert info.cls.name == key[1]
    assert registry.names("encoder") == sorted(registry.names("encoder"))
    assert set(rows) == set(expected)


def test_entry_points_are_declared_like_a_third_party_package():
    """Every built-in module with hooks is an entry point of group asr_s2s, installed as declared."""
    import tomllib

    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["entry-points"]["asr_s2s"]
    installed = {ep.name: ep.value for ep in importlib.metadata.distribution("asr-s2s").entry_points if ep.group == "asr_s2s"}
    assert installed == declared
    plugins = REPO / "plugins"  # modules, and packages such as ngram/ whose __init__.py holds the hooks
    modules = {p.stem: p for p in plugins.glob("*.py")} | {p.parent.name: p for p in plugins.glob("*/__init__.py")}
    with_hooks = {name for name, p in modules.items() if "@hookimpl" in p.read_text()}
    assert not [p for p in plugins.glob("*/*.py") if p.name != "__init__.py" and "@hookimpl" in p.read_text()]
    assert {value.removeprefix("asr_s2s_plugins.") for value in declared.values()} == with_hooks


def test_core_never_imports_a_concrete_component():
    import ast
    from pathlib import Path

    import asr_s2s

    for path in Path(asr_s2s.__file__).parent.glob("*.py"):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom) and node.module:
                assert not node.module.startswith("asr_s2s_plugins"), f"{path.name} imports {node.module}"
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("asr_s2s_plugins") for a in node.names), path.name


# -- a third-party plugin ---------------------------------------------------------------------
def test_third_party_encoder_is_discovered_listed_and_trains(
    tmp_path, monkeypatch, run_cli, tiny_config, tokenizer, cmvn, fixture_batch
):
    _install_conv_subsample(tmp_path, monkeypatch)

    registry = Registry()
    info = registry.get("encoder", "conv_subsample")
    assert (info.plugin, info.distribution) == ("thirdparty", "thirdparty-asr 0.1")
    assert "pblstm" in registry.names("encoder"), "built-ins still load beside it"

    code, out, _ = run_cli("plugins")
    assert code == 0
    rows = [line.split() for line in out.splitlines()]
    assert ["encoder", "conv_subsample", "thirdparty", "thirdparty-asr", "0.1"] in rows

    config = dataclasses.replace(
        tiny_config.model, encoder={"name": "conv_subsample", "channels": 16, "output_size": 40}
    )
    torch.manual_seed(0)
    model = ASRModel(config, tokenizer, cmvn, registry)
    assert type(model.encoder).__name__ == "ConvSubsampleEncoder" and model.encoder.output_dim == 40
    b = fixture_batch
    out = model(b.feats, b.feat_lengths, b.tokens, b.token_lengths)
    assert torch.isfinite(out.loss) and out.ctc_loss is not None and torch.isfinite(out.ctc_loss)
    out.loss.backward()
    assert model.encoder.conv.weight.grad is not None and model.encoder.conv.weight.grad.abs().sum() > 0

    model.eval()
    states, lengths = model.encode(b.feats, b.feat_lengths)
    assert states.shape[:2] == (len(b), -(-b.feats.shape[1] // 4)) and states.shape[2] == 40
    assert torch.equal(lengths, (b.feat_lengths + 3) // 4)
    hyps, _ = greedy_search(model.decoder, states, lengths, tokenizer.sos_id, tokenizer.eos_id)
    assert len(hyps) == len(b)
    search = BeamSearch(
        build_scorers(model, registry, {"decoder": 1.0}, {}), SearchOptions(beam_size=2), 1, 1, len(tokenizer)
    )
    assert all(len(n) == 1 for n in search(states, lengths))


def test_duplicate_component_names_name_both_plugins(tmp_path, monkeypatch):
    _install_conv_subsample(tmp_path, monkeypatch)
    _install_conv_subsample(tmp_path, monkeypatch, module="other_asr", dist="other-asr", version="2.3", entry_point="other")
    with pytest.raises(PluginError) as info:
        Registry()
    message = str(info.value)
    assert "'conv_subsample'" in message
    assert "'thirdparty' (thirdparty-asr 0.1)" in message and "'other' (other-asr 2.3)" in message
    # blocking either one resolves the clash
    assert Registry(get_plugin_manager(disable=["other"])).get("encoder", "conv_subsample").plugin == "thirdparty"


def test_plugin_claiming_a_builtin_name(tmp_path, monkeypatch):
    source = CONV_SUBSAMPLE.replace('name = "conv_subsample"', 'name = "pblstm"')
    _install_conv_subsample(tmp_path, monkeypatch, source=source)
    with pytest.raises(PluginError) as info:
        Registry()
    message = str(info.value)
    assert "'pblstm'" in message and f"asr-s2s {ASR_VERSION}" in message and "thirdparty-asr 0.1" in message


BROKEN = '''
    raise ImportError("libfoo.so.3: cannot open shared object file")
'''


def test_plugin_whose_import_raises(tmp_path, monkeypatch, run_cli):
    install_plugin(tmp_path / "site", monkeypatch, "broken_asr", BROKEN, dist="broken-asr", version="1.0", entry_point="broken")
    with pytest.raises(PluginError) as info:
        get_plugin_manager()
    message = str(info.value)
    assert "'broken'" in message and "broken-asr 1.0" in message and "libfoo.so.3" in message
    assert "--disable-plugin broken" in message and f"{DISABLE_PLUGINS_ENV}=broken" in message

    # the ways around it
    assert "pblstm" in Registry(get_plugin_manager(disable=["broken"])).names("encoder")
    monkeypatch.setenv(DISABLE_PLUGINS_ENV, "something_else, broken")
    assert "pblstm" in Registry().names("encoder")
    monkeypatch.delenv(DISABLE_PLUGINS_ENV)

    code, out, err = run_cli("plugins")
    assert code == 2 and "'broken'" in err and "broken-asr 1.0" in err and out == ""
    code, out, err = run_cli("plugins", "--disable-plugin", "broken")
    assert code == 0 and "pblstm" in out and "broken" not in out


def test_plugin_whose_hook_raises(tmp_path, monkeypatch):
    source = '''
        from asr_s2s.hookspecs import hookimpl

        @hookimpl
        def asr_s2s_register_scorers():
            raise RuntimeError("scorer table corrupt")
    '''
    install_plugin(tmp_path / "site", monkeypatch, "raising_asr", source, dist="raising-asr", version="0.3", entry_point="raising")
    with pytest.raises(PluginError) as info:
        Registry()
    message = str(info.value)
    assert "'raising'" in message and "raising-asr 0.3" in message and "scorer table corrupt" in message
    assert "asr_s2s_register_scorers" in message and "--disable-plugin raising" in message
    assert "decoder" in Registry(get_plugin_manager(disable=["raising"])).names("scorer"), "the way around it"


def test_component_without_a_name(tmp_path, monkeypatch):
    source = CONV_SUBSAMPLE.replace('name = "conv_subsample"', "")
    _install_conv_subsample(tmp_path, monkeypatch, source=source)
    with pytest.raises(PluginError, match="'thirdparty'.*without a string class attribute 'name'"):
        Registry()


def test_disable_autoload_loads_nothing(monkeypatch):
    monkeypatch.setenv(DISABLE_AUTOLOAD_ENV, "1")
    registry = Registry()
    assert registry.components() == []
    with pytest.raises(PluginError, match=r"Known encoders: \(none\)"):
        registry.get("encoder", "pblstm")


def test_extra_plugins_register_in_code_without_autoload():
    import asr_s2s_plugins.decoder_scorer
    import asr_s2s_plugins.length_coverage

    plugins = [asr_s2s_plugins.decoder_scorer, asr_s2s_plugins.length_coverage]
    registry = Registry(get_plugin_manager(extra_plugins=plugins, autoload=False))
    assert [(c.kind, c.name) for c in registry.components()] == [
        ("scorer", "coverage"), ("scorer", "decoder"), ("scorer", "length_bonus")
    ]
    assert {c.distribution for c in registry.components()} == {"(registered in code)"}


# -- building components from config -------------------------------------------------------
def test_unknown_name_lists_known_and_suggests(registry):
    with pytest.raises(PluginError) as info:
        registry.get("encoder", "pblsm")
    message = str(info.value)
    assert "unknown encoder 'pblsm'" in message and "Did you mean 'pblstm'?" in message
    assert "Known encoders: pblstm" in message and "asr-s2s plugins" in message


def test_unknown_name_in_a_model_config(registry, tiny_config, tokenizer, cmvn):
    config = dataclasses.replace(tiny_config.model, decoder={"name": "atention"})
    with pytest.raises(PluginError, match=r"^model\.decoder: unknown decoder 'atention'\. Did you mean 'attention'\?"):
        ASRModel(config, tokenizer, cmvn, registry)


def test_typo_in_a_param_key_is_named(registry, tiny_config, tokenizer, cmvn):
    encoder = {**tiny_config.model.encoder, "hiden_size": 32}
    del encoder["hidden_size"]
    config = dataclasses.replace(tiny_config.model, encoder=encoder)
    with pytest.raises(ConfigKeyError) as info:
        ASRModel(config, tokenizer, cmvn, registry)
    message = str(info.value)
    assert "model.encoder" in message and "'pblstm'" in message
    assert "unknown key 'hiden_size'" in message and "Did you mean 'hidden_size'?" in message
    assert "Accepted keys:" in message and "input_dim" not in message.split("Accepted keys:")[1]


def test_keys_the_toolkit_sets_cannot_be_configured(registry):
    with pytest.raises(ConfigKeyError, match="'input_dim' is set by the toolkit"):
        registry.build("encoder", {"name": "pblstm", "input_dim": 40}, "model.encoder", input_dim=80)


def test_missing_name_key(registry):
    with pytest.raises(PluginError, match="model.encoder: missing key 'name'.*pblstm"):
        registry.build("encoder", {"hidden_size": 8}, "model.encoder", input_dim=80)


def test_missing_required_param():
    def factory(input_dim, depth, width=3):
        return None

    with pytest.raises(ConfigKeyError, match="missing required key\\(s\\): depth"):
        check_params(factory, {"width": 4}, where="model.encoder", injected={"input_dim"})
    check_params(factory, {"depth": 2}, where="model.encoder", injected={"input_dim"})


def test_scorer_params_are_checked(registry, random_model):
    with pytest.raises(ConfigKeyError, match="decode.scorers.length_bonus.*unknown key 'bonus'"):
        registry.build("scorer", {"name": "length_bonus", "bonus": 2}, "decode.scorers.length_bonus", model=random_model)


def test_build_passes_params(registry):
    encoder = registry.build(
        "encoder", {"name": "pblstm", "hidden_size": 8, "base_layers": 0, "pyramid_layers": 3}, "model.encoder", input_dim=20
    )
    assert encoder.output_dim == 16 and encoder.time_reduction == 8


def test_plugin_with_a_misspelled_hook(tmp_path, monkeypatch):
    source = '''
        from asr_s2s.hookspecs import hookimpl

        @hookimpl
        def asr_s2s_register_encoder():
            return []
    '''
    install_plugin(tmp_path / "site", monkeypatch, "typo_asr", source, dist="typo-asr", version="0.1", entry_point="typo")
    with pytest.raises(PluginError) as info:
        get_plugin_manager()
    message = str(info.value)
    assert "asr_s2s_register_encoder" in message and "typo-asr 0.1" in message
    assert "pblstm" in Registry(get_plugin_manager(disable=["typo"])).names("encoder")


DECODER_AND_SCORER = '''
    import torch

    from asr_s2s.hookspecs import hookimpl
    from asr_s2s.interfaces import Scorer
    from asr_s2s_plugins.attention import AttentionDecoder


    class ContentSpeller(AttentionDecoder):
        """The built-in speller with content-based attention, under its own name."""

        name = "content_speller"

        def __init__(self, encoder_dim, vocab_size, sos_id, hidden_size=32):
            super().__init__(encoder_dim, vocab_size, sos_id, hidden_size=hidden_size, embed_dim=16,
                             attention_type="content", attention_dim=24, dropout=0.0)


    class EosPenalty(Scorer):
        """-1 for ending, 0 otherwise."""

        name = "eos_penalty"

        def __init__(self, vocab_size, eos):
            self.vocab_size, self.eos = vocab_size, eos

        @classmethod
        def from_model(cls, model):
            return cls(model.vocab_size, model.tokenizer.eos_id)

        def init_state(self, states, state_lengths):
            return None

        def score(self, prefix, state):
            scores = prefix.new_zeros(prefix.shape[0], self.vocab_size, dtype=torch.float32)
            scores[:, self.eos] = -1.0
            return scores, None

        def select(self, state, index, tokens):
            return None


    @hookimpl
    def asr_s2s_register_decoders():
        return [ContentSpeller]


    @hookimpl
    def asr_s2s_register_scorers():
        return [EosPenalty]
'''


def test_third_party_decoder_and_scorer(tmp_path, monkeypatch, tiny_config, tokenizer, cmvn, fixture_batch):
    install_plugin(tmp_path / "site", monkeypatch, "speller_asr", DECODER_AND_SCORER, dist="speller-asr", version="1.2", entry_point="speller")
    registry = Registry()
    assert registry.get("decoder", "content_speller").distribution == "speller-asr 1.2"
    assert registry.get("scorer", "eos_penalty").plugin == "speller"
    config = dataclasses.replace(tiny_config.model, decoder={"name": "content_speller", "hidden_size": 24})
    torch.manual_seed(0)
    model = ASRModel(config, tokenizer, cmvn, registry).eval()
    assert not model.decoder.attention.location
    b = fixture_batch
    assert torch.isfinite(model(b.feats, b.feat_lengths, b.tokens, b.token_lengths).loss)
    weights = {"decoder": 1.0, "eos_penalty": 2.0}
    search = BeamSearch(build_scorers(model, registry, weights, {}), SearchOptions(beam_size=2, weights=weights), 1, 1, len(tokenizer))
    with torch.inference_mode():
        states, lengths = model.encode(b.feats, b.feat_lengths)
        for (hyp,) in search(states, lengths):
            assert hyp.scores["eos_penalty"] == -1.0
            assert hyp.score == pytest.approx(hyp.scores["decoder"] - 2.0, abs=1e-6)
