"""asr_s2s.alignment: word frames from CTC forced alignment."""

from __future__ import annotations

import pytest
import torch

from asr_s2s.alignment import WordAlignment, align_words, ctc_alignable


@pytest.fixture
def texts(tokenizer):
    return tokenizer.tokens


def _peaky(texts, frames: int, peaks: dict[int, str]) -> torch.Tensor:
    """Log-probs ``(frames, V)``: blank everywhere except a confident character at each given frame."""
    logits = torch.full((frames, len(texts)), -8.0)
    logits[:, 0] = 8.0
    for frame, char in peaks.items():
        logits[frame, 0] = -8.0
        logits[frame, texts.index(char)] = 8.0
    return torch.log_softmax(logits, -1)


def test_ctc_alignable():
    assert ctc_alignable(3, [5, 6, 7])
    assert not ctc_alignable(3, [5, 5, 7])  # a repeat needs a blank between
    assert ctc_alignable(4, [5, 5, 7])
    assert ctc_alignable(0, [])


def test_words_at_their_frames(tokenizer, texts):
    log_probs = _peaky(texts, 20, {2: "A", 3: "B", 6: " ", 10: "C", 11: "C", 15: "D"})
    tokens = tokenizer.encode("AB CD")
    words = align_words(log_probs, tokens, texts)
    assert [w.text for w in words] == ["AB", "CD"]
    assert (words[0].start, words[0].end) == (2, 4)
    assert words[1].start == 10 and words[1].end == 16
    assert all(0.9 < w.probability <= 1.0 for w in words)


def test_a_repeated_letter_needs_a_blank_between(tokenizer, texts):
    log_probs = _peaky(texts, 8, {1: "O", 3: "O", 5: "K"})
    (word,) = align_words(log_probs, tokenizer.encode("OOK"), texts)
    assert word == WordAlignment("OOK", 1, 6, word.probability)


def test_the_given_tokens_are_aligned_even_where_ctc_disagrees(tokenizer, texts):
    """Forced alignment spells the hypothesis, not what CTC would pick: its words are the hypothesis's."""
    log_probs = _peaky(texts, 12, {2: "X", 6: "Y"})
    words = align_words(log_probs, tokenizer.encode("HI YOU"), texts)
    assert [w.text for w in words] == ["HI", "YOU"]
    assert words[0].end <= words[1].start and all(w.probability < 0.5 for w in words)


def test_too_many_tokens_for_the_frames(tokenizer, texts):
    assert align_words(_peaky(texts, 3, {}), tokenizer.encode("HELLO"), texts) is None


def test_no_tokens_no_words(texts):
    assert align_words(_peaky(texts, 5, {}), [], texts) == []


def test_leading_trailing_and_double_spaces_make_no_empty_words(tokenizer, texts):
    words = align_words(_peaky(texts, 30, {}), tokenizer.encode(" A  B "), texts)
    assert [w.text for w in words] == ["A", "B"]


def test_the_trained_model_aligns_each_reference(trained_model, fixture_batch, tokenizer):
    """On real speech, the reference words come back in order, inside the utterance, without overlap."""
    with torch.inference_mode():
        states, lengths = trained_model.encode(fixture_batch.feats, fixture_batch.feat_lengths)
        log_probs = trained_model.ctc_log_probs(states)
    for b, text in enumerate(fixture_batch.texts):
        frames = int(lengths[b])
        words = align_words(log_probs[b, :frames], tokenizer.encode(text), tokenizer.tokens)
        assert [w.text for w in words] == text.split()
        assert all(0 <= w.start < w.end <= frames for w in words)
        assert all(a.end <= b.start for a, b in zip(words, words[1:]))
