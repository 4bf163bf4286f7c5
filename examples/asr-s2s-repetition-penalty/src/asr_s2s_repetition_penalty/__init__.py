"""An asr-s2s beam-search scorer that penalises runs of one repeated character.

Attention decoders that lose their place in the audio tend to loop, emitting
one character again and again ("AAAAAA"). ``repetition_penalty`` scores −1
for a token that would extend a run of identical characters beyond
``max_run`` and 0 for everything else; ``<eos>`` and space are never
penalised. With weight ``w`` a hypothesis pays ``w`` for every character past
``max_run`` in each run, and its share in ``Hypothesis.scores`` is minus that count.

Shape letters as in :mod:`asr_s2s.interfaces`: ``N`` hypotheses in search,
``L`` prefix length, ``V`` vocabulary size, ``T'`` encoder frames, ``D``
encoder state size.

The package registers exactly as asr-s2s's built-in scorers do: this module
is listed under the ``asr_s2s`` entry-point group in ``pyproject.toml`` and
implements the ``asr_s2s_register_scorers`` hook.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple

import torch

from asr_s2s.errors import ConfigError
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Scorer

if TYPE_CHECKING:
    from asr_s2s.model import ASRModel

__version__ = "0.1.0"


class RunState(NamedTuple):
    """Per-hypothesis search state of :class:`RepetitionPenalty`."""

    last: torch.Tensor  # (N,) long: the last token of each prefix (<sos> at the start)
    run: torch.Tensor  # (N,) long: how many times in a row it ends the prefix (0 at the start)


class RepetitionPenalty(Scorer):
    """−1 for a token that would repeat a character more than ``max_run`` times in a row.

    A full scorer: :meth:`score` returns ``(N, V)`` scores, all 0 except, in a
    row whose prefix ends with a run of ``max_run`` or more of a character
    ``c``, the column ``c`` (unless ``c`` is ``<eos>`` or space), which is −1.
    """

    name = "repetition_penalty"

    def __init__(self, vocab_size: int, sos: int, eos: int, space: int | None, max_run: int = 2) -> None:
        if isinstance(max_run, bool) or not isinstance(max_run, int) or max_run < 1:
            raise ConfigError(f"scorer {self.name!r}: max_run must be a positive integer, got {max_run!r}")
        self.vocab_size = vocab_size
        self.sos, self.eos = sos, eos
        self.space = -1 if space is None else space  # -1 matches no token
        self.max_run = max_run

    @classmethod
    def from_model(cls, model: ASRModel, *, max_run: int = 2) -> RepetitionPenalty:
        """Build for ``model``'s vocabulary. ``max_run`` comes from ``decode.scorer_params``."""
        tok = model.tokenizer
        space = tok.tokens.index(" ") if " " in tok.tokens else None
        return cls(model.vocab_size, tok.sos_id, tok.eos_id, space, max_run=max_run)

    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> RunState:
        """Every prefix is ``<sos>`` alone: last token ``<sos>``, run length 0.

        :param states: ``(N, T', D)`` encoder states (only ``N`` and the device are used).
        :param state_lengths: ``(N,)`` valid encoder frames (unused).
        :returns: a :class:`RunState` of two ``(N,)`` long tensors.
        """
        n = states.shape[0]
        last = torch.full((n,), self.sos, dtype=torch.long, device=states.device)
        return RunState(last, torch.zeros(n, dtype=torch.long, device=states.device))

    def score(self, prefix: torch.Tensor, state: RunState) -> tuple[torch.Tensor, RunState]:
        """Scores of every next token, for all ``N`` hypotheses at once.

        :param prefix: ``(N, L)`` tokens so far, starting with ``<sos>`` (the
            state already summarises what this scorer needs from it).
        :param state: ``last`` and ``run``, ``(N,)`` each.
        :returns: scores ``(N, V)`` float32 (0 or −1), and ``state`` unchanged:
            it advances in :meth:`select`, once the appended token is known.
        """
        last, run = state
        exempt = (last == self.eos) | (last == self.space)
        penalised = (run >= self.max_run) & ~exempt  # (N,) bool: repeating `last` would be too many
        scores = torch.zeros(prefix.shape[0], self.vocab_size, dtype=torch.float32, device=prefix.device)
        scores.scatter_(1, last.unsqueeze(1), -penalised.to(scores.dtype).unsqueeze(1))
        return scores, state

    def select(self, state: RunState, index: torch.Tensor, tokens: torch.Tensor) -> RunState:
        """Gather the survivors' rows and append their tokens.

        :param state: ``last`` and ``run``, ``(N,)`` each, before pruning.
        :param index: ``(N,)`` the source row of each surviving hypothesis.
        :param tokens: ``(N,)`` the token each survivor appended.
        :returns: the state of the ``N`` extended prefixes: a token equal to its
            row's ``last`` lengthens the run by one, any other starts a run of 1.
        """
        last, run = state.last[index], state.run[index]
        run = torch.where(tokens == last, run + 1, torch.ones_like(run))
        return RunState(tokens.clone(), run)

    def compact(self, state: RunState, rows: torch.Tensor) -> RunState:
        """Keep only the hypotheses ``rows`` ``(M,)`` (search drops finished utterances).

        Optional: without it the scorer still works, but search keeps
        computing the rows of utterances that have ended.
        """
        return RunState(state.last[rows], state.run[rows])


@hookimpl
def asr_s2s_register_scorers() -> list[type]:
    return [RepetitionPenalty]
