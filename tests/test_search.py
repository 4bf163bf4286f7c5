"""asr_s2s.search: greedy decoding and the batched beam search over weighted scorers.

Every check runs on two tiny models: an untrained one (which tends to run to
the length limit) and the one overfit on the fixture utterances (which ends
its hypotheses with <eos>).
"""

from __future__ import annotations

import math

import pytest
import torch

from asr_s2s.errors import ConfigError
from asr_s2s.interfaces import Scorer
from asr_s2s.recognizer import build_scorers
from asr_s2s.search import BeamSearch, Hypothesis, SearchOptions, greedy_search, length_limits
from conftest import make_search


def _greedy(model, states, lengths, **kwargs) -> list[Hypothesis]:
    tok = model.tokenizer
    return greedy_search(model.decoder, states, lengths, tok.sos_id, tok.eos_id, **kwargs)[0]


@torch.inference_mode()
def _teacher_forced_logprob(model, states, length, tokens) -> float:
    """log P(tokens + <eos> | utterance) by the decoder, teacher forced."""
    eos = model.tokenizer.eos_id
    tokens_in = torch.tensor([[model.tokenizer.sos_id, *tokens]])
    logits, _ = model.decoder(states[None, :length], torch.tensor([length]), tokens_in)
    logp = torch.log_softmax(logits[0].double(), -1)
    targets = [*tokens, eos]
    return float(sum(logp[i, t] for i, t in enumerate(targets)))


def _assert_same_hyps(a: list[Hypothesis], b: list[Hypothesis], atol: float = 1e-4) -> None:
    assert [h.tokens for h in a] == [h.tokens for h in b]
    for x, y in zip(a, b):
        assert x.score == pytest.approx(y.score, abs=atol)


# -- must-haves ---------------------------------------------------------------------------------
def test_beam_size_one_with_decoder_alone_equals_greedy(model, registry, encoded):
    states, lengths = encoded
    greedy = _greedy(model, states, lengths)
    beam = make_search(model, registry, {"decoder": 1.0}, beam_size=1)(states, lengths)
    assert all(len(n) == 1 for n in beam)
    _assert_same_hyps([n[0] for n in beam], greedy)


