"""asr_s2s.metrics: corpus WER/CER with edit counts, alignments and tables."""

from __future__ import annotations

import pytest

from asr_s2s.metrics import ErrorRates, alignment_text, error_rates, format_table, scoring_text


def test_counts_by_hand():
    # REF: A B C _   (3 words, 5 characters)
    # HYP: A X C D   one substitution (B->X), one insertion (D)
    rates = error_rates(["A B C"], ["A X C D"])
    assert (rates.substitutions, rates.deletions, rates.insertions) == (1, 0, 1)
    assert rates.words == 3 and rates.characters == 5 and rates.utterances == 1
    assert rates.wer == pytest.approx(100 * 2 / 3)
    assert rates.cer == pytest.approx(100 * 3 / 5)  # B->X, plus inserted " D"


def test_corpus_level_pooling():
    rates = error_rates(["A B C", "HELLO"], ["", "HELLO"])
    assert (rates.substitutions, rates.deletions, rates.insertions) == (0, 3, 0)
    assert rates.words == 4 and rates.wer == pytest.approx(75.0)
    assert rates.characters == 10 and rates.cer == pytest.approx(50.0)


def test_perfect():
    rates = error_rates(["THE CAT", "SAT"], ["THE CAT", "SAT"])
    assert rates.wer == 0 and rates.cer == 0 and rates.utterances == 2


def test_as_dict_has_the_reported_keys():
    d = error_rates(["A"], ["B"]).as_dict()
    assert {"wer", "cer", "substitutions", "deletions", "insertions", "words", "characters", "utterances",
            "char_substitutions", "char_deletions", "char_insertions", "sentence_errors"} == set(d)


def test_character_counts_and_sentence_errors():
    rates = error_rates(["AB C", "HELLO"], ["AX C D", "HELLO"])
    assert (rates.char_substitutions, rates.char_deletions, rates.char_insertions) == (1, 0, 2)
    assert rates.sentence_errors == 1 and rates.characters == 4 + 5


def test_mismatched_or_empty_inputs():
    with pytest.raises(ValueError, match="2 references but 1 hypotheses"):
        error_rates(["A", "B"], ["A"])
    with pytest.raises(ValueError, match="no utterances"):
        error_rates([], [])


def test_alignment_text():
    text = alignment_text("1001-10-0000", "A B C", "A X C D")
    assert text.startswith("=== 1001-10-0000 (WER 66.7%) ===\n")
    assert "REF: A B C" in text and "HYP: A X C D" in text
    assert "S" in text and "I" in text


def test_format_table():
    table = format_table([("test-clean", ErrorRates(12.345, 5.0, 1, 2, 3, 40, 200, 7))])
    lines = table.splitlines()
    assert lines[0].startswith("| set |") and len(lines) == 3
    assert lines[2] == "| test-clean | 7 | 40 | 12.35 | 5.00 | 1 | 2 | 3 |"


def test_alignment_of_an_exact_match():
    text = alignment_text("u1", "THE CAT", "THE CAT")
    assert text.startswith("=== u1 (WER 0.0%) ===") and "REF: THE CAT" in text and "HYP: THE CAT" in text


def test_scoring_text_changes_case_and_whitespace_only():
    assert scoring_text("  'Tis the\tdogs'  bone\n") == "'TIS THE DOGS' BONE"
    assert scoring_text("don't, café!") == "DON'T, CAFÉ!", "punctuation and accents are kept as written"
    assert scoring_text("") == ""


def test_references_keep_their_apostrophes_and_both_sides_are_normalised_alike():
    rates = error_rates(["'Tis the  dogs' bone"], ["TIS THE DOGS bone"])
    assert (rates.substitutions, rates.deletions, rates.insertions) == (2, 0, 0)
    assert rates.words == 4 and rates.characters == len("'TIS THE DOGS' BONE")
    assert (rates.char_substitutions, rates.char_deletions, rates.char_insertions) == (0, 2, 0)
    assert error_rates(["a b"], ["A\tB "]).sentence_errors == 0


def test_an_empty_hypothesis_is_all_deletions():
    rates = error_rates(["GONE FOR GOOD", "A"], ["", "A"])
    assert (rates.substitutions, rates.deletions, rates.insertions) == (0, 3, 0)
    assert rates.char_deletions == len("GONE FOR GOOD") and rates.sentence_errors == 1


def test_alignment_shows_the_reference_as_written():
    text = alignment_text("u1", "'tis the  dogs'", "TIS THE DOGS")
    assert "REF: 'TIS THE DOGS'" in text and "HYP:  TIS THE  DOGS" in text
