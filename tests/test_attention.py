"""asr_s2s_plugins.attention: the LAS speller, teacher forced and step by step."""

from __future__ import annotations

import pytest
import torch

import asr_s2s_plugins.attention.attention as attention_module
from asr_s2s_plugins.attention import Attention, AttentionDecoder
from asr_s2s.layers import length_mask

V, D = 12, 10


def _decoder(attention_type: str = "location", **kwargs) -> AttentionDecoder:
    torch.manual_seed(0)
    params = dict(hidden_size=16, embed_dim=8, attention_dim=12, conv_channels=3, conv_kernel=5, dropout=0.0)
    params.update(kwargs)
    return AttentionDecoder(D, V, sos_id=1, attention_type=attention_type, **params).eval()


def _memory(lengths: list[int], seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths)
    states = torch.randn(len(lengths), max(lengths), D, generator=g) * length_mask(lens, max(lengths)).unsqueeze(-1)
    return states, lens


def _tokens(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    tokens = torch.randint(2, V, (batch, length), generator=g)
    tokens[:, 0] = 1
    return tokens


@pytest.mark.parametrize("kind", ["location", "content"])
def test_teacher_forced_shapes_and_attention_weights(kind):
    decoder = _decoder(kind)
    states, lens = _memory([7, 4, 9])
    tokens = _tokens(3, 6)
    logits, weights = decoder(states, lens, tokens)
    assert logits.shape == (3, 6, V) and weights.shape == (3, 6, 9)
    mask = length_mask(lens, 9).unsqueeze(1).expand_as(weights)
    assert torch.all(weights[~mask] == 0), "no attention on padding"
    torch.testing.assert_close(weights.sum(-1), torch.ones(3, 6))


@pytest.mark.parametrize(("kind", "layers"), [("location", 1), ("content", 1), ("location", 2)])
def test_step_by_step_equals_teacher_forcing(kind, layers):
    decoder = _decoder(kind, num_layers=layers)
    states, lens = _memory([7, 4, 9])
    tokens = _tokens(3, 6)
    logits, weights = decoder(states, lens, tokens)
    state = decoder.init_state(states, lens)
    for u in range(tokens.shape[1]):
        logp, state = decoder.step(tokens[:, u], state)
        torch.testing.assert_close(logp, torch.log_softmax(logits[:, u], -1), atol=1e-5, rtol=0)
        torch.testing.assert_close(state["attention"], weights[:, u], atol=1e-6, rtol=0)


@pytest.mark.parametrize(("lengths", "table"), [([7, 4, 9], "mixed_memory"), ([13, 5, 12], "gate_weight")])
@pytest.mark.parametrize(("kind", "layers"), [("location", 1), ("content", 1), ("location", 2)])
def test_search_steps_equal_teacher_forcing(kind, layers, lengths, table):
    """Without autograd a step runs on the search tables: the encoder states through the context weights
    while that costs fewer products (short memories here, D = 10, 4H + V = 76), else the fused gate weight."""
    decoder = _decoder(kind, num_layers=layers)
    states, lens = _memory(lengths)
    tokens = _tokens(3, 6)
    logits, weights = decoder(states, lens, tokens)
    state = decoder.init_state(states, lens)
    with torch.inference_mode():
        for u in range(tokens.shape[1]):
            logp, state = decoder.step(tokens[:, u], state)
            torch.testing.assert_close(logp, torch.log_softmax(logits[:, u], -1), atol=1e-5, rtol=0)
            torch.testing.assert_close(state["attention"], weights[:, u], atol=1e-6, rtol=0)
    other = ({"mixed_memory", "gate_weight"} - {table}).pop()
    assert table in state and other not in state


def test_select_gathers_hypotheses():
    """Rows are hypotheses of one utterance (select keeps per-utterance memory as it is)."""
    decoder = _decoder()
    one, one_len = _memory([6])
    states, lens = one.expand(4, -1, -1), one_len.expand(4)
    state = decoder.init_state(states, lens)
    _, state = decoder.step(torch.tensor([1, 2, 3, 4]), state)
    index = torch.tensor([2, 2, 0, 1])
    chosen = decoder.select(state, index)
    next_tokens = torch.tensor([5, 6, 7, 8])
    logp_selected, _ = decoder.step(next_tokens, chosen)
    # the same as having run rows 2, 2, 0, 1 from the start
    fresh = decoder.init_state(states[index], lens[index])
    _, fresh = decoder.step(torch.tensor([1, 2, 3, 4])[index], fresh)
    logp_fresh, _ = decoder.step(next_tokens, fresh)
    torch.testing.assert_close(logp_selected, logp_fresh, atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", ["location", "content"])
def test_beam_state_keeps_memory_once_and_equals_repeated_rows(kind):
    """``init_beam_state`` keeps each utterance's memory once; its steps, select and
    compact equal those of ``init_state`` on every utterance's states repeated per hypothesis."""
    decoder, beam = _decoder(kind), 3
    states, lens = _memory([7, 4, 9])
    grouped = decoder.init_beam_state(states, lens, beam)
    repeated = decoder.init_state(states.repeat_interleave(beam, 0), lens.repeat_interleave(beam))
    assert grouped["memory"].shape[0] == 3 and repeated["memory"].shape[0] == 9
    tokens = _tokens(9, 4, seed=1)
    index = torch.tensor([1, 1, 0, 5, 3, 4, 8, 8, 6])  # survivors stay within their utterance
    with torch.inference_mode():
        for u in range(tokens.shape[1]):
            logp_g, grouped = decoder.step(tokens[:, u], grouped)
            logp_r, repeated = decoder.step(tokens[:, u], repeated)
            torch.testing.assert_close(logp_g, logp_r, atol=1e-5, rtol=0)
            torch.testing.assert_close(grouped["attention"], repeated["attention"], atol=1e-6, rtol=0)
            grouped, repeated = decoder.select(grouped, index), decoder.select(repeated, index)
        rows = torch.tensor([0, 1, 2, 6, 7, 8])  # drop the second utterance
        grouped, repeated = decoder.compact(grouped, rows), decoder.compact(repeated, rows)
        assert grouped["memory"].shape[0] == 2
        logp_g, _ = decoder.step(tokens[rows, 0], grouped)
        logp_r, _ = decoder.step(tokens[rows, 0], repeated)
    torch.testing.assert_close(logp_g, logp_r, atol=1e-5, rtol=0)


def test_decoding_is_padding_invariant():
    decoder = _decoder()
    states, lens = _memory([5, 11, 8])
    tokens = _tokens(3, 7)
    batched, _ = decoder(states, lens, tokens)
    for b, n in enumerate(lens.tolist()):
        alone, _ = decoder(states[b : b + 1, :n], lens[b : b + 1], tokens[b : b + 1])
        torch.testing.assert_close(batched[b], alone[0], atol=1e-5, rtol=0)


def test_attention_module_context_is_weighted_memory():
    torch.manual_seed(0)
    attention = Attention(memory_dim=D, query_dim=4, attention_dim=6, conv_channels=2, conv_kernel=3)
    states, lens = _memory([5, 3])
    mask = length_mask(lens, 5)
    previous = mask.float() / mask.sum(-1, keepdim=True)
    context, weights = attention(states, attention.project_memory(states), mask, torch.randn(2, 4), previous)
    torch.testing.assert_close(context, torch.einsum("nt,ntd->nd", weights, states))
    assert torch.all(weights[~mask] == 0) and torch.all(weights[mask] > 0)


def _textbook_weights(attention: Attention, states, mask, query, previous) -> torch.Tensor:
    """softmax(w^T tanh(W m + c + V q + U (F * a_prev)) + b), written out as in Chorowski et al. 2015."""
    h = attention.memory_proj(states).unsqueeze(1) + attention.query_proj(query).view(states.shape[0], -1, 1,
                                                                                         attention.query_proj.out_features)
    if attention.location:
        location = attention.conv(previous.unsqueeze(1)).transpose(1, 2)  # (N, T', C)
        h = h + attention.location_proj(location).view(h.shape)
    energies = attention.energy(torch.tanh(h)).squeeze(-1)
    return torch.softmax(energies.masked_fill(~mask.unsqueeze(1), float("-inf")), -1).view(previous.shape)


@pytest.mark.parametrize("grad", [True, False])
@pytest.mark.parametrize("channels", [3, 0])
@pytest.mark.parametrize("beam", [1, 4])
def test_sigmoid_energies_give_the_tanh_attention_weights(grad, channels, beam):
    """2 w^T sigmoid(2h) + b differs from w^T tanh(h) + b by a constant per query: the same weights, in training
    (autograd) and in search (in place, in a reused scratch tensor), for one or several hypotheses per utterance."""
    torch.manual_seed(0)
    attention = Attention(memory_dim=D, query_dim=4, attention_dim=6, conv_channels=channels, conv_kernel=5)
    states, lens = _memory([7, 4, 9])
    mask = length_mask(lens, 9)
    n = 3 * beam
    previous = torch.softmax(torch.randn(n, 9).masked_fill(~mask.repeat_interleave(beam, 0), float("-inf")), -1)
    query = torch.randn(n, 4)
    expected = _textbook_weights(attention, states, mask, query, previous)
    scratch = torch.full((n * 9 * 6 + 5,), float("nan"))  # stale contents must not leak into the result
    with torch.set_grad_enabled(grad):
        for _ in range(2):  # the second call reuses the scratch tensor
            context, weights = attention(states, attention.project_memory(states), mask, query, previous, scratch=scratch)
            torch.testing.assert_close(weights, expected, atol=1e-6, rtol=1e-5)
            torch.testing.assert_close(context, torch.einsum("bkt,btd->bkd", weights.view(3, beam, 9), states).view(n, D))
    assert bool(torch.isnan(scratch[: n * 9 * 6]).all()) == grad  # search fills it; autograd never writes into it


@pytest.mark.parametrize("kernel, frames", [(3, 2), (5, 5), (7, 20), (31, 9)])
def test_toeplitz_location_features_equal_the_convolution(kernel, frames):
    """Decoding's Toeplitz product gives the zero-padded convolution's energies, short and long utterances alike."""
    torch.manual_seed(0)
    attention = Attention(memory_dim=D, query_dim=4, attention_dim=6, conv_channels=3, conv_kernel=kernel)
    states, lens = _memory([frames, max(1, frames - 1)])
    mask = length_mask(lens, frames)
    previous = torch.softmax(torch.randn(2, frames).masked_fill(~mask, float("-inf")), -1)
    query, projected = torch.randn(2, 4), attention.project_memory(states)
    with torch.inference_mode():
        matrix = attention.location_matrix(frames)
        assert matrix is not None and matrix.shape == (frames, frames * 3)
        expected = attention(states, projected, mask, query, previous)
        got = attention(states, projected, mask, query, previous, matrix)
    for e, g in zip(expected, got):
        torch.testing.assert_close(g, e, atol=1e-6, rtol=1e-5)


def test_toeplitz_only_where_it_is_cheaper():
    location = Attention(memory_dim=D, query_dim=4, attention_dim=6, conv_channels=2, conv_kernel=5)
    content = Attention(memory_dim=D, query_dim=4, attention_dim=6, conv_channels=0, conv_kernel=5)
    assert location.location_matrix(20) is not None and location.location_matrix(21) is None  # 4 kernel widths
    assert content.location_matrix(3) is None
    decoder = _decoder()
    assert "location_matrix" in decoder.init_state(*_memory([9]))
    assert "location_matrix" not in decoder.init_state(*_memory([500]))


def test_training_through_the_toeplitz_matrix_gives_the_convolutions_gradients():
    """Teacher forcing reaches the same loss and gradients whether the location filters convolve or multiply."""
    torch.manual_seed(0)
    decoder = _decoder()
    states, lens = _memory([9, 6])
    tokens = _tokens(2, 7)
    results = []
    for span in (attention_module.TOEPLITZ_MAX_SPAN, 0):  # 0: the matrix is never built
        decoder.zero_grad()
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(attention_module, "TOEPLITZ_MAX_SPAN", span)
            assert ("location_matrix" in decoder.init_state(states, lens)) == (span > 0)
            logits, _ = decoder(states, lens, tokens)
        logits.logsumexp(-1).sum().backward()
        results.append((logits.detach(), [p.grad.clone() for p in decoder.parameters()]))
    (toeplitz, toeplitz_grads), (conv, conv_grads) = results
    torch.testing.assert_close(toeplitz, conv, atol=1e-5, rtol=1e-5)
    for got, expected in zip(toeplitz_grads, conv_grads):
        torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)


def test_scheduled_sampling_only_while_training():
    tokens = _tokens(2, 8)
    states, lens = _memory([6, 9])
    plain = _decoder()
    sampled = _decoder(sampling_rate=1.0)
    sampled.load_state_dict(plain.state_dict())
    torch.testing.assert_close(sampled(states, lens, tokens)[0], plain(states, lens, tokens)[0])
    sampled.train()
    plain.train()
    assert not torch.allclose(sampled(states, lens, tokens)[0], plain(states, lens, tokens)[0])


def test_scheduled_sampling_feeds_back_the_models_own_prediction():
    """At rate 1, training-mode teacher forcing equals stepping on the argmax of each previous step."""
    tokens = _tokens(2, 8)
    states, lens = _memory([6, 9])
    decoder = _decoder(sampling_rate=1.0).train()  # dropout is 0: train mode differs only by the sampling
    with torch.no_grad():
        logits, _ = decoder(states, lens, tokens)
        state = decoder.init_state(states, lens)
        fed = tokens[:, 0]
        for u in range(tokens.shape[1]):
            logp, state = decoder.step(fed, state)
            torch.testing.assert_close(logp, torch.log_softmax(logits[:, u], -1), atol=1e-5, rtol=0)
            fed = logp.argmax(-1)


def test_location_matrix_is_cast_once_under_autocast():
    """Under bf16 autocast the stored matrix is bf16 already (each step would otherwise keep its own copy)."""
    decoder = _decoder().train()
    states, lens = _memory([9, 6])
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert decoder.init_state(states, lens)["location_matrix"].dtype == torch.bfloat16
        logits, _ = decoder(states, lens, _tokens(2, 5))
        logits.float().logsumexp(-1).sum().backward()
    assert decoder.init_state(states, lens)["location_matrix"].dtype == torch.float32
    assert decoder.attention.conv.weight.grad is not None and decoder.attention.conv.weight.grad.abs().sum() > 0


def test_two_layer_decoder_started_from_a_two_layer_lm_is_that_lm_without_context():
    from asr_s2s_plugins.lstm_lm import LSTMLanguageModel

    torch.manual_seed(0)
    lm = LSTMLanguageModel(V, embed_dim=8, hidden_size=16, num_layers=2, dropout=0.0).eval()
    decoder = _decoder(num_layers=2)
    decoder.init_from_language_model(lm)
    tokens = _tokens(3, 6)
    states = torch.zeros(3, 5, D)  # zero context: the decoder is left with the LM's weights alone
    with torch.no_grad():
        logits, _ = decoder(states, torch.tensor([5, 3, 4]), tokens)
        torch.testing.assert_close(logits, lm(tokens), atol=1e-5, rtol=1e-5)


def test_invalid_params():
    with pytest.raises(ValueError, match="conv_kernel must be odd"):
        _decoder(conv_kernel=4)
    with pytest.raises(ValueError, match="attention_type"):
        _decoder("dot")
    with pytest.raises(ValueError, match="sampling_rate"):
        _decoder(sampling_rate=1.5)
