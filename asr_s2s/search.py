"""Greedy decoding and a beam search batched over utterances x hypotheses.

The beam search adds up weighted scorer plugins. It keeps ``B x K``
hypotheses in flat tensors of ``N = B * K`` rows; no Python loop runs over
hypotheses, only over the (rare) ones that end at a step.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

import torch

from asr_s2s.config import DecodeConfig
from asr_s2s.errors import AsrS2SError, ConfigError, ScorerError
from asr_s2s.interfaces import Decoder, Scorer

NEG_INF = float("-inf")
COMPACT_FRACTION = 0.125  # share of a batch's utterances that must have stopped before their rows are dropped
EOS_THRESHOLD_SCORER = "decoder"  # the scorer whose own <eos> probability the eos_threshold reads


@dataclass(frozen=True)
class Hypothesis:
    """One search result. ``scores`` holds each scorer's unweighted share of ``score``."""

    tokens: tuple[int, ...]  # without <sos>/<eos>
    score: float
    scores: Mapping[str, float] = field(default_factory=dict)


# upper bounds, so that a config (a downloaded package's too) cannot ask for unbounded work or memory
MAX_BEAM_SIZE = 512  # hypotheses per utterance
MAX_LENGTH_RATIO = 10.0  # output tokens per encoder frame
MAX_PRE_BEAM_RATIO = 100.0  # partial-scorer candidates per beam slot


@dataclass(frozen=True)
class SearchOptions:
    """Beam search options; ``weights`` maps scorer names to weights. The defaults are
    :class:`~asr_s2s.config.DecodeConfig`'s, where each option is documented, and
    :meth:`DecodeConfig.search_options() <asr_s2s.config.DecodeConfig.search_options>` makes them from a config."""

    beam_size: int = DecodeConfig.beam_size
    weights: Mapping[str, float] = field(default_factory=lambda: dict(DecodeConfig().scorers))
    max_length_ratio: float = DecodeConfig.max_length_ratio
    min_length_ratio: float = DecodeConfig.min_length_ratio
    length_normalize: bool = DecodeConfig.length_normalize
    nbest: int = DecodeConfig.nbest
    end_margin: float | None = DecodeConfig.end_margin  # end detection; None runs until K hypotheses end
    pre_beam_ratio: float = DecodeConfig.pre_beam_ratio  # partial scorers see the best ceil(ratio * K) tokens
    eos_threshold: float | None = DecodeConfig.eos_threshold  # <eos> only where the decoder finds it likely

    def __post_init__(self) -> None:
        if not 1 <= self.beam_size <= MAX_BEAM_SIZE:
            raise ConfigError(f"beam_size: the beam size must be between 1 and {MAX_BEAM_SIZE}, got {self.beam_size}")
        if self.nbest < 1 or self.nbest > self.beam_size:
            raise ConfigError(f"nbest must be between 1 and the beam size ({self.beam_size}), got {self.nbest}")
        if self.end_margin is not None and self.end_margin <= 0:
            raise ConfigError(f"end_margin must be positive (or None), got {self.end_margin}")
        if self.eos_threshold is not None and not (math.isfinite(self.eos_threshold) and self.eos_threshold >= 1):
            raise ConfigError(f"eos_threshold must be a number of at least 1 (or None), got {self.eos_threshold}")
        if not 1 <= self.pre_beam_ratio <= MAX_PRE_BEAM_RATIO:
            raise ConfigError(f"pre_beam_ratio must be between 1 and {MAX_PRE_BEAM_RATIO}, got {self.pre_beam_ratio}")
        if not (0 < self.max_length_ratio <= MAX_LENGTH_RATIO and 0 <= self.min_length_ratio <= self.max_length_ratio):
            raise ConfigError(f"max_length_ratio must be in (0, {MAX_LENGTH_RATIO}] and min_length_ratio in "
                              f"[0, max_length_ratio], got {self.max_length_ratio} and {self.min_length_ratio}")
        for name, weight in self.weights.items():
            if not math.isfinite(weight) or weight < 0:
                raise ConfigError(f"scorer {name!r}: weight must be a non-negative number, got {weight}")


def length_limits(state_lengths: torch.Tensor, options: SearchOptions) -> tuple[torch.Tensor, torch.Tensor]:
    """Min and max output tokens ``(B,)`` for encoder lengths ``(B,)``."""
    max_len = (state_lengths.double() * options.max_length_ratio).floor().long().clamp_min(1)
    min_len = (state_lengths.double() * options.min_length_ratio).floor().long().clamp(max=max_len)
    return min_len, max_len


