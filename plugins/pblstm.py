"""The LAS listener: BLSTM layers, then pyramidal BLSTM layers that halve time."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Encoder
from asr_s2s.layers import MaskedBLSTM, length_mask


def pyramid_join(x: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate adjacent frame pairs (Chan et al. 2016), halving time.

    An odd length pairs its last frame with a zero frame.

    :param x: ``(B, T, D)``, zero past ``lengths``.
    :returns: ``(B, ceil(T/2), 2D)`` and lengths ``ceil(lengths / 2)``.
    """
    if x.shape[1] % 2:
        x = F.pad(x, (0, 0, 0, 1))
    b, t, d = x.shape
    return x.reshape(b, t // 2, 2 * d), torch.div(lengths + 1, 2, rounding_mode="floor")


class PyramidalBLSTMEncoder(Encoder):
    """``base_layers`` BLSTMs, then ``pyramid_layers`` pyramidal BLSTMs (2x time reduction each).

    :param input_dim: feature size F (supplied by the toolkit).
    :param hidden_size: LSTM units per direction; the output size is ``2 * hidden_size``.
    :param base_layers: BLSTM layers at full frame rate (LAS uses 1).
    :param pyramid_layers: pyramidal layers; time shrinks by ``2 ** pyramid_layers``.
    :param dropout: dropout between layers.
    """

    name = "pblstm"

    def __init__(
        self,
        input_dim: int,
        hidden_size: int = 256,
        base_layers: int = 1,
        pyramid_layers: int = 2,
        dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if base_layers < 0 or pyramid_layers < 0 or base_layers + pyramid_layers == 0:
            raise ValueError("pblstm needs at least one layer (base_layers + pyramid_layers >= 1)")
        self.hidden_size = hidden_size
        self.base_layers = base_layers
        self.pyramid_layers = pyramid_layers
        layers = []
        size = input_dim
        for i in range(base_layers + pyramid_layers):
            is_pyramid = i >= base_layers
            layers.append(MaskedBLSTM(2 * size if is_pyramid else size, hidden_size))
            size = 2 * hidden_size
        self.layers = nn.ModuleList(layers)
        self.dropout = nn.Dropout(dropout)

    @property
    def output_dim(self) -> int:
        return 2 * self.hidden_size

    @property
    def time_reduction(self) -> int:
        return 2**self.pyramid_layers

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """:param feats: ``(B, T, F)``. :returns: ``(B, ceil(T / 2**pyramid_layers), 2H)`` and lengths ``(B,)``."""
        x = feats * length_mask(lengths, feats.shape[1]).unsqueeze(-1).to(feats.dtype)
        for i, layer in enumerate(self.layers):
            if i >= self.base_layers:
                x, lengths = pyramid_join(x, lengths)
            x = layer(x, lengths)
            if i + 1 < len(self.layers):
                x = self.dropout(x)
        return x, lengths


@hookimpl
def asr_s2s_register_encoders() -> list[type]:
    return [PyramidalBLSTMEncoder]
