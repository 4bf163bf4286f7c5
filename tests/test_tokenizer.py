"""asr_s2s.tokenizer: LibriSpeech-style normalisation and the character vocabulary."""

from __future__ import annotations

import string

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from asr_s2s.errors import TokenizerError
from asr_s2s.tokenizer import BLANK, CHARACTERS, SOS_EOS, CharTokenizer, normalize_text


@pytest.mark.parametrize(
    ("raw", "normalised"),
    [
        ("The Cat sat", "THE CAT SAT"),
        ("  many   spaces\tand\nlines ", "MANY SPACES AND LINES"),
        ("don\u2019t", "DON'T"),  # curly apostrophe
        ("\u2018quoted\u2019 word", "QUOTED WORD"),  # curly quotes around a word are dropped
        ("it's `fine`", "IT'S FINE"),
        ("well-known", "WELL KNOWN"),
        ("a\u2014dash", "A DASH"),
        ("and/or", "AND OR"),
        ("caf\u00e9 na\u00efve \u00c9COLE", "CAFE NAIVE ECOLE"),
        ("Hello, world! How are you?", "HELLO WORLD HOW ARE YOU"),
        ("'twas the night", "TWAS THE NIGHT"),
        ("the boys' toys", "THE BOYS TOYS"),
        ("' lone apostrophe '", "LONE APOSTROPHE"),
        ("\ufb01sh", "FISH"),  # ligature folded by NFKD
        ("MiXeD CaSe", "MIXED CASE"),
        ("\u00abBonjour\u00bb, dit-il\u2026", "BONJOUR DIT IL"),  # guillemets, ellipsis
        ("\u00bfQu\u00e9?", "QUE"),
        ("\u201cQuoted\u201d", "QUOTED"),
        ("no\u00a0break\u3000space", "NO BREAK SPACE"),  # no-break and ideographic spaces
        ("zero\u200bwidth", "ZEROWIDTH"),
        ("Stra\u00dfe", "STRASSE"),
        ("", ""),
        ("...", ""),
    ],
)
def test_normalize_examples(raw, normalised):
    assert normalize_text(raw) == normalised


def test_normalize_keeps_digits_so_encode_can_reject_them():
    assert normalize_text("room 101") == "ROOM 101"


def test_vocabulary_layout():
    tok = CharTokenizer()
    assert tok.tokens[:2] == [BLANK, SOS_EOS]
    assert (tok.blank_id, tok.sos_id, tok.eos_id) == (0, 1, 1)
    assert len(tok) == 2 + 26 + 2
    assert set(tok.tokens[2:]) == set(string.ascii_uppercase) | {" ", "'"}


def test_encode_decode_round_trip():
    tok = CharTokenizer()
    text = "HE DIDN'T KNOW THE WAY"
    ids = tok.encode(text)
    assert len(ids) == len(text) and min(ids) >= 2
    assert tok.decode(ids) == text


def test_decode_skips_special_tokens():
    tok = CharTokenizer()
    ids = tok.encode("AB")
    assert tok.decode([tok.sos_id, *ids, tok.blank_id, tok.eos_id]) == "AB"


def test_encode_names_where_and_bad_characters():
    tok = CharTokenizer()
    with pytest.raises(TokenizerError) as info:
        tok.encode("ROOM 101", where="utterance 42-1-7")
    message = str(info.value)
    assert "utterance 42-1-7" in message and "'0'" in message and "'1'" in message


def test_save_load_round_trip(tmp_path):
    tok = CharTokenizer()
    path = tmp_path / "tokens.txt"
    tok.save(path)
    lines = path.read_text().splitlines()
    assert "<space>" in lines and " " not in lines
    assert CharTokenizer.load(path).tokens == tok.tokens


def test_bad_token_lists():
    with pytest.raises(TokenizerError, match="must start with"):
        CharTokenizer(["A", "B"])
    with pytest.raises(TokenizerError, match="duplicates"):
        CharTokenizer([BLANK, SOS_EOS, "A", "A"])


# -- properties ---------------------------------------------------------------------------
@given(st.text())
@settings(max_examples=300)
def test_normalize_never_crashes_and_is_idempotent(text):
    out = normalize_text(text)
    assert isinstance(out, str)
    assert out == out.strip() and "  " not in out
    assert normalize_text(out) == out


_ASCII_LETTERS_SPACES_APOSTROPHES = st.text(alphabet=string.ascii_letters + " '\t\n", max_size=80)


@given(_ASCII_LETTERS_SPACES_APOSTROPHES)
@settings(max_examples=300)
def test_letter_text_round_trips_through_encode_decode(text):
    tok = CharTokenizer()
    out = normalize_text(text)
    assert set(out) <= set(CHARACTERS)
    assert tok.decode(tok.encode(out)) == out
    # normalisation only changes case, apostrophes at word edges and whitespace
    assert out.replace("'", "").split() == text.upper().replace("'", "").split()


@pytest.mark.parametrize("text", ["''", "a '' b", "rock ''' n roll"])
def test_apostrophe_only_words_are_dropped(text):
    out = normalize_text(text)
    assert all(word.strip("'") for word in out.split())


@given(st.text())
@settings(max_examples=300)
def test_any_text_encodes_and_round_trips_or_names_exactly_the_bad_characters(text):
    """Whatever a transcript holds: encode succeeds and decodes back, or raises TokenizerError listing the culprits."""
    tok = CharTokenizer()
    out = normalize_text(text)
    bad = sorted(set(out) - set(CHARACTERS))
    if bad:
        with pytest.raises(TokenizerError) as info:
            tok.encode(out, where="train.jsonl:7")
        assert str(info.value).startswith("train.jsonl:7: characters ") and repr(bad) in str(info.value)
    else:
        assert tok.decode(tok.encode(out)) == out


@given(st.lists(st.integers(0, len(CharTokenizer()) - 1), max_size=50))
def test_decode_of_any_ids_never_crashes(ids):
    tok = CharTokenizer()
    text = tok.decode(ids)
    assert set(text) <= set(CHARACTERS) and len(text) == sum(i > tok.sos_id for i in ids)
