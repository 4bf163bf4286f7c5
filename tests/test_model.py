"""asr_s2s.model: frontend + encoder plugin + CTC head + decoder plugin, and the joint loss."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from asr_s2s.config import ModelConfig
from asr_s2s.errors import ConfigError
from asr_s2s.features import CMVNStats
from asr_s2s.model import ASRModel
from asr_s2s.tokenizer import normalize_text

from conftest import OVERFIT_MAX_STEPS


def test_components_come_from_the_registry(random_model, registry, tokenizer):
    assert isinstance(random_model.encoder, registry.get("encoder", "pblstm").cls)
    assert isinstance(random_model.decoder, registry.get("decoder", "attention").cls)
    assert random_model.vocab_size == len(tokenizer)
    assert random_model.ctc is not None and random_model.ctc.out_features == len(tokenizer)
    assert random_model.encoder.time_reduction == 4


def test_default_model_reduces_time_4x_when_ctc_is_on(tokenizer, registry):
    """8x leaves fewer encoder frames than characters, which makes CTC infeasible (DESIGN.md)."""
    config = ModelConfig()
    assert config.ctc_weight > 0
    model = ASRModel(config, tokenizer, CMVNStats.identity(80), registry)
    assert model.encoder.time_reduction == 4


def test_joint_loss(random_model, fixture_batch):
    b = fixture_batch
    model = random_model
    with torch.no_grad():
        out = model(b.feats, b.feat_lengths, b.tokens, b.token_lengths)
    for value in (out.loss, out.attention_loss, out.ctc_loss, out.accuracy):
        assert value.dim() == 0 and torch.isfinite(value)
    assert 0 <= out.accuracy <= 1
    # an untrained model is near-uniform over the vocabulary
    assert out.attention_loss.item() == pytest.approx(torch.log(torch.tensor(float(model.vocab_size))).item(), rel=0.2)
    w = model.config.ctc_weight
    expected = (1 - w) * out.attention_loss + w * out.ctc_loss / b.token_lengths.float().mean()
    torch.testing.assert_close(out.loss, expected)


def test_attention_only_model(make_model, fixture_batch):
    model = make_model(ctc_weight=0.0)
    assert model.ctc is None
    b = fixture_batch
    with torch.no_grad():
        out = model(b.feats, b.feat_lengths, b.tokens, b.token_lengths)
    assert out.ctc_loss is None and torch.equal(out.loss, out.attention_loss)
    with pytest.raises(RuntimeError, match="no CTC head"):
        model.ctc_log_probs(torch.zeros(1, 2, model.encoder.output_dim))


def test_every_parameter_gets_a_gradient(make_model, fixture_batch):
    model = make_model(seed=1).train()
    b = fixture_batch
    model(b.feats, b.feat_lengths, b.tokens, b.token_lengths).loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_loss_does_not_depend_on_batch_padding(random_model, fixture_batch):
    """The loss of one utterance is the same alone and padded to the longest of a batch."""
    b = fixture_batch
    i = int(b.feat_lengths.argmin())
    t, u = int(b.feat_lengths[i]), int(b.token_lengths[i])
    with torch.no_grad():
        alone = random_model(b.feats[i : i + 1, :t], b.feat_lengths[i : i + 1], b.tokens[i : i + 1, :u], b.token_lengths[i : i + 1])
        padded = random_model(b.feats[i : i + 1], b.feat_lengths[i : i + 1], b.tokens[i : i + 1], b.token_lengths[i : i + 1])
    assert b.feats.shape[1] > t and b.tokens.shape[1] > u
    torch.testing.assert_close(padded.loss, alone.loss, atol=1e-5, rtol=0)
    torch.testing.assert_close(padded.ctc_loss, alone.ctc_loss, atol=1e-4, rtol=0)


def test_every_utterance_encodes_the_same_alone_and_in_the_batch(random_model, fixture_batch):
    b = fixture_batch
    with torch.inference_mode():
        states, lengths = random_model.encode(b.feats, b.feat_lengths)
        for i, t in enumerate(b.feat_lengths.tolist()):
            alone, alone_len = random_model.encode(b.feats[i : i + 1, :t], b.feat_lengths[i : i + 1])
            assert alone_len.item() == lengths[i].item() == -(-t // 4)
            torch.testing.assert_close(states[i, : alone.shape[1]], alone[0], atol=1e-5, rtol=0)
            assert torch.all(states[i, alone.shape[1] :] == 0)


def test_invalid_model_configs(tokenizer, registry, tiny_config):
    with pytest.raises(ConfigError, match="model.ctc_weight"):
        ASRModel(dataclasses.replace(tiny_config.model, ctc_weight=1.5), tokenizer, CMVNStats.identity(80), registry)
    with pytest.raises(ConfigError, match="40 bins"):
        ASRModel(tiny_config.model, tokenizer, CMVNStats.identity(40), registry)


def test_tiny_model_overfits_a_handful_of_utterances(overfit, fixture_utterances):
    """Trained in the session fixture (seeded; Adam, lr 3e-3) until greedy decoding matches."""
    references = [normalize_text(u.text) for u in fixture_utterances]
    assert sorted(overfit.references) == sorted(references)
    assert [normalize_text(t) for t in overfit.texts] == overfit.references, f"after {overfit.steps} steps"
    assert overfit.steps <= OVERFIT_MAX_STEPS
