"""Beam search never turns a scorer's fault into a silent empty or short result.

A third-party scorer that returns NaN, the wrong shape, or raises must stop
the search with an error naming the scorer, its plugin and its
distribution; CTC-only decoding must work beside token-independent full
scorers (length bonus, coverage), which cannot choose the CTC candidates.
"""

from __future__ import annotations

import pytest
import torch

from asr_s2s.errors import ScorerError
from asr_s2s.registry import Registry
from asr_s2s.transcriber import load_model
from conftest import install_plugin, make_search

BROKEN_SCORERS = '''
import torch
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Scorer


class _Stateless(Scorer):
    def __init__(self, vocab_size):
        self.vocab_size = vocab_size

    @classmethod
    def from_model(cls, model):
        return cls(model.vocab_size)

    def init_state(self, states, state_lengths):
        return None

    def select(self, state, index, tokens):
        return None


class NanAtStepTwo(_Stateless):
    name = "nan_scorer"

    def score(self, prefix, state):
        scores = torch.zeros(prefix.shape[0], self.vocab_size)
        if prefix.shape[1] == 3:
            scores[0, 5] = float("nan")
        return scores, state


class OneTooFew(_Stateless):
    name = "short_scorer"

    def score(self, prefix, state):
        return torch.zeros(prefix.shape[0], self.vocab_size - 1), state


class Raises(_Stateless):
    name = "raising_scorer"

    def score(self, prefix, state):
        raise IndexError("index 7 is out of bounds")


class EndsAtOnce(_Stateless):
    """Rules out every token but <eos>: every hypothesis ends at the first step."""

    name = "ends_at_once"

    def __init__(self, vocab_size, eos):
        super().__init__(vocab_size)
        self.eos = eos

    @classmethod
    def from_model(cls, model):
        return cls(model.vocab_size, model.tokenizer.eos_id)

    def score(self, prefix, state):
        scores = torch.full((prefix.shape[0], self.vocab_size), float("-inf"))
        scores[:, self.eos] = 0.0
        return scores, state


@hookimpl
def asr_s2s_register_scorers():
    return [NanAtStepTwo, OneTooFew, Raises, EndsAtOnce]
'''


@pytest.fixture
def broken_registry(tmp_path, monkeypatch) -> Registry:
    install_plugin(tmp_path / "site", monkeypatch, "broken_scorers", BROKEN_SCORERS, dist="broken-scorers", version="0.3", entry_point="broken")
    return Registry()


@pytest.mark.parametrize(
    ("scorer", "what"),
    [
        ("nan_scorer", r"1 non-finite score\(s\) \(NaN or \+inf\) at step 2"),
        ("short_scorer", r"shape \(\d+, 29\).*expected shape \(\d+, 30\)"),
        ("raising_scorer", r"raised in score\(\): IndexError: index 7 is out of bounds"),
    ],
)
def test_a_faulty_scorer_is_an_error_naming_it_and_its_plugin(broken_registry, robust_package, fixture_utterances, scorer, what):
    transcriber = load_model(robust_package, registry=broken_registry)
    with pytest.raises(ScorerError, match=what) as info:
        transcriber.transcribe(fixture_utterances[0].audio, beam_size=3, scorers={scorer: 1.0})
    message = str(info.value)
    assert f"scorer {scorer!r} (plugin 'broken', broken-scorers 0.3)" in message
    assert f"--scorer {scorer}=0" in message


def test_ctc_alone_is_not_narrowed_by_a_token_independent_scorer(trained_model, registry, fixture_batch):
    """A length bonus scores every token alike: it must not pick CTC's candidates."""
    with torch.inference_mode():
        states, lengths = trained_model.encode(fixture_batch.feats, fixture_batch.feat_lengths)
    alone = make_search(trained_model, registry, {"ctc": 1.0}, beam_size=4)(states, lengths)
    joined = make_search(trained_model, registry, {"ctc": 1.0, "length_bonus": 1e-9}, beam_size=4)(states, lengths)
    assert [n[0].tokens for n in joined] == [n[0].tokens for n in alone]
    assert all(len(n[0].tokens) > 3 for n in alone)


def test_ctc_only_transcription_from_the_command_line(robust_package, fixture_utterances):
    """The issue's command: decoder and coverage off, ctc on, the package's length bonus left as it is."""
    transcriber = load_model(robust_package)
    weights = {"decoder": 0.0, "coverage": 0.0, "ctc": 1.0, "length_bonus": 0.5}
    result = transcriber.transcribe(fixture_utterances[0].audio, beam_size=4, scorers=weights)
    assert len(result.text) > 5 and set(result.segments[0].scores) == {"ctc", "length_bonus"}


def test_an_output_that_ends_at_once_is_a_warning_naming_the_file(broken_registry, robust_package, fixture_utterances, caplog):
    transcriber = load_model(robust_package, registry=broken_registry)
    audio = fixture_utterances[0].audio
    with caplog.at_level("WARNING", logger="asr_s2s"):
        result = transcriber.transcribe(audio, beam_size=2, scorers={"ends_at_once": 100.0})
    assert result.text == ""
    assert any(str(audio) in r.getMessage() and "0 character(s) for" in r.getMessage() for r in caplog.records)
    caplog.clear()
    with caplog.at_level("WARNING", logger="asr_s2s"):
        assert transcriber.transcribe(audio, beam_size=2).text
    assert not caplog.records, "a normal output is not flagged"
