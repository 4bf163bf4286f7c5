"""plugins/hotwords: contextual biasing towards a phrase list in beam search.

The scorer is driven two ways: by hand over explicit token sequences (the
bonus accounting, checked against a brute-force count of the characters that
complete phrases cover), and inside the real beam search with the tiny models.
"""

from __future__ import annotations

import random

import pytest
import torch

from asr_s2s.errors import ConfigError
from asr_s2s.registry import ConfigKeyError
from asr_s2s.recognizer import build_scorers
from asr_s2s_plugins.hotwords import HotwordsScorer
from conftest import make_search


def _hotwords(model, registry, **params) -> HotwordsScorer:
    return registry.build("scorer", {"name": "hotwords", **params}, "decode.scorers.hotwords", model=model)


def _drive(scorer: HotwordsScorer, tokenizer, texts: list[str], seed: int = 0) -> list[torch.Tensor]:
    """Score ``text + <eos>`` for all texts at once, as the search does; rows are shuffled between steps.

    :returns: per text, its full score rows ``(len(text) + 1, V)``, one per appended token.
    """
    seqs = [tokenizer.encode(t) + [tokenizer.eos_id] for t in texts]
    n, steps = len(seqs), max(len(s) for s in seqs)
    tokens = torch.full((n, steps), tokenizer.eos_id)
    for i, s in enumerate(seqs):
        tokens[i, : len(s)] = torch.tensor(s)
    state = scorer.init_state(torch.zeros(n, 3, 2), torch.full((n,), 3))
    prefix = torch.full((n, 1), tokenizer.sos_id)
    order = torch.arange(n)  # order[r]: the text that row r holds
    gen = torch.Generator().manual_seed(seed)
    rows: list[list[torch.Tensor]] = [[] for _ in range(n)]
    for step in range(steps):
        scores, new_state = scorer.score(prefix, state)
        assert scores.shape == (n, scorer.vocab_size) and scores.dtype == torch.float32
        for r, i in enumerate(order.tolist()):
            if step < len(seqs[i]):
                rows[i].append(scores[r])
        token = tokens[order, step]
        perm = torch.randperm(n, generator=gen)
        state = scorer.select(new_state, perm, token[perm])
        order, prefix = order[perm], torch.cat([prefix[perm], token[perm, None]], dim=1)
    return [torch.stack(r) for r in rows]


def _step_scores(scorer, tokenizer, texts: list[str]) -> list[list[float]]:
    """Per text, the score of each token it appends (its characters, then <eos>)."""
    out = []
    for text, rows in zip(texts, _drive(scorer, tokenizer, texts)):
        ids = torch.tensor(tokenizer.encode(text) + [tokenizer.eos_id])
        out.append(rows[torch.arange(len(ids)), ids].tolist())
    return out


def _occurrences(text: str, phrases: list[str]) -> set[tuple[int, int]]:
    """(start, end) of every phrase occurrence as whole words: after a start or space, before an end or space."""
    found = set()
    for p in phrases:
        for i in range(len(text) - len(p) + 1):
            j = i + len(p)
            if text[i:j] == p and (i == 0 or text[i - 1] == " ") and (j == len(text) or text[j] == " "):
                found.add((i, j))
    return found


def _covered(occurrences: set[tuple[int, int]]) -> int:
    """Characters covered by at least one occurrence."""
    return len({k for i, j in occurrences for k in range(i, j)})