def _constrain(scores: torch.Tensor, step: int, min_len: torch.Tensor, max_len: torch.Tensor, eos: int) -> torch.Tensor:
    """Forbid ``<eos>`` before ``min_len`` and everything but ``<eos>`` at ``max_len``. ``scores``: ``(N, V)``."""
    too_short, at_limit = step < min_len, step >= max_len  # (N,) each
    if not bool(too_short.any() | at_limit.any()):  # most steps: nothing to mask, no (N, V) mask built
        return scores
    eos_scores = scores[:, eos].masked_fill(too_short, NEG_INF)
    scores = scores.masked_fill(at_limit.unsqueeze(-1), NEG_INF)
    scores[:, eos] = eos_scores
    return scores


@torch.inference_mode()
def greedy_search(
    decoder: Decoder, states: torch.Tensor, state_lengths: torch.Tensor, sos: int, eos: int,
    max_length_ratio: float = 1.0, min_length_ratio: float = 0.0,
) -> tuple[list[Hypothesis], torch.Tensor]:
    """Best token at each step, for a batch.

    :param states: ``(B, T', D)``; :param state_lengths: ``(B,)``.
    :param max_length_ratio: at most this many tokens per encoder frame (then ``<eos>`` is forced).
    :param min_length_ratio: ``<eos>`` is forbidden before this many tokens per encoder frame.
    :returns: one hypothesis per utterance, and attention weights ``(B, U, T')``.
    """
    batch = states.shape[0]
    min_len, max_len = length_limits(
        state_lengths, SearchOptions(beam_size=1, max_length_ratio=max_length_ratio, min_length_ratio=min_length_ratio))
    state = decoder.init_state(states, state_lengths)
    last = torch.full((batch,), sos, dtype=torch.long, device=states.device)
    total = torch.zeros(batch, dtype=torch.float64, device=states.device)
    finished = torch.zeros(batch, dtype=torch.bool, device=states.device)
    tokens, weights = [], []
    for step in range(int(max_len.max()) + 1):
        logp, state = decoder.step(last, state)
        logp = _constrain(logp, step, min_len, max_len, eos)
        best, last = logp.max(-1)
        total += torch.where(finished, 0.0, best.double())
        tokens.append(torch.where(finished, eos, last))
        weights.append(state["attention"] if "attention" in state else states.new_zeros(batch, states.shape[1]))
        finished |= last == eos
        if bool(finished.all()):
            break
    token_matrix = torch.stack(tokens, 1).tolist()
    hyps = []
    for b in range(batch):
        row = token_matrix[b]
        seq = tuple(row[: row.index(eos)] if eos in row else row)
        hyps.append(Hypothesis(seq, float(total[b]), {"decoder": float(total[b])}))
    return hyps, torch.stack(weights, 1)


