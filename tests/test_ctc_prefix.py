"""asr_s2s_plugins.ctc_prefix: the vectorised CTC prefix scorer, alone and inside beam search.

References are independent: ``torch.nn.functional.ctc_loss`` for complete
hypotheses, and a plain frame-by-frame loop of the prefix recursion
(Watanabe et al. 2017, Algorithm 2) for prefixes.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from asr_s2s.errors import ConfigError
from asr_s2s_plugins.ctc_prefix import CTCPrefixScorer
from conftest import make_search


def _loop_prefix_logprob(logp: torch.Tensor, prefix: list[int], blank: int) -> float:
    """log p(prefix is a prefix of the CTC output), frame by frame in float64. ``logp``: ``(T, V)``."""
    x = logp.double()
    frames = x.shape[0]
    r_n = torch.full((frames,), -math.inf, dtype=torch.float64)
    r_b = torch.cumsum(x[:, blank], 0)  # the empty prefix
    psi = 0.0
    for i, c in enumerate(prefix):
        prev_n, prev_b = r_n, r_b
        last = prefix[i - 1] if i else None
        phi = prev_b.clone() if c == last else torch.logaddexp(prev_n, prev_b)
        r_n = torch.full((frames,), -math.inf, dtype=torch.float64)
        r_b = torch.full((frames,), -math.inf, dtype=torch.float64)
        r_n[0] = x[0, c] if i == 0 else -math.inf
        terms = [r_n[0]]
        for t in range(1, frames):
            r_n[t] = torch.logaddexp(r_n[t - 1], phi[t - 1]) + x[t, c]
            r_b[t] = torch.logaddexp(r_b[t - 1], r_n[t - 1]) + x[t, blank]
            terms.append(phi[t - 1] + x[t, c])
        psi = float(torch.logsumexp(torch.stack(terms), 0))
    return psi


def _drive(scorer, states, lengths, sequences):
    """Feed token sequences (one per row, equal length) through init/score_partial/select; per-step increments (N, L)."""
    n = len(sequences)
    state = scorer.init_state(states, lengths)
    prefix = torch.full((n, 1), 1, dtype=torch.long)
    steps = []
    for column in zip(*sequences):
        tokens = torch.tensor(column)
        candidates = torch.stack([tokens, torch.full_like(tokens, 5)], dim=1)  # (N, 2): the token and a distractor
        scores, new_state = scorer.score_partial(prefix, candidates, state)
        steps.append(scores[:, 0])
        state = scorer.select(new_state, torch.arange(n), tokens)
        prefix = torch.cat([prefix, tokens.unsqueeze(1)], dim=1)
    return torch.stack(steps, dim=1), state


def test_prefix_scores_equal_the_frame_by_frame_recursion(random_model, fixture_batch):
    with torch.inference_mode():
        states, lengths = random_model.encode(fixture_batch.feats[:2], fixture_batch.feat_lengths[:2])
        logp = random_model.ctc_log_probs(states)
    scorer = CTCPrefixScorer.from_model(random_model)
    sequences = [[10, 10, 3, 12, 12, 12], [4, 20, 20, 8, 2, 9]]  # repeats exercise the r_b-only path
    rows = torch.tensor([0, 1])
    with torch.inference_mode():
        increments, _ = _drive(scorer, states[rows], lengths[rows], sequences)
    for row, seq in enumerate(sequences):
        cumulative = increments[row].cumsum(0)
        for i in range(1, len(seq) + 1):
            expected = _loop_prefix_logprob(logp[row, : lengths[row]], seq[:i], random_model.tokenizer.blank_id)
            assert float(cumulative[i - 1]) == pytest.approx(expected, abs=1e-6)


def test_prefix_scores_stay_exact_where_probabilities_underflow(make_model, fixture_batch):
    """A CTC head so peaked that a prefix's terms fall over 745 nats below its best frame (exp() is 0
    in float64): the scores still follow the log-domain recursion instead of dropping to -inf."""
    model = make_model(seed=1)
    with torch.no_grad():
        model.ctc.weight.mul_(8000)
    with torch.inference_mode():
        states, lengths = model.encode(fixture_batch.feats[:2], fixture_batch.feat_lengths[:2])
        logp = model.ctc_log_probs(states)
        sequences = [[10, 10, 3, 12, 12, 12], [4, 20, 20, 8, 2, 9]]
        increments, _ = _drive(CTCPrefixScorer.from_model(model), states, lengths, sequences)
    assert float(logp.min()) < -1000 and bool(torch.isfinite(increments).all())
    for row, seq in enumerate(sequences):
        cumulative = increments[row].cumsum(0)
        for i in range(1, len(seq) + 1):
            expected = _loop_prefix_logprob(logp[row, : lengths[row]], seq[:i], model.tokenizer.blank_id)
            assert float(cumulative[i - 1]) == pytest.approx(expected, rel=1e-9)


def test_complete_hypotheses_score_minus_ctc_loss(model, registry, encoded):
    """The ctc shares of finished hypotheses add up to log p_ctc(y|x) of torch's ctc_loss."""
    states, lengths = encoded
    nbest = make_search(model, registry, {"decoder": 1.0, "ctc": 0.5}, beam_size=4, nbest=4)(states, lengths)
    with torch.inference_mode():
        logp = model.ctc_log_probs(states).double()
    checked = 0
    for b, hyps in enumerate(nbest):
        for hyp in hyps:
            if not hyp.tokens:
                continue
            loss = F.ctc_loss(
                logp[b : b + 1, : lengths[b]].transpose(0, 1), torch.tensor([hyp.tokens]), lengths[b : b + 1],
                torch.tensor([len(hyp.tokens)]), blank=model.tokenizer.blank_id, reduction="sum",
            )
            assert hyp.scores["ctc"] == pytest.approx(-float(loss), abs=1e-4)
            checked += 1
    assert checked >= len(nbest)


