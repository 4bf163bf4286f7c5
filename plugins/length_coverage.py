"""Built-in scorers ``length_bonus`` and ``coverage``: against outputs that end early or drop words."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch

from asr_s2s.errors import ConfigError
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Scorer

if TYPE_CHECKING:
    from asr_s2s.model import ASRModel


class LengthBonus(Scorer):
    """A constant score of 1 per emitted token; a positive weight counters the bias to short outputs."""

    name = "length_bonus"
    ranks_tokens = False

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size = vocab_size

    @classmethod
    def from_model(cls, model: ASRModel) -> LengthBonus:
        return cls(model.vocab_size)

    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> None:
        return None

    def init_beam_state(self, states: torch.Tensor, state_lengths: torch.Tensor, beam: int) -> None:
        return None

    def score(self, prefix: torch.Tensor, state: None) -> tuple[torch.Tensor, None]:
        return prefix.new_ones(prefix.shape[0], self.vocab_size, dtype=torch.float32), None

    def select(self, state: None, index: torch.Tensor, tokens: torch.Tensor) -> None:
        return None

    def compact(self, state: None, rows: torch.Tensor) -> None:
        return None


class CoverageScorer(Scorer):
    """The coverage term of Chorowski & Jaitly (2017): encoder frames whose
    cumulative attention exceeds ``threshold``, counted as they become covered.

    The sum of its step scores over a hypothesis is ``sum_j [sum_i a_ij > threshold]``,
    so a positive weight favours hypotheses that attend to the whole utterance
    (against dropped words) without rewarding attention that loops over the
    same frames (repeats). The increment of a step is the same for every next
    token; it reorders hypotheses, not tokens. It reads the decoder's attention
    weights of the step, so ``decoder`` must be an active scorer.

    :param threshold: cumulative attention above which a frame counts as covered.
    """

    name = "coverage"
    depends_on = ("decoder",)
    ranks_tokens = False

    def __init__(self, vocab_size: int, threshold: float) -> None:
        if not 0.0 < threshold:
            raise ConfigError(f"coverage threshold must be positive, got {threshold}")
        self.vocab_size = vocab_size
        self.threshold = threshold

    @classmethod
    def from_model(cls, model: ASRModel, *, threshold: float = 0.5) -> CoverageScorer:
        return cls(model.vocab_size, threshold)

    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cumulative attention ``(N, T')`` and covered frames ``(N,)``, all zero."""
        return self.init_beam_state(states, state_lengths, 1)

    def init_beam_state(self, states: torch.Tensor, state_lengths: torch.Tensor, beam: int) -> tuple[torch.Tensor, torch.Tensor]:
        """As :meth:`init_state` for ``B * beam`` rows, without repeating ``states`` ``(B, T', D)``."""
        n, frames = states.shape[0] * beam, states.shape[1]
        return states.new_zeros(n, frames), states.new_zeros(n)

    def score(
        self, prefix: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor], inputs: Mapping[str, Any] | None = None
    ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Newly covered frames ``(N, V)`` (constant over V), from the decoder's attention ``(N, T')``."""
        decoder_state = (inputs or {}).get("decoder", {})
        if "attention" not in decoder_state:
            raise ConfigError("scorer 'coverage' needs a decoder that reports its attention weights")
        cumulative = state[0] + decoder_state["attention"].to(state[0].dtype)
        covered = (cumulative > self.threshold).sum(-1).to(state[1].dtype)
        increment = (covered - state[1]).unsqueeze(1).expand(-1, self.vocab_size)
        return increment, (cumulative, covered)

    def select(self, state: tuple[torch.Tensor, torch.Tensor], index: torch.Tensor, tokens: torch.Tensor):
        return state[0].index_select(0, index), state[1].index_select(0, index)

    def compact(self, state: tuple[torch.Tensor, torch.Tensor], rows: torch.Tensor):
        return state[0].index_select(0, rows), state[1].index_select(0, rows)


@hookimpl
def asr_s2s_register_scorers() -> list[type]:
    return [LengthBonus, CoverageScorer]