# -- bonus accounting over explicit sequences ------------------------------------------------------
ACCOUNTING = [
    # (phrases, text, total bonus kept)
    (["ALPHA"], "ALPHA", 5),  # <eos> after a complete phrase keeps it
    (["ALPHA"], "ALPHA BETA", 5),
    (["ALPHA"], "THE ALPHA IS", 5),
    (["ALPHA"], "ALPHA ALPHA", 10),
    (["ALPHA"], "ALPHAS", 0),  # abandoned partial match nets 0
    (["ALPHA"], "ALPHA'S", 0),
    (["ALPHA"], "ALPH", 0),  # <eos> after an incomplete match takes the bonus back
    (["ALPHA"], "ALPH ALPHA", 5),
    (["ALPHA"], "MALPHA", 0),  # not at a word start
    (["ALPHA"], "BETA", 0),
    (["SEA SHELLS"], "SHE SOLD SEA SHELLS", 10),  # multi-word, the space included
    (["SEA SHELLS"], "SEA SHELL", 0),
    (["SEA SHELLS"], "SEA", 0),
    (["SEA SHELLS"], "SEA SHELLSX", 0),
    (["SEA SHELLS"], "SEA SEA SHELLS", 10),  # restarts inside an abandoned multi-word match
    (["ALP", "ALPHA"], "ALP", 3),  # overlapping phrases sharing a prefix
    (["ALP", "ALPHA"], "ALPHA", 5),
    (["ALP", "ALPHA"], "ALPH", 0),
    (["ALP", "ALPHA"], "ALPS", 0),
    (["ALP", "ALPHA"], "ALP ALPHA", 8),
    (["ALPHA", "ALPHA BETA"], "ALPHA BETA", 10),  # nested: each character paid once
    (["ALPHA", "ALPHA BETA"], "ALPHA GAMMA", 5),  # ALPHA stays kept when ALPHA BETA is abandoned
    (["ALPHA", "ALPHA BETA"], "ALPHA BE", 5),
    (["YORK", "NEW YORK CITY"], "NEW YORK TIMES", 4),  # a phrase inside an abandoned longer match
    (["YORK", "NEW YORK CITY"], "NEW YORK CITY", 13),
    (["YORK", "NEW YORK CITY"], "NEW YORKER", 0),
    (["alpha", "Sea-shells!"], "SEA SHELLS ALPHA", 15),  # phrases are normalised like transcripts
    ([], "ALPHA", 0),
]


def test_bonus_accounting(random_model, registry, tokenizer):
    """Per-step scores, summed along each sequence, keep exactly the characters of complete phrases."""
    by_phrases: dict[tuple[str, ...], list[tuple[str, int]]] = {}
    for phrases, text, total in ACCOUNTING:
        by_phrases.setdefault(tuple(phrases), []).append((text, total))
    for phrases, cases in by_phrases.items():
        scorer = _hotwords(random_model, registry, phrases=list(phrases))
        texts = [t for t, _ in cases]
        for (text, total), steps in zip(cases, _step_scores(scorer, tokenizer, texts)):
            assert sum(steps) == total, (phrases, text, steps)


def test_per_step_scores(random_model, registry, tokenizer):
    """+1 per matched character, 0 at a boundary after a complete phrase, all taken back on abandoning."""
    scorer = _hotwords(random_model, registry, phrases=["ALPHA", "SEA SHELLS"])
    texts = ["ALPHA B", "ALPHAS", "ALP", "XALPHA", "SEA SEA SHELLS"]
    assert _step_scores(scorer, tokenizer, texts) == [
        [1, 1, 1, 1, 1, 0, 0, 0],
        [1, 1, 1, 1, 1, -5, 0],
        [1, 1, 1, -3],
        [0, 0, 0, 0, 0, 0, 0],
        [1, 1, 1, 1, 1, -3, 1, 1, 1, 1, 1, 1, 1, 1, 0],  # SEA S|E -> SE: -5 + 2
    ]
    nested = _hotwords(random_model, registry, phrases=["ALPHA", "ALPHA BETA", "YORK", "NEW YORK CITY"])
    assert _step_scores(nested, tokenizer, ["ALPHA GAMMA", "ALPHA BETA", "NEW YORK TIMES"]) == [
        [1, 1, 1, 1, 1, 1, -1, 0, 0, 0, 0, 0],  # only the space is taken back: ALPHA was kept
        [1, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0],
        [1, 1, 1, 1, 1, 1, 1, 1, 1, -5, 0, 0, 0, 0, 0],  # "NEW " and the space back, YORK kept
    ]


