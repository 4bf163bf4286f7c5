"""asr_s2s_plugins.pblstm and .blstm: the pyramidal listener and its padding-exact BLSTM."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from asr_s2s.layers import MaskedBLSTM, length_mask, reverse_within_lengths
from asr_s2s_plugins.pblstm import PyramidalBLSTMEncoder, pyramid_join


def _padded(lengths: list[int], dim: int, garbage: bool, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch whose padding is zero, or random garbage."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(len(lengths), max(lengths), dim, generator=g)
    if not garbage:
        x = x * length_mask(torch.tensor(lengths), max(lengths)).unsqueeze(-1)
    return x, torch.tensor(lengths)


def _encoder(base: int, pyramid: int, hidden: int = 6, input_dim: int = 5) -> PyramidalBLSTMEncoder:
    torch.manual_seed(base * 10 + pyramid)
    return PyramidalBLSTMEncoder(input_dim, hidden_size=hidden, base_layers=base, pyramid_layers=pyramid, dropout=0.0).eval()


# -- helpers --------------------------------------------------------------------------------
def test_reverse_within_lengths():
    x = torch.arange(2 * 5, dtype=torch.float32).reshape(2, 5, 1)
    out = reverse_within_lengths(x, torch.tensor([3, 5]))
    assert out[0, :, 0].tolist() == [2, 1, 0, 3, 4]
    assert out[1, :, 0].tolist() == [9, 8, 7, 6, 5]
    torch.testing.assert_close(reverse_within_lengths(out, torch.tensor([3, 5])), x)


def test_length_mask():
    assert length_mask(torch.tensor([0, 2, 3]), 3).tolist() == [[False] * 3, [True, True, False], [True] * 3]


@pytest.mark.parametrize("t", [1, 2, 7, 8])
def test_pyramid_join_pairs_adjacent_frames(t):
    x, lengths = _padded([t, max(1, t - 1)], 3, garbage=False)
    joined, new_lengths = pyramid_join(x, lengths)
    assert joined.shape == (2, math.ceil(t / 2), 6)
    assert new_lengths.tolist() == [math.ceil(n / 2) for n in lengths.tolist()]
    padded = torch.nn.functional.pad(x, (0, 0, 0, t % 2))
    for j in range(joined.shape[1]):
        torch.testing.assert_close(joined[:, j], torch.cat([padded[:, 2 * j], padded[:, 2 * j + 1]], -1))


# -- the encoder: shapes and lengths ------------------------------------------------------------------
@pytest.mark.parametrize(("base", "pyramid"), [(1, 0), (1, 1), (1, 2), (0, 3), (2, 3)])
def test_output_shapes_and_exact_lengths(base, pyramid):
    lengths = [53, 1, 2, 3, 4, 5, 16, 17, 31, 33]
    encoder = _encoder(base, pyramid)
    x, lens = _padded(lengths, 5, garbage=False)
    states, out_lengths = encoder(x, lens)
    r = 2**pyramid
    assert encoder.time_reduction == r and encoder.output_dim == 12
    assert states.shape == (len(lengths), math.ceil(53 / r), 12)
    assert out_lengths.tolist() == [math.ceil(n / r) for n in lengths]
    assert torch.equal(encoder.output_lengths(lens), out_lengths)
    for b, n in enumerate(out_lengths.tolist()):
        assert torch.all(states[b, n:] == 0), "states past the output length must be zero"
        assert torch.all(states[b, :n].abs().sum(-1) > 0)


def test_no_layers_is_an_error():
    with pytest.raises(ValueError, match="at least one layer"):
        PyramidalBLSTMEncoder(5, base_layers=0, pyramid_layers=0)


# -- padding invariance ---------------------------------------------------------------------------
def _alone_vs_batched(encoder, lengths, garbage):
    x, lens = _padded(lengths, 5, garbage=garbage, seed=1)
    batched, out_lengths = encoder(x, lens)
    for b, n in enumerate(lengths):
        alone, alone_len = encoder(x[b : b + 1, :n], lens[b : b + 1])
        assert alone_len.item() == out_lengths[b].item()
        torch.testing.assert_close(batched[b, : alone.shape[1]], alone[0], atol=1e-5, rtol=0)


@pytest.mark.parametrize(("base", "pyramid"), [(1, 2), (2, 1), (0, 3)])
def test_padding_invariance_with_zero_padding(base, pyramid):
    _alone_vs_batched(_encoder(base, pyramid), [9, 40, 23, 17, 1], garbage=False)


@pytest.mark.parametrize("garbage", [False, True])
def test_padding_invariance_when_decoding(garbage):
    """Without autograd the pyramidal layers run packed and the first masked; alone and batched still agree."""
    with torch.inference_mode():
        _alone_vs_batched(_encoder(1, 2), [9, 40, 23, 17, 1], garbage=garbage)


@pytest.mark.parametrize(
    ("base", "pyramid"),
    [
        (1, 2),
        (2, 1),
        (0, 3),
    ],
)
def test_padding_invariance_with_garbage_padding(base, pyramid):
    _alone_vs_batched(_encoder(base, pyramid), [9, 40, 23, 17, 1], garbage=True)


def test_no_gradient_reaches_padding():
    encoder = _encoder(1, 2)
    x, lens = _padded([12, 30], 5, garbage=True)
    x.requires_grad_(True)
    states, out_lengths = encoder(x, lens)
    states.sum().backward()
    assert torch.all(x.grad[0, 12:] == 0)
    assert torch.all(x.grad[0, :12].abs().sum(-1) > 0)


# -- MaskedBLSTM is a true BLSTM ---------------------------------------------------------------------
def _reference_blstm(layer: MaskedBLSTM) -> nn.LSTM:
    hidden = layer.forward_lstm.hidden_size
    ref = nn.LSTM(layer.forward_lstm.input_size, hidden, batch_first=True, bidirectional=True)
    with torch.no_grad():
        for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0"):
            getattr(ref, name).copy_(getattr(layer.forward_lstm, name))
            getattr(ref, name + "_reverse").copy_(getattr(layer.backward_lstm, name))
    return ref


# every route of MaskedBLSTM is checked against torch's own bidirectional LSTM: masked (training, and
# decoding narrow layers), packed (decoding wide layers with padding), bidirectional (no padding)
def _route(layer: MaskedBLSTM, route: str, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    if route == "forward, training":
        return layer(x, lens)
    if route == "forward, decoding":
        with torch.inference_mode():
            return layer(x, lens)
    with torch.inference_mode():
        return layer.bidirectional(x) if route == "bidirectional" else getattr(layer, route)(x, lens)


@pytest.mark.parametrize("route", ["forward, training", "forward, decoding", "masked", "packed", "bidirectional"])
def test_masked_blstm_equals_torch_bidirectional_lstm(route):
    torch.manual_seed(0)
    layer = MaskedBLSTM(7, 11)
    ref = _reference_blstm(layer)
    x = torch.randn(2, 29, 7)
    ours = _route(layer, route, x, torch.tensor([29, 29]))
    expected, _ = ref(x)
    assert ours.shape == expected.shape == (2, 29, 22)
    torch.testing.assert_close(ours, expected, atol=1e-5, rtol=0)


@pytest.mark.parametrize("route", ["forward, training", "forward, decoding", "masked", "packed"])
@pytest.mark.parametrize("input_size", [4, 11])  # decoding: masked below 2x the hidden size (5), packed above
def test_masked_blstm_in_a_padded_batch_equals_the_reference_per_sequence(route, input_size):
    torch.manual_seed(1)
    layer = MaskedBLSTM(input_size, 5)
    ref = _reference_blstm(layer)
    lengths = [13, 3, 8, 1]
    x, lens = _padded(lengths, input_size, garbage=True)
    out = _route(layer, route, x, lens)
    for b, n in enumerate(lengths):
        expected, _ = ref(x[b : b + 1, :n])
        torch.testing.assert_close(out[b, :n], expected[0], atol=1e-5, rtol=0)
        assert torch.all(out[b, n:] == 0)


@pytest.mark.parametrize("input_size", [4, 11])
def test_decoding_keeps_bf16_autocast_and_a_zero_length_sequence_is_all_zero(input_size):
    """Under CPU bf16 autocast a padded batch of a wide layer stays masked, on the fused bf16 kernel
    (PyTorch's packed LSTM would run in fp32)."""
    torch.manual_seed(2)
    layer = MaskedBLSTM(input_size, 5)
    ref = _reference_blstm(layer)
    lengths = [13, 0, 8]
    x, lens = _padded(lengths, input_size, garbage=True)
    with torch.inference_mode():
        out = layer(x, lens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = layer(x, lens)
    assert low.dtype == torch.bfloat16 and out.dtype == torch.float32
    assert torch.all(out[1] == 0) and torch.all(low[1] == 0)
    for b, n in enumerate(lengths):
        if n:
            expected, _ = ref(x[b : b + 1, :n])
            torch.testing.assert_close(low[b, :n].float(), expected[0], atol=0.05, rtol=0)