"""Building blocks for encoder and decoder plugins: length masks and a padding-exact bidirectional LSTM (PyTorch's
fused LSTM kernel in training, the cheapest exact route in decoding)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence


def reverse_within_lengths(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Reverse each sequence over its own valid frames; padding stays in place.

    :param x: ``(B, T, D)``.
    :param lengths: ``(B,)`` valid frames.
    :returns: ``(B, T, D)`` with ``out[b, t] = x[b, lengths[b] - 1 - t]`` for ``t < lengths[b]``.
    """
    steps = torch.arange(x.shape[1], device=x.device).unsqueeze(0)
    lens = lengths.to(x.device).unsqueeze(1)
    index = torch.where(steps < lens, lens - 1 - steps, steps)
    return x.gather(1, index.unsqueeze(-1).expand_as(x))


def length_mask(lengths: torch.Tensor, max_len: int) -> torch.Tensor:
    """``(B, max_len)`` bool, True on valid frames."""
    return torch.arange(max_len, device=lengths.device).unsqueeze(0) < lengths.unsqueeze(1)


# Decoding packs a layer's padded batch only where its input is this many times wider than its hidden
# state: there the padding's share of the input products outweighs the slower per-step loop of
# PyTorch's packed CPU LSTM (see MaskedBLSTM).
PACKED_MIN_INPUT_RATIO = 2


class MaskedBLSTM(nn.Module):
    """One BLSTM layer whose backward direction never reads padding.

    Training (:meth:`masked`): ``pack_padded_sequence`` would make the CPU LSTM
    leave its fused oneDNN kernel (about 9x slower training here). Instead the
    backward direction runs as a forward LSTM over each sequence reversed within
    its own length, and the outputs past each length are zeroed. Both calls use
    the fused kernel and the result is exact for any padding.

    Decoding (no autograd) takes the cheapest exact route, with the same weights:
    a batch without padding (one utterance) runs both directions in one
    bidirectional call (:meth:`bidirectional`); a padded batch runs packed
    (:meth:`packed`, no padded frame computed) where the input is more than
    ``PACKED_MIN_INPUT_RATIO`` times the hidden size (pyramidal layers), and
    masked otherwise. Reference model (4 BLSTM x 320, 8 utterances of 5-10 s,
    2 threads, Xeon with AVX-512): packed took 0.7x the masked time on the
    pyramidal layers (input 1280) but 1.4x on the first (input 80), whose
    1000 steps cost more than its input products. PyTorch's packed CPU LSTM
    ignores bf16 autocast, so under CPU autocast a padded batch stays masked.
    """

    def __init__(self, input_size: int, hidden_size: int) -> None:
        super().__init__()
        self.forward_lstm = nn.LSTM(input_size, hidden_size, batch_first=True)
        self.backward_lstm = nn.LSTM(input_size, hidden_size, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """:param x: ``(B, T, I)`` zero past ``lengths``. :returns: ``(B, T, 2H)`` zero past ``lengths``."""
        if torch.is_grad_enabled():
            return self.masked(x, lengths)
        lengths = lengths.cpu()
        if bool((lengths == x.shape[1]).all()):
            return self.bidirectional(x)
        lstm = self.forward_lstm
        wide = lstm.input_size > PACKED_MIN_INPUT_RATIO * lstm.hidden_size
        if wide and not (x.device.type == "cpu" and torch.is_autocast_enabled("cpu")):
            return self.packed(x, lengths)
        return self.masked(x, lengths)

    def masked(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Two fused forward calls, the second on each sequence reversed within its length. Shapes as :meth:`forward`."""
        fwd, _ = self.forward_lstm(x)
        bwd, _ = self.backward_lstm(reverse_within_lengths(x, lengths))
        out = torch.cat([fwd, reverse_within_lengths(bwd, lengths)], dim=-1)
        return out * length_mask(lengths.to(x.device), x.shape[1]).unsqueeze(-1).to(out.dtype)

    def bidirectional(self, x: torch.Tensor) -> torch.Tensor:
        """Both directions in one call of PyTorch's bidirectional LSTM (what ``nn.LSTM(bidirectional=True)``
        calls), exact where no sequence is padded. :param x: ``(B, T, I)``. :returns: ``(B, T, 2H)``."""
        zeros = x.new_zeros(2, x.shape[0], self.forward_lstm.hidden_size)
        out, _, _ = torch._VF.lstm(x, (zeros, zeros), self._weights(), True, 1, 0.0, False, True, True)
        return out

    def packed(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """The bidirectional call over the packed sequences: no padded frame is computed. Shapes as :meth:`forward`;
        a sequence of length 0 gives zeros."""
        zeros = x.new_zeros(2, x.shape[0], self.forward_lstm.hidden_size)
        lengths = lengths.cpu()
        packed = pack_padded_sequence(x, lengths.clamp_min(1), batch_first=True, enforce_sorted=False)
        out, _, _ = torch._VF.lstm(packed.data, packed.batch_sizes, (zeros, zeros), self._weights(), True, 1, 0.0, False, True)
        out = PackedSequence(out, packed.batch_sizes, packed.sorted_indices, packed.unsorted_indices)
        out, _ = pad_packed_sequence(out, batch_first=True, total_length=x.shape[1])
        return out * (lengths > 0).view(-1, 1, 1).to(device=out.device, dtype=out.dtype)

    def _weights(self) -> list[torch.Tensor]:
        """Both directions' parameters in the order PyTorch's bidirectional LSTM takes them."""
        return [getattr(lstm, name) for lstm in (self.forward_lstm, self.backward_lstm)
                for name in ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")]