def test_random_texts_match_a_brute_force_count(random_model, registry, tokenizer):
    """Over random texts, the summed scores equal the characters covered by complete phrases.

    The one documented exception: phrases overlapping by a word without either
    containing the other may be paid in full, between the covered count and the sum.
    """
    rng = random.Random(0)
    words = ["A", "B", "AB", "BA", "ABA"]
    exact = 0
    for trial in range(12):
        phrases = sorted({" ".join(rng.choices(words, k=rng.randint(1, 3))) for _ in range(rng.randint(1, 4))})
        texts = ["".join(rng.choices("AB '", weights=[4, 4, 3, 1], k=rng.randint(0, 16))) for _ in range(40)]
        scorer = _hotwords(random_model, registry, phrases=phrases)
        for text, steps in zip(texts, _step_scores(scorer, tokenizer, texts)):
            occ = _occurrences(text, phrases)
            chained = any(a < c < b < d for a, b in occ for c, d in occ)
            if chained:
                assert _covered(occ) <= sum(steps) <= sum(j - i for i, j in occ), (phrases, text)
            else:
                assert sum(steps) == _covered(occ), (phrases, text, steps)
                exact += sum(steps) > 0
    assert exact > 50, "the random texts must hold phrases often enough to test something"


def test_batched_scores_equal_one_row_at_a_time(random_model, registry, tokenizer):
    scorer = _hotwords(random_model, registry, phrases=["ALPHA", "ALP", "SEA SHELLS", "SHE SOLD"])
    texts = ["SHE SOLD SEA SHELLS", "ALPHA", "ALPS SEA", "SEA SEA SHELLS ALP", "", "MALPHA SHE"]
    batched = _drive(scorer, tokenizer, texts, seed=1)
    for text, rows in zip(texts, batched):
        (alone,) = _drive(scorer, tokenizer, [text])
        torch.testing.assert_close(rows, alone, rtol=0, atol=0)


def test_trie_tables(random_model, registry, tokenizer):
    scorer = _hotwords(random_model, registry, phrases=["AB", "AC", "AB"])
    t = scorer.tables
    a, b, c = tokenizer.encode("ABC")
    assert scorer.num_nodes == 4 and t.children.shape == (4, len(tokenizer))
    ab, ac = int(t.children[t.children[0, a], b]), int(t.children[t.children[0, a], c])
    assert t.depth[[0, ab, ac]].tolist() == [0, 2, 2]
    assert t.terminal.tolist().count(True) == 2 and bool(t.terminal[ab]) and bool(t.terminal[ac])
    assert int((t.children >= 0).sum()) == 3
    assert scorer.phrases == ("AB", "AC", "AB")


def test_empty_phrase_list_scores_zero(random_model, registry, tokenizer):
    scorer = _hotwords(random_model, registry)
    for rows in _drive(scorer, tokenizer, ["ALPHA BETA", "", "A'B"]):
        assert torch.all(rows == 0)


# -- inside the beam search ---------------------------------------------------------------------
def test_empty_phrase_list_changes_nothing(model, registry, encoded):
    states, lengths = encoded
    alone = make_search(model, registry, {"decoder": 1.0}, beam_size=3, nbest=3)(states, lengths)
    biased = make_search(model, registry, {"decoder": 1.0, "hotwords": 2.0}, beam_size=3, nbest=3)(states, lengths)
    for a, b in zip(alone, biased, strict=True):
        assert [h.tokens for h in a] == [h.tokens for h in b]
        assert [h.score for h in a] == [h.score for h in b]
        assert [h.scores["decoder"] for h in a] == [h.scores["decoder"] for h in b]
        assert all(h.scores["hotwords"] == 0 for h in b)


def test_search_shares_count_phrase_characters(trained_model, registry, fixture_batch):
    """In the real search, every hypothesis's hotwords share is the characters its phrases cover,
    and its score the weighted sum of the shares."""
    model, tok = trained_model, trained_model.tokenizer
    with torch.inference_mode():
        states, lengths = model.encode(fixture_batch.feats, fixture_batch.feat_lengths)
    phrases = ["THE", "SEA SHELLS", "APPLES", "DOOR"]
    seen = 0
    for weight in [0.5, 2.0, 6.0]:
        weights = {"decoder": 1.0, "hotwords": weight}
        search = make_search(model, registry, weights, {"hotwords": {"phrases": phrases}}, beam_size=4, nbest=4)
        for nbest in search(states, lengths):
            for hyp in nbest:
                text = tok.decode(hyp.tokens)
                occ = _occurrences(text, phrases)
                assert not any(a < c < b < d for a, b in occ for c, d in occ)  # these phrases cannot chain
                assert hyp.scores["hotwords"] == _covered(occ), text
                assert hyp.score == pytest.approx(sum(weights[k] * v for k, v in hyp.scores.items()), abs=1e-6)
                seen += hyp.scores["hotwords"] > 0
    assert seen > 10