def test_batched_equals_one_utterance_at_a_time(model, registry, encoded):
    states, lengths = encoded
    search = make_search(model, registry, {"decoder": 1.0, "ctc": 0.3}, beam_size=4, nbest=4)
    batched = search(states, lengths)
    for b, n in enumerate(lengths.tolist()):
        alone = search(states[b : b + 1, :n], lengths[b : b + 1])[0]
        assert [h.tokens for h in alone] == [h.tokens for h in batched[b]]
        for x, y in zip(alone, batched[b]):
            assert x.score == pytest.approx(y.score, abs=1e-4)
            assert x.scores["ctc"] == pytest.approx(y.scores["ctc"], abs=1e-4)


def test_ctc_alone_scores_the_whole_vocabulary(trained_model, registry, fixture_batch):
    """With no full scorer there is no pre-beam: CTC scores every token, and a
    finished hypothesis's score is its CTC log-probability."""
    with torch.inference_mode():
        states, lengths = trained_model.encode(fixture_batch.feats, fixture_batch.feat_lengths)
        logp = trained_model.ctc_log_probs(states).double()
    search = make_search(trained_model, registry, {"ctc": 1.0}, beam_size=4)
    assert search.pre_beam == trained_model.vocab_size
    for b, hyps in enumerate(search(states, lengths)):
        loss = F.ctc_loss(
            logp[b : b + 1, : lengths[b]].transpose(0, 1), torch.tensor([hyps[0].tokens]), lengths[b : b + 1],
            torch.tensor([len(hyps[0].tokens)]), blank=trained_model.tokenizer.blank_id, reduction="sum",
        )
        assert hyps[0].score == pytest.approx(-float(loss), abs=1e-4)


def test_needs_a_ctc_head(make_model):
    no_ctc = make_model(ctc_weight=0.0)
    with pytest.raises(ConfigError, match="scorer 'ctc' needs a model trained with a CTC head"):
        CTCPrefixScorer.from_model(no_ctc)


def test_blank_candidates_are_impossible(random_model, fixture_batch):
    with torch.inference_mode():
        states, lengths = random_model.encode(fixture_batch.feats[:1], fixture_batch.feat_lengths[:1])
        scorer = CTCPrefixScorer.from_model(random_model)
        state = scorer.init_state(states, lengths)
        scores, _ = scorer.score_partial(torch.ones(1, 1, dtype=torch.long), torch.tensor([[0, 7]]), state)
    assert scores[0, 0] == -math.inf and math.isfinite(float(scores[0, 1]))