class BeamSearch:
    """Beam search over weighted scorers, batched over utterances and hypotheses.

    Each step: every full scorer scores the vocabulary ``(N, V)``; the weighted
    sum extends the running scores; the best ``2K`` extensions per utterance
    are taken; those ending in ``<eos>`` among the top ``K`` are finished, and
    the best ``K`` others continue. An utterance stops once it holds ``K``
    finished hypotheses, reaches its maximum length, or (end detection) its
    best running hypothesis trails its best finished one by ``end_margin``.
    When every active scorer can :meth:`~asr_s2s.interfaces.Scorer.compact`
    its state, the rows of stopped utterances are dropped from the batch, so
    that a batch costs what its unfinished utterances cost.

    A scorer that raises, or returns scores of the wrong shape or dtype, a NaN
    or ``+inf``, stops the search with a :class:`ScorerError` that names it
    and ``origins[name]`` (its plugin and distribution, when given).
    """

    def __init__(
        self, scorers: Mapping[str, Scorer], options: SearchOptions, sos: int, eos: int, vocab_size: int,
        origins: Mapping[str, str] | None = None,
    ) -> None:
        active = {name: s for name, s in scorers.items() if options.weights.get(name, 0.0) > 0}
        if not active:
            raise ConfigError("beam search needs at least one scorer with a positive weight")
        self.origins = dict(origins or {})
        for name, scorer in active.items():
            missing = [dep for dep in scorer.depends_on if dep not in active]
            if missing:
                raise ConfigError(
                    f"scorer {name!r} reads the state of {', '.join(map(repr, missing))}, "
                    f"which must be in decode.scorers with a positive weight"
                )
        # scorers that read another's fresh state run after it
        self.scorers = {n: active[n] for n in sorted(active, key=lambda n: bool(active[n].depends_on))}
        self.full = [n for n, s in self.scorers.items() if not s.partial]
        self.partial = [n for n, s in self.scorers.items() if s.partial]
        self.weights = {name: float(options.weights[name]) for name in self.scorers}
        self.options = options
        self.sos, self.eos, self.vocab_size = sos, eos, vocab_size
        # only full scorers that tell tokens apart can choose the partial scorers' candidates
        ranking = any(self.scorers[n].ranks_tokens for n in self.full)
        self.pre_beam = min(vocab_size, math.ceil(options.pre_beam_ratio * options.beam_size)) if ranking else vocab_size
        self.compacts = all(s.can_compact for s in self.scorers.values())

    @torch.inference_mode()
    def __call__(self, states: torch.Tensor, state_lengths: torch.Tensor) -> list[list[Hypothesis]]:
        """Search a batch.

        :param states: ``(B, T', D)`` encoder states; :param state_lengths: ``(B,)``.
        :returns: per utterance, up to ``nbest`` hypotheses, best first.
        """
        batch, k, vocab, device = states.shape[0], self.options.beam_size, self.vocab_size, states.device
        n = batch * k
        min_len, max_len = (t.repeat_interleave(k) for t in length_limits(state_lengths, self.options))
        scorer_states = {name: self._call(name, "init_beam_state", states, state_lengths, k) for name in self.scorers}
        prefix = torch.full((n, 1), self.sos, dtype=torch.long, device=device)
        running = torch.full((batch, k), NEG_INF, dtype=torch.float64, device=device)
        running[:, 0] = 0.0  # all beams start identical: keep one
        shares = torch.zeros(n, len(self.scorers), dtype=torch.float64, device=device)
        finished: list[list[Hypothesis]] = [[] for _ in range(batch)]
        # ``alive[i]``: the utterance that row block i (rows i*K .. i*K+K-1) searches; shrinks as utterances stop
        alive = list(range(batch))
        done = torch.zeros(batch, dtype=torch.bool, device=device)
        beam_offsets = torch.arange(k, device=device)
        base = (torch.arange(batch, device=device) * k).unsqueeze(1)  # (B, 1): first row of each block
        rank = (2 * k - torch.arange(2 * k, device=device)).unsqueeze(0)  # (1, 2K): better extensions rank higher

        for step in range(int(max_len.max()) + 1):
            b, n = len(alive), len(alive) * k
            step_scores, new_states, total = self._score(prefix, scorer_states, step, min_len, max_len)
            candidates = (running.reshape(n, 1) + total).reshape(b, k * vocab)
            top_scores, top_index = candidates.topk(min(2 * k, k * vocab), dim=1)  # (b, 2K)
            source = base[:b] + torch.div(top_index, vocab, rounding_mode="floor")
            token = top_index % vocab  # (b, 2K); source: their flat parent rows
            ends = (token == self.eos) & torch.isfinite(top_scores) & ~done.unsqueeze(1)
            ends[:, k:] = False
            ended = bool(ends.any())
            if ended:
                self._finish(ends, top_scores, source, prefix, shares, step_scores, new_states, step, finished, alive)
            # keep the best K extensions that do not end
            keep_rank = torch.where(token == self.eos, -1, rank[:, : top_index.shape[1]])
            keep = keep_rank.topk(k, dim=1).indices  # (b, K), in score order
            running = top_scores.gather(1, keep)
            rows = source.gather(1, keep).reshape(n)
            new_tokens = token.gather(1, keep).reshape(n)
            shares = shares[rows] + self._shares(step_scores, rows, new_tokens)
            prefix = torch.cat([prefix[rows], new_tokens.unsqueeze(1)], dim=1)
            scorer_states = {name: self._call(name, "select", new_states[name], rows, new_tokens) for name in self.scorers}
            if ended:
                done |= torch.tensor([len(finished[u]) >= k for u in alive], device=device)
            done |= step >= max_len.view(b, k)[:, 0]
            if self.options.end_margin is not None:
                done |= self._hopeless(running, [finished[u] for u in alive], step)
            if bool(done.all()):
                break
            # drop the stopped utterances' rows once they are an eighth of the batch: a compaction
            # copies every state (encoder memory too), so it must not run at every step of a big batch
            if self.compacts and int(done.sum()) >= max(1, COMPACT_FRACTION * b):
                blocks = (~done).nonzero().squeeze(1)  # (b',)
                kept = (blocks.unsqueeze(1) * k + beam_offsets).reshape(-1)  # (b' * K,)
                scorer_states = {name: self._call(name, "compact", scorer_states[name], kept) for name in self.scorers}
                prefix, shares, min_len, max_len = prefix[kept], shares[kept], min_len[kept], max_len[kept]
                running, done = running[blocks], done[blocks]
                alive = [alive[i] for i in blocks.tolist()]
        return [sorted(f, key=lambda h: -h.score)[: self.options.nbest] for f in finished]

    def _score(self, prefix, scorer_states, step, min_len, max_len):
        """Every scorer's step scores ``(N, V)``, their new states, and the weighted total ``(N, V)``.

        Full scorers score the vocabulary; partial scorers then score the
        ``pre_beam`` best tokens of the full total per hypothesis, and every
        other token is out of the running (``-inf``).
        """
        step_scores, new_states = {}, {}
        total = None
        for name in self.full:
            depends_on = self.scorers[name].depends_on
            if depends_on:
                inputs = {dep: new_states[dep] for dep in depends_on}
                step_scores[name], new_states[name] = self._pair(name, "score", prefix, scorer_states[name], inputs)
            else:
                step_scores[name], new_states[name] = self._pair(name, "score", prefix, scorer_states[name])
            self._check_scores(name, step_scores[name], (prefix.shape[0], self.vocab_size), step)
            weighted = self.weights[name] * step_scores[name].double()
            total = weighted if total is None else total + weighted
        if total is None:  # partial scorers only: every token is a candidate
            total = prefix.new_zeros(prefix.shape[0], self.vocab_size, dtype=torch.float64)
        else:
            self._check_finite(total, step_scores, self.full, step)
        if self.options.eos_threshold is not None and EOS_THRESHOLD_SCORER in step_scores:
            total = self._threshold_eos(total, step_scores[EOS_THRESHOLD_SCORER], step, max_len)
        total = _constrain(total, step, min_len, max_len, self.eos)
        if not self.partial:
            return step_scores, new_states, total
        if self.pre_beam < self.vocab_size:
            candidates = total.topk(self.pre_beam, dim=1).indices  # (N, K')
        else:
            candidates = torch.arange(self.vocab_size, device=total.device).expand(total.shape[0], -1)
        picked = total.gather(1, candidates)
        partial_scores = {}
        for name in self.partial:
            scores, new_states[name] = self._pair(name, "score_partial", prefix, candidates, scorer_states[name])
            self._check_scores(name, scores, candidates.shape, step)
            partial_scores[name] = scores
            picked = picked + self.weights[name] * scores.double()
            step_scores[name] = torch.zeros_like(total).scatter(1, candidates, scores.double())
        self._check_finite(picked, partial_scores, self.partial, step)
        return step_scores, new_states, torch.full_like(total, NEG_INF).scatter(1, candidates, picked)

    def _threshold_eos(self, total: torch.Tensor, reference: torch.Tensor, step: int, max_len: torch.Tensor) -> torch.Tensor:
        """Rule ``<eos>`` out of ``total`` ``(N, V)`` where ``reference`` ``(N, V)`` (the decoder's log-probabilities)
        gives it less than ``eos_threshold`` times its best other token; never at the length limit."""
        reference = reference.double()
        eos = reference[:, self.eos]
        best_other = reference.index_fill(1, torch.tensor([self.eos], device=reference.device), NEG_INF).max(1).values
        blocked = (eos < self.options.eos_threshold * best_other) & (step < max_len)
        if not bool(blocked.any()):
            return total
        total = total.clone()
        total[:, self.eos] = total[:, self.eos].masked_fill(blocked, NEG_INF)
        return total

    def _call(self, name: str, method: str, *args):
        """``self.scorers[name].method(*args)``; anything but a toolkit error is re-raised naming the scorer."""
        try:
            return getattr(self.scorers[name], method)(*args)
        except AsrS2SError:
            raise
        except Exception as exc:  # noqa: BLE001 - a plugin's bug, re-raised with its name
            raise ScorerError(f"{self._who(name)} raised in {method}(): {type(exc).__name__}: {exc}{self._fix(name)}") from exc

    def _pair(self, name: str, method: str, *args) -> tuple[torch.Tensor, object]:
        """``_call`` for ``score``/``score_partial``, which must return ``(scores, state)``."""
        out = self._call(name, method, *args)
        if not (isinstance(out, tuple) and len(out) == 2):
            raise ScorerError(f"{self._who(name)}: {method}() must return (scores, state), got {type(out).__name__}{self._fix(name)}")
        return out

    def _who(self, name: str) -> str:
        origin = self.origins.get(name)
        return f"scorer {name!r}" + (f" ({origin})" if origin else "")

    def _fix(self, name: str) -> str:
        return f". Turn it off with --scorer {name}=0 (decode.scorers.{name}: 0), or fix the plugin."

    def _check_scores(self, name: str, scores: object, shape: tuple[int, ...], step: int) -> None:
        """A scorer's step scores must be a float tensor of ``shape``."""
        if not isinstance(scores, torch.Tensor):
            raise ScorerError(f"{self._who(name)} returned {type(scores).__name__} scores at step {step}, "
                              f"expected a float tensor of shape {tuple(shape)}{self._fix(name)}")
        if tuple(scores.shape) != tuple(shape) or not scores.is_floating_point():
            raise ScorerError(
                f"{self._who(name)} returned scores of shape {tuple(scores.shape)} and dtype {scores.dtype} at step {step}, "
                f"expected shape {tuple(shape)} (hypotheses x {'candidates' if self.scorers[name].partial else 'vocabulary'}) "
                f"and a float dtype{self._fix(name)}"
            )

    def _check_finite(self, total: torch.Tensor, scores: Mapping[str, torch.Tensor], names: list[str], step: int) -> None:
        """No NaN or ``+inf`` in the weighted ``total``; if there is one, name the scorer that returned it."""
        if bool(total.max() < float("inf")):  # one reduction: a NaN maximum fails the comparison too
            return
        for name in names:
            bad = torch.isnan(scores[name]) | torch.isposinf(scores[name])
            if bool(bad.any()):
                count = int(bad.sum())
                raise ScorerError(
                    f"{self._who(name)} returned {count} non-finite score(s) (NaN or +inf) at step {step}; "
                    f"scores must be log-probabilities, -inf to rule a token out{self._fix(name)}"
                )
        raise ScorerError(f"the weighted scores hold a NaN at step {step} (scorers {', '.join(names)}): "
                          f"two scorers gave +inf and -inf to the same token")

    def _shares(self, step_scores: dict[str, torch.Tensor], rows: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Each scorer's unweighted score ``(M, S)`` of appending ``tokens`` ``(M,)`` to ``rows`` ``(M,)``."""
        return torch.stack([step_scores[name].double()[rows, tokens] for name in self.scorers], dim=1)

    def _hopeless(self, running: torch.Tensor, finished: list[list[Hypothesis]], step: int) -> torch.Tensor:
        """End detection (as ESPnet's): an utterance whose best running hypothesis
        trails its best finished one by more than ``end_margin`` stops. ``(B,)`` bool."""
        if not any(finished):  # nothing finished yet: no utterance can be hopeless
            return torch.zeros(len(finished), dtype=torch.bool, device=running.device)
        best_finished = torch.tensor(
            [max((h.score for h in f), default=NEG_INF) for f in finished], dtype=running.dtype, device=running.device
        )
        best_running = running.max(dim=1).values
        if self.options.length_normalize:
            best_running = best_running / (step + 1)
        return best_running < best_finished - self.options.end_margin

    def _finish(self, ends, top_scores, source, prefix, shares, step_scores, new_states, step, finished, alive) -> None:
        """Move hypotheses that chose ``<eos>`` to ``finished`` (indexed by utterance; row block i is ``alive[i]``)."""
        rows = source[ends]
        scores = top_scores[ends]
        row_shares = shares[rows] + self._shares(step_scores, rows, torch.full_like(rows, self.eos))
        for i, name in enumerate(self.scorers):
            extra = self._call(name, "final_score", new_states[name])
            if extra is not None:
                extra = extra.double()[rows]
                scores = scores + self.weights[name] * extra
                row_shares[:, i] += extra
        if self.options.length_normalize:
            scores = scores / (step + 1)
        utterances = [alive[i] for i in ends.nonzero()[:, 0].tolist()]
        token_rows = prefix[rows, 1:].tolist()
        names = list(self.scorers)
        for utt, tokens, score, share in zip(utterances, token_rows, scores.tolist(), row_shares.tolist()):
            if len(finished[utt]) < self.options.beam_size:
                finished[utt].append(Hypothesis(tuple(tokens), score, dict(zip(names, share))))