@pytest.mark.parametrize("weights", [{"decoder": 1.0}, {"decoder": 1.0, "length_bonus": 0.5}])
def test_batched_beam_search_equals_one_utterance_at_a_time(model, registry, encoded, weights):
    states, lengths = encoded
    search = make_search(model, registry, weights, beam_size=4, nbest=4)
    batched = search(states, lengths)
    assert len(batched) == len(lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = search(states[b : b + 1, :n], lengths[b : b + 1])[0]
        _assert_same_hyps(batched[b], alone)


@pytest.mark.parametrize(("scorer", "params"), [
    ("length_bonus", {}), ("coverage", {}), ("ctc", {}), ("hotwords", {"phrases": ["THE", "CAT"]}),
])
def test_a_zero_weight_scorer_changes_nothing(model, registry, encoded, scorer, params):
    """Weight 0 means off: tokens, scores and per-scorer shares are those of the decoder alone."""
    states, lengths = encoded
    without = make_search(model, registry, {"decoder": 1.0}, beam_size=3, nbest=3)(states, lengths)
    weights = {"decoder": 1.0, scorer: 0.0}
    with_zero = make_search(model, registry, weights, {scorer: params} if params else None, beam_size=3, nbest=3)(states, lengths)
    assert with_zero == without


def test_utterance_decodes_the_same_alone_and_in_a_padded_batch(model, registry, fixture_batch):
    """Encoder states within 1e-5, and identical greedy and beam hypotheses."""
    b = fixture_batch
    order = b.feat_lengths.argsort().tolist()
    shortest, longer = order[0], order[1:]
    rows = [shortest, *longer]
    search = make_search(model, registry, {"decoder": 1.0}, beam_size=4, nbest=2)
    with torch.inference_mode():
        states, lengths = model.encode(b.feats[rows], b.feat_lengths[rows])
        n = int(b.feat_lengths[shortest])
        alone_states, alone_lengths = model.encode(b.feats[shortest : shortest + 1, :n], b.feat_lengths[shortest : shortest + 1])
    assert states.shape[1] > alone_states.shape[1], "the batch must really be padded"
    assert alone_lengths.item() == lengths[0].item()
    torch.testing.assert_close(states[0, : alone_states.shape[1]], alone_states[0], atol=1e-5, rtol=0)
    _assert_same_hyps(_greedy(model, states, lengths)[:1], _greedy(model, alone_states, alone_lengths))
    _assert_same_hyps(search(states, lengths)[0], search(alone_states, alone_lengths)[0])


# -- scores are what they claim -------------------------------------------------------------------
def test_scores_equal_teacher_forced_log_probabilities(model, registry, encoded):
    states, lengths = encoded
    greedy = _greedy(model, states, lengths)
    beam = make_search(model, registry, {"decoder": 1.0}, beam_size=3, nbest=3)(states, lengths)
    for b in range(len(lengths)):
        length = int(lengths[b])
        for hyp in [greedy[b], *beam[b]]:
            expected = _teacher_forced_logprob(model, states[b], length, hyp.tokens)
            assert hyp.score == pytest.approx(expected, abs=1e-3)
            assert hyp.scores["decoder"] == pytest.approx(hyp.score, abs=1e-9)
        scores = [h.score for h in beam[b]]
        assert scores == sorted(scores, reverse=True)
        assert len({h.tokens for h in beam[b]}) == len(beam[b]), "n-best entries are distinct"


def test_weighted_scores_add_up(model, registry, encoded):
    states, lengths = encoded
    weights = {"decoder": 1.0, "length_bonus": 0.7}
    for nbest in make_search(model, registry, weights, beam_size=3, nbest=2)(states, lengths):
        for hyp in nbest:
            assert set(hyp.scores) == {"decoder", "length_bonus"}
            assert hyp.scores["length_bonus"] == pytest.approx(len(hyp.tokens) + 1), "1 per token and <eos>"
            assert hyp.score == pytest.approx(sum(weights[k] * v for k, v in hyp.scores.items()), abs=1e-6)


def test_length_normalisation(model, registry, encoded):
    states, lengths = encoded
    for b, nbest in enumerate(make_search(model, registry, {"decoder": 1.0}, beam_size=2, length_normalize=True)(states, lengths)):
        hyp = nbest[0]
        raw = _teacher_forced_logprob(model, states[b], int(lengths[b]), hyp.tokens)
        assert hyp.score == pytest.approx(raw / (len(hyp.tokens) + 1), abs=1e-3)


def test_length_limits_are_respected(model, registry, encoded):
    states, lengths = encoded
    options = dict(max_length_ratio=0.3, min_length_ratio=0.2)
    search = make_search(model, registry, {"decoder": 1.0}, beam_size=3, nbest=3, **options)
    greedy = _greedy(model, states, lengths, max_length_ratio=0.3)
    for b, nbest in enumerate(search(states, lengths)):
        lo, hi = math.floor(int(lengths[b]) * 0.2), math.floor(int(lengths[b]) * 0.3)
        assert nbest, "an utterance always gets a hypothesis"
        assert all(lo <= len(h.tokens) <= hi for h in nbest)
        assert len(greedy[b].tokens) <= hi


def test_greedy_returns_attention_per_step(model, encoded):
    states, lengths = encoded
    tok = model.tokenizer
    hyps, attention = greedy_search(model.decoder, states, lengths, tok.sos_id, tok.eos_id)
    assert attention.shape[0] == len(hyps) and attention.shape[2] == states.shape[1]
    assert attention.shape[1] >= max(len(h.tokens) for h in hyps)
    for b, hyp in enumerate(hyps):
        steps = attention[b, : len(hyp.tokens) + 1]
        torch.testing.assert_close(steps.sum(-1), torch.ones(len(steps)))
        assert torch.all(steps[:, int(lengths[b]) :] == 0)


# -- options ---------------------------------------------------------------------------------
def test_length_limits_function():
    lo, hi = length_limits(torch.tensor([10, 3, 0]), SearchOptions(max_length_ratio=0.5, min_length_ratio=0.2))
    assert hi.tolist() == [5, 1, 1] and lo.tolist() == [2, 0, 0]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(beam_size=0), "beam size"),
        (dict(beam_size=2, nbest=3), "nbest"),
        (dict(nbest=0), "nbest"),
        (dict(max_length_ratio=0), "max_length_ratio"),
        (dict(min_length_ratio=-0.1), "min_length_ratio"),
        (dict(weights={"decoder": -1.0}), "'decoder'"),
        (dict(weights={"decoder": float("nan")}), "'decoder'"),
        (dict(end_margin=0.0), "end_margin"),
    ],
)
def test_bad_options(options, match):
    with pytest.raises(ConfigError, match=match):
        SearchOptions(**options)


def test_search_needs_a_positive_weight(random_model, registry):
    with pytest.raises(ConfigError, match="positive weight"):
        make_search(random_model, registry, {"decoder": 0.0}, beam_size=2)


def test_end_detection_keeps_the_best_hypothesis(trained_model, registry, fixture_batch):
    """Stopping hopeless utterances early must not change what the overfit model finds."""
    with torch.inference_mode():
        states, lengths = trained_model.encode(fixture_batch.feats, fixture_batch.feat_lengths)
    weights = {"decoder": 1.0, "length_bonus": 0.5}
    early = make_search(trained_model, registry, weights, beam_size=4, end_margin=10.0)(states, lengths)
    full = make_search(trained_model, registry, weights, beam_size=4, end_margin=None)(states, lengths)
    _assert_same_hyps([n[0] for n in early], [n[0] for n in full])


# -- partial scorers and pre-beam -------------------------------------------------------------
class _CandidateCounter(Scorer):
    """A partial scorer that scores 0 and records the candidates it was shown."""

    name = "candidate_counter"
    partial = True

    def __init__(self):
        self.seen: list[torch.Tensor] = []

    def init_state(self, states, state_lengths):
        return None

    def score_partial(self, prefix, candidates, state):
        self.seen.append(candidates.clone())
        return torch.zeros(candidates.shape, dtype=torch.float32), None

    def select(self, state, index, tokens):
        return None


