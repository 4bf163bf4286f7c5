"""Built-in beam-search scorers: the attention decoder and a length bonus."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Scorer

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

    def score(self, prefix: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.decoder.step(prefix[:, -1], state)

    def select(self, state: dict[str, torch.Tensor], index: torch.Tensor, tokens: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.decoder.select(state, index)


class LengthBonus(Scorer):
    """A constant score of 1 per emitted token; a positive weight counters the bias to short outputs."""

    name = "length_bonus"

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    @classmethod
    def from_model(cls, model: ASRModel) -> LengthBonus:
        return cls(model.vocab_size)

    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> None:
        return None

    def score(self, prefix: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        return prefix.new_ones(prefix.shape[0], self.vocab_size, dtype=torch.float32), None

    def select(self, state: None, index: torch.Tensor, tokens: torch.Tensor) -> None:
        return None


@hookimpl
def asr_s2s_register_scorers() -> list[type]:
    return [DecoderScorer, LengthBonus]