def test_boosting_brings_in_a_missing_phrase(trained_model, registry, fixture_batch):
    """A word the decoder alone does not output for an utterance appears there once boosted."""
    model, tok = trained_model, trained_model.tokenizer
    with torch.inference_mode():
        states, lengths = model.encode(fixture_batch.feats, fixture_batch.feat_lengths)
    base = [tok.decode(n[0].tokens) for n in make_search(model, registry, {"decoder": 1.0}, beam_size=4)(states, lengths)]
    # a plausible word: from another utterance's reference, absent from this output
    utt = 0
    candidates = {w for i, ref in enumerate(fixture_batch.texts) if i != utt for w in ref.split()} - set(base[utt].split())
    phrase = min(candidates, key=lambda w: (-len(w), w))
    weights = {"decoder": 1.0, "hotwords": 8.0}
    boosted = make_search(model, registry, weights, {"hotwords": {"phrases": [phrase]}}, beam_size=4)(states, lengths)
    best = boosted[utt][0]
    assert phrase in tok.decode(best.tokens).split()
    assert best.scores["hotwords"] >= len(phrase)
    before = sum(text.split().count(phrase) for text in base)
    after = sum(tok.decode(n[0].tokens).split().count(phrase) for n in boosted)
    assert after > before


# -- configuration errors -----------------------------------------------------------------------
@pytest.mark.parametrize(
    ("phrases", "match"),
    [
        (["ALPHA", "4 GEESE"], r"phrases\[1\].*'4 GEESE'.*'4'"),
        (["ALPHA", "ÆON"], r"phrases\[1\].*'ÆON'"),
        ([""], r"phrases\[0\].*'' is empty"),
        (["?!"], r"phrases\[0\].*'\?!' is empty"),
        ("ALPHA", "must be a list of strings"),
        ([3], r"phrases\[0\].*must be strings"),
    ],
)
def test_bad_phrases(random_model, registry, phrases, match):
    with pytest.raises(ConfigError, match=match):
        _hotwords(random_model, registry, phrases=phrases)


def test_phrases_file(random_model, registry, tokenizer, tmp_path):
    path = tmp_path / "hotwords.txt"
    path.write_text("# names to boost\nalpha\n\n  sea shells  # with a comment\n")
    scorer = _hotwords(random_model, registry, phrases=["Beta"], phrases_file=str(path))
    assert scorer.phrases == ("BETA", "ALPHA", "SEA SHELLS")
    assert [sum(s) for s in _step_scores(scorer, tokenizer, ["ALPHA SEA SHELLS", "BETA"])] == [15, 4]


def test_phrases_file_errors(random_model, registry, tmp_path):
    missing = tmp_path / "nope.txt"
    with pytest.raises(ConfigError, match=r"phrases_file.*nope\.txt.*does not exist"):
        _hotwords(random_model, registry, phrases_file=str(missing))
    bad = tmp_path / "bad.txt"
    bad.write_text("ALPHA\nR2D2\n")
    with pytest.raises(ConfigError, match=r"bad\.txt:2.*'R2D2'"):
        _hotwords(random_model, registry, phrases_file=str(bad))


def test_unknown_param_is_named(random_model, registry):
    weights = {"decoder": 1.0, "hotwords": 1.0}
    with pytest.raises(ConfigKeyError, match=r"decode\.scorers\.hotwords.*unknown key 'phrase'.*Did you mean 'phrases'"):
        build_scorers(random_model, registry, weights, {"hotwords": {"phrase": ["ALPHA"]}})


def test_registered_as_a_builtin(registry):
    info = registry.get("scorer", "hotwords")
    assert info.cls is HotwordsScorer and info.plugin == "hotwords"
