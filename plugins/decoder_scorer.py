"""Built-in scorer ``decoder``: the attention decoder's next-token log-probabilities in the beam search."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Decoder, Scorer

if TYPE_CHECKING:
    from asr_s2s.model import ASRModel


class DecoderScorer(Scorer):
    """The attention decoder's next-token log-probabilities, ``(N, V)``."""

    name = "decoder"

    def __init__(self, model: ASRModel) -> None:
        self.decoder = model.decoder

    @classmethod
    def from_model(cls, model: ASRModel) -> DecoderScorer:
        return cls(model)

    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decoder.init_state(states, state_lengths)

    def init_beam_state(self, states: torch.Tensor, state_lengths: torch.Tensor, beam: int) -> dict[str, torch.Tensor]:
        return self.decoder.init_beam_state(states, state_lengths, beam)

    def score(self, prefix: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.decoder.step(prefix[:, -1], state)

    def select(self, state: dict[str, torch.Tensor], index: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decoder.select(state, index)

    def compact(self, state: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decoder.compact(state, rows)

    @property
    def can_compact(self) -> bool:
        return type(self.decoder).compact is not Decoder.compact


@hookimpl
def asr_s2s_register_scorers() -> list[type]:
    return [DecoderScorer]