def test_partial_scorers_see_the_pre_beam_of_the_full_scorers(model, registry, encoded):
    states, lengths = encoded
    tok = model.tokenizer
    counter = _CandidateCounter()
    weights = {"decoder": 1.0, "candidate_counter": 1.0}
    scorers = {**build_scorers(model, registry, {"decoder": 1.0}, {}), "candidate_counter": counter}
    search = BeamSearch(scorers, SearchOptions(weights=weights, beam_size=4, nbest=4), tok.sos_id, tok.eos_id, model.vocab_size)
    found = search(states, lengths)
    assert counter.seen and all(c.shape == (len(lengths) * 4, math.ceil(1.5 * 4)) for c in counter.seen)
    # a partial scorer adding 0 only restricts tokens to the pre-beam, which holds every survivor
    plain = make_search(model, registry, {"decoder": 1.0}, beam_size=4, nbest=4)(states, lengths)
    for a, b in zip(found, plain):  # float32 kernels may round differently at another batch size
        _assert_same_hyps(a, b, atol=1e-5)


def test_pre_beam_ratio_must_be_at_least_one():
    with pytest.raises(ConfigError, match="pre_beam_ratio"):
        SearchOptions(pre_beam_ratio=0.5)


# -- scorers reading other scorers' state: coverage ------------------------------------------
def test_coverage_needs_the_decoder(random_model, registry):
    with pytest.raises(ConfigError, match="'coverage' reads the state of 'decoder'"):
        make_search(random_model, registry, {"ctc": 1.0, "coverage": 0.5}, beam_size=2)


def test_coverage_share_counts_covered_frames(model, registry, encoded):
    """Its share equals the frames whose teacher-forced attention, summed over the
    hypothesis's steps (``<eos>`` included), exceeds the threshold."""
    states, lengths = encoded
    weights = {"decoder": 1.0, "coverage": 0.3}
    for b, nbest in enumerate(make_search(model, registry, weights, beam_size=3, nbest=2)(states, lengths)):
        for hyp in nbest:
            tokens_in = torch.tensor([[model.tokenizer.sos_id, *hyp.tokens]])
            with torch.inference_mode():
                _, attention = model.decoder(states[b : b + 1, : lengths[b]], lengths[b : b + 1], tokens_in)
            covered = int((attention[0].sum(0) > 0.5).sum())
            assert hyp.scores["coverage"] == pytest.approx(covered)
            assert hyp.score == pytest.approx(hyp.scores["decoder"] + 0.3 * covered, abs=1e-5)


# -- compaction: finished utterances leave the batch ----------------------------------------------
class _RowCounter(Scorer):
    """A zero scorer that records how many rows each step scores; compacts only if asked to."""

    name = "row_counter"

    def __init__(self, vocab_size: int) -> None:
        self.vocab_size, self.rows = vocab_size, []

    def init_state(self, states, state_lengths):
        return None

    def score(self, prefix, state, inputs=None):
        self.rows.append(prefix.shape[0])
        return prefix.new_zeros(prefix.shape[0], self.vocab_size, dtype=torch.float32), None

    def select(self, state, index, tokens):
        return None


class _CompactingRowCounter(_RowCounter):
    def compact(self, state, rows):
        return None


def _search_with(model, registry, counter, weights, **options) -> BeamSearch:
    tok = model.tokenizer
    scorers = {**build_scorers(model, registry, weights, {}), counter.name: counter}
    weights = {**weights, counter.name: 1.0}
    return BeamSearch(scorers, SearchOptions(weights=weights, **options), tok.sos_id, tok.eos_id, model.vocab_size)


@pytest.mark.parametrize("weights", [
    {"decoder": 1.0},
    {"decoder": 1.0, "ctc": 0.3, "coverage": 0.5, "length_bonus": 0.5},
])
def test_stopped_utterances_leave_the_batch_and_results_do_not_change(trained_model, registry, fixture_batch, weights):
    with torch.inference_mode():
        states, lengths = trained_model.encode(fixture_batch.feats, fixture_batch.feat_lengths)
    k = 3
    compacting, plain = _CompactingRowCounter(trained_model.vocab_size), _RowCounter(trained_model.vocab_size)
    compacted = _search_with(trained_model, registry, compacting, weights, beam_size=k, nbest=k)(states, lengths)
    full = _search_with(trained_model, registry, plain, weights, beam_size=k, nbest=k)(states, lengths)
    for a, b in zip(compacted, full):  # float32 kernels may round differently at another batch size
        _assert_same_hyps(a, b, atol=1e-5)
    # the overfit model ends its utterances at different steps: the batch shrinks by whole utterances
    assert plain.rows == [len(lengths) * k] * len(plain.rows)
    assert compacting.rows[0] == len(lengths) * k and compacting.rows[-1] < compacting.rows[0]
    assert all(r % k == 0 for r in compacting.rows) and compacting.rows == sorted(compacting.rows, reverse=True)
    assert len(compacting.rows) == len(plain.rows)
