"""The ``ctc`` scorer: CTC prefix scores (Watanabe et al. 2017), vectorised over time too.

For a prefix ``h`` the scorer keeps, at every encoder frame ``t``, the
log-probabilities ``r_n[t]`` and ``r_b[t]`` of all CTC paths that have emitted
exactly ``h`` by frame ``t`` and end in a non-blank or a blank. Extending
``g`` by a character ``c`` follows the usual recursion::

    phi[t]    = r_b(g)[t]                   if c == last(g)
              = logaddexp(r_b(g)[t], r_n(g)[t])  otherwise
    r_n(h)[t] = y_c[t] * (r_n(h)[t-1] + phi[t-1])
    r_b(h)[t] = y_blank[t] * (r_b(h)[t-1] + r_n(h)[t-1])
    psi(h)    = sum_t phi[t-1] * y_c[t]     (the prefix probability)

Both recursions are first-order linear, so each unrolls into a cumulative
log-sum-exp: with ``C[t] = sum_{s<=t} log y_c[s]``,
``log r_n[t] = C[t] + logcumsumexp_s(log phi[s-1] - C[s-1])``, and likewise
for ``r_b`` with the blank's cumulative sum. ESPnet's ``CTCPrefixScoreTH``
loops over frames in Python at every output step; here a step is a handful
of tensor ops, in float64 so that the cumulative sums stay exact over long
utterances. Only ``psi`` is needed to rank the ``N x K`` candidates; it is
one batched product of the candidates' frame probabilities with ``phi``,
scaled by its maximum, rather than a log-sum-exp over ``N x K x T'`` (which
only the rare candidates whose product underflows fall back to). The
forward variables are extended in :meth:`CTCPrefixScorer.select`, for the
``N`` survivors alone.

The score of appending ``c`` is ``psi(h) - psi(g)``, and of ``<eos>`` it is
``log(r_n(g)[T] + r_b(g)[T]) - psi(g)``; the scores along a finished
hypothesis therefore add up to ``log p_ctc(y | x)``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from asr_s2s.errors import ConfigError
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Scorer

if TYPE_CHECKING:
    from asr_s2s.model import ASRModel

NEG_INF = float("-inf")
# Log-probabilities are clamped here (and padding frames set to it) so that cumulative
# sums never meet -inf - -inf; e^-1e4 is zero at any precision a score could show.
LOG_ZERO = -1.0e4


@dataclass(frozen=True)
class CTCFrames:
    """Frame scores, fixed for a search, held once per utterance: hypothesis row ``n`` reads frame row ``n // beam``.

    :ivar logp: ``(N / beam, V, T')`` CTC log-probabilities, ``LOG_ZERO`` on padding frames.
    :ivar prob: ``(N / beam, V, T')`` the same as probabilities (0 on padding frames).
    :ivar blank_cum: ``(N / beam, T'+1)`` cumulative blank log-probability from frame 0.
    :ivar lengths: ``(N,)`` valid frames of each hypothesis row.
    :ivar beam: hypotheses per utterance (1 when built by ``init_state``).
    """

    logp: torch.Tensor
    prob: torch.Tensor
    blank_cum: torch.Tensor
    lengths: torch.Tensor
    beam: int = 1

    def utterances(self, rows: torch.Tensor) -> torch.Tensor:
        """The frame rows ``(M,)`` that hypothesis rows ``rows`` ``(M,)`` read."""
        return torch.div(rows, self.beam, rounding_mode="floor")

    def gather(self, candidates: torch.Tensor) -> torch.Tensor:
        """Probabilities ``(N, K, T')`` of ``candidates`` ``(N, K)`` at every frame."""
        n, k = candidates.shape
        utterances, frames = self.prob.shape[0], self.prob.shape[-1]
        prob = self.prob.unsqueeze(1).expand(utterances, self.beam, -1, frames)
        index = candidates.view(utterances, self.beam, k, 1).expand(-1, -1, -1, frames)
        return prob.gather(2, index).view(n, k, frames)


@dataclass(frozen=True)
class CTCState:
    """Per-hypothesis prefix state of ``N`` rows.

    :ivar frames: the utterances' frame scores (never reordered: search maps
        rows only to rows of the same utterance).
    :ivar r: ``(N, 2, T'+1)`` log ``r_n`` and ``r_b`` at frames 0..T' (frame 0 is before any input).
    :ivar psi: ``(N,)`` log prefix probability so far; ``(N, K)`` of the candidates after scoring.
    :ivar last: ``(N,)`` last token of the prefix (``<sos>`` for the empty one).
    :ivar candidates: ``(N, K)`` the candidates scored, or None before scoring.
    :ivar either: ``(N, T'+1)`` log ``(r_n + r_b)``, which scoring computes and :meth:`CTCPrefixScorer.select`
        reuses; None before scoring.
    """

    frames: CTCFrames
    r: torch.Tensor
    psi: torch.Tensor
    last: torch.Tensor
    candidates: torch.Tensor | None = None
    either: torch.Tensor | None = None


class CTCPrefixScorer(Scorer):
    """Partial scorer: CTC prefix log-probability increments of ``K`` candidates per hypothesis.

    Needs a model trained with the CTC head (``model.ctc_weight > 0``).
    """

    name = "ctc"
    partial = True

    def __init__(self, model: ASRModel) -> None:
        self.model = model
        tok = model.tokenizer
        self.blank, self.eos = tok.blank_id, tok.eos_id

    @classmethod
    def from_model(cls, model: ASRModel) -> CTCPrefixScorer:
        if model.ctc is None:
            raise ConfigError(
                "scorer 'ctc' needs a model trained with a CTC head, but this model has none "
                "(model.ctc_weight was 0). Remove 'ctc' from decode.scorers or set its weight to 0."
            )
        return cls(model)

    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> CTCState:
        """Prepare frame log-probabilities and the empty prefix.

        :param states: ``(N, T', D)``; :param state_lengths: ``(N,)``.
        """
        return self.init_beam_state(states, state_lengths, 1)

    def init_beam_state(self, states: torch.Tensor, state_lengths: torch.Tensor, beam: int) -> CTCState:
        """As :meth:`init_state` for ``beam`` hypotheses per utterance; frame scores are kept once per utterance.

        :param states: ``(B, T', D)``; :param state_lengths: ``(B,)``.
        """
        utterances, frames = states.shape[:2]
        n = utterances * beam
        logp = self.model.ctc_log_probs(states).double().clamp_min(LOG_ZERO)  # (B, T', V)
        valid = torch.arange(frames, device=states.device).unsqueeze(0) < state_lengths.unsqueeze(1)
        logp = logp.masked_fill(~valid.unsqueeze(-1), LOG_ZERO)
        logp = logp.transpose(1, 2).contiguous()  # (B, V, T')
        # cumulative blank log-probability, B[t] = sum_{s<=t} log y_blank[s], B[0] = 0
        blank_cum = _cumsum_from_zero(logp[:, self.blank])  # (B, T'+1)
        r = torch.full((utterances, 2, frames + 1), NEG_INF, dtype=torch.float64, device=states.device)
        r[:, 1] = blank_cum  # the empty prefix: all blanks so far
        r[:, 1, 1:] = r[:, 1, 1:].masked_fill(~valid, NEG_INF)
        zeros = torch.zeros(n, dtype=torch.float64, device=states.device)
        start = torch.full((n,), self.eos, dtype=torch.long, device=states.device)
        lengths = state_lengths.to(states.device).repeat_interleave(beam)
        frames_ = CTCFrames(logp, logp.exp(), blank_cum, lengths, beam)
        return CTCState(frames_, r.repeat_interleave(beam, 0), zeros, start)

    def score_partial(self, prefix: torch.Tensor, candidates: torch.Tensor, state: CTCState) -> tuple[torch.Tensor, CTCState]:
        """Score ``(N, K)`` candidate tokens; ``prefix`` ``(N, L)`` is implied by ``state``.

        Only the prefix probabilities ``psi`` are computed for all ``N x K``
        extensions; the forward variables ``r`` follow in :meth:`select`, for
        the ``N`` survivors only.

        :returns: score increments ``(N, K)`` (float64) and a state for :meth:`select`.
        """
        n, k = candidates.shape
        r_n, r_b = state.r[:, 0], state.r[:, 1]  # (N, T'+1)
        either = torch.logaddexp(r_n, r_b)
        # psi = log sum_t exp(phi[t-1]) y_c[t] with phi = r_b (c repeats the last token) or either
        # (otherwise): one (N, K, T') x (N, T', 2) product in the probability domain, scaled by
        # either's maximum (>= r_b's); a fully -inf row scales by 0 and scores -inf.
        top = either[:, :-1].amax(-1, keepdim=True)
        alive = ~torch.isneginf(top)  # (N, 1)
        top = top.masked_fill(~alive, 0.0)
        phi = torch.stack([either[:, :-1], r_b[:, :-1]], dim=-1).sub_(top.unsqueeze(-1)).exp_()  # (N, T', 2)
        sums = torch.bmm(state.frames.gather(candidates), phi)  # (N, K, 2)
        repeat = candidates == state.last.unsqueeze(1)  # (N, K)
        psi = torch.where(repeat, sums[..., 1], sums[..., 0]).log_().add_(top)  # (N, K)
        # Terms over ~700 nats below the maximum underflow to 0; where all of a live row's do,
        # the log domain gives the (very low, finite) score instead of -inf.
        lost = torch.isneginf(psi) & alive
        if lost.any():
            rows, cols = lost.nonzero(as_tuple=True)
            f = state.frames
            phi_lost = torch.where(repeat[rows, cols].unsqueeze(1), r_b[rows, :-1], either[rows, :-1])  # (M, T')
            y_lost = f.logp[f.utterances(rows), candidates[rows, cols]]  # (M, T')
            psi[rows, cols] = torch.logsumexp(phi_lost + y_lost, dim=-1)
        # <eos>: the probability of exactly this prefix over the whole utterance
        full = either.gather(1, state.frames.lengths.view(n, 1))  # (N, 1)
        psi = torch.where(candidates == self.eos, full, psi)
        psi = psi.masked_fill(candidates == self.blank, NEG_INF)
        previous = state.psi.unsqueeze(1)
        increment = torch.where(torch.isneginf(previous), NEG_INF, psi - previous)  # never -inf - -inf
        return increment, dataclasses.replace(state, psi=psi, candidates=candidates, either=either)

    def select(self, state: CTCState, index: torch.Tensor, tokens: torch.Tensor) -> CTCState:
        """Extend row ``index[i]`` by ``tokens[i]`` for each survivor ``i``. ``index``, ``tokens``: ``(N,)``."""
        column = (state.candidates[index] == tokens.unsqueeze(1)).int().argmax(dim=1)
        r = _extend(state.frames, state.r[index], state.either[index], state.last[index], tokens, index)
        return CTCState(state.frames, r, state.psi[index, column], tokens)

    def compact(self, state: CTCState, rows: torch.Tensor) -> CTCState:
        """Keep hypotheses ``rows`` ``(M,)``, their frame scores included."""
        f = state.frames
        utterances = f.utterances(rows[:: f.beam])  # rows holds whole blocks of beam rows
        frames = CTCFrames(f.logp[utterances], f.prob[utterances], f.blank_cum[utterances], f.lengths[rows], f.beam)
        return CTCState(frames, state.r[rows], state.psi[rows], state.last[rows])


def _extend(
    frames: CTCFrames, r: torch.Tensor, either: torch.Tensor, last: torch.Tensor, tokens: torch.Tensor, rows: torch.Tensor,
) -> torch.Tensor:
    """Forward variables of prefixes ``g + c``: ``r`` ``(M, 2, T'+1)`` of ``g`` and ``either`` ``(M, T'+1)``,
    its ``logaddexp(r_n, r_b)`` (scoring computed it), its ``last`` token ``(M,)``, ``tokens`` ``c`` ``(M,)``,
    and the frame rows ``(M,)`` they read. :returns: ``(M, 2, T'+1)``."""
    r_b = r[:, 1]
    phi = torch.where((tokens == last).unsqueeze(1), r_b, either)  # (M, T'+1)
    utterances = frames.utterances(rows)
    y_c = frames.logp[utterances, tokens]  # (M, T')
    cum_c = _cumsum_from_zero(y_c)  # (M, T'+1)
    start = torch.full_like(cum_c[:, :1], NEG_INF)  # frame 0: nothing emitted yet
    new_n = torch.cat([start, cum_c[:, 1:] + torch.logcumsumexp(phi[:, :-1] - cum_c[:, :-1], dim=-1)], dim=1)
    cum_b = frames.blank_cum[utterances]  # (M, T'+1)
    new_b = torch.cat([start, cum_b[:, 1:] + torch.logcumsumexp(new_n[:, :-1] - cum_b[:, :-1], dim=-1)], dim=1)
    return torch.stack([new_n, new_b], dim=1)


def _cumsum_from_zero(x: torch.Tensor) -> torch.Tensor:
    """Cumulative sum over the last axis with a leading 0: ``(..., T)`` -> ``(..., T+1)``."""
    return torch.nn.functional.pad(x.cumsum(-1), (1, 0))


@hookimpl
def asr_s2s_register_scorers() -> list[type]:
    return [CTCPrefixScorer]
