"""Character tokenizer and LibriSpeech-style text normalisation."""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Sequence
from pathlib import Path

from asr_s2s.errors import TokenizerError
from asr_s2s.files import write_text_atomically

BLANK = "<blank>"
SOS_EOS = "<sos/eos>"
SPACE = "<space>"  # how " " is written in tokens.txt
CHARACTERS = " '" + string.ascii_uppercase

_APOSTROPHES = str.maketrans({"\u2018": "'", "\u2019": "'", "\u02bc": "'", "`": "'", "\u00b4": "'"})
_SEPARATORS = re.compile(r"[-\u2010-\u2015/_\s]+")
_PUNCTUATION = re.compile(r"[^\w' ]", flags=re.UNICODE)
_SPACES = re.compile(r" +")


def normalize_text(text: str) -> str:
    """LibriSpeech-style normalisation: upper case, no punctuation but apostrophes.

    Accents are folded (``café`` -> ``CAFE``), curly quotes become ``'``,
    hyphens and slashes become spaces, other punctuation is removed and
    whitespace collapsed. Characters outside the alphabet (digits, other
    scripts) are kept so that :meth:`CharTokenizer.encode` can reject them.
    This is the text a model learns to write (training targets, LM text,
    hotwords); ``evaluate`` scores against the reference as written instead
    (:func:`asr_s2s.metrics.scoring_text`: upper case and whitespace only).
    """
    text = unicodedata.normalize("NFKD", text)
    text = "".join(c for c in text if not unicodedata.combining(c))
    text = text.translate(_APOSTROPHES).upper()
    text = _SEPARATORS.sub(" ", text)
    text = _PUNCTUATION.sub("", text)
    words = (w.strip("'") for w in _SPACES.split(text.strip()))  # quotes, not contractions
    return " ".join(w for w in words if w)


class CharTokenizer:
    """Characters A-Z, apostrophe and space, plus ``<blank>`` (id 0) and ``<sos/eos>`` (id 1)."""

    def __init__(self, tokens: Sequence[str] | None = None) -> None:
        self.tokens: list[str] = list(tokens) if tokens is not None else [BLANK, SOS_EOS, *CHARACTERS]
        if self.tokens[:2] != [BLANK, SOS_EOS]:
            raise TokenizerError(f"token list must start with {BLANK} and {SOS_EOS} (a tokens.txt written by asr-s2s tokens)")
        if len(set(self.tokens)) != len(self.tokens):
            raise TokenizerError("token list holds duplicates")
        self._ids = {t: i for i, t in enumerate(self.tokens)}

    blank_id = 0
    sos_id = 1
    eos_id = 1

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, where: str = "text") -> list[int]:
        """Token ids of already-normalised ``text``.

        :raises TokenizerError: naming ``where`` and the characters the vocabulary lacks.
        """
        try:
            return [self._ids[c] for c in text]
        except KeyError:
            bad = sorted({c for c in text if c not in self._ids})
            raise TokenizerError(
                f"{where}: characters {bad!r} are not in the vocabulary "
                f"(A-Z, apostrophe, space); spell out numbers and symbols in the transcript"
            ) from None

    def decode(self, ids: Sequence[int]) -> str:
        """Text of ``ids``, skipping special tokens."""
        return "".join(self.tokens[i] for i in ids if i > self.sos_id)

    def save(self, path: str | Path) -> None:
        write_text_atomically(path, "".join((SPACE if t == " " else t) + "\n" for t in self.tokens))

    @classmethod
    def load(cls, path: str | Path) -> CharTokenizer:
        lines = Path(path).read_text().split("\n")
        return cls([" " if t == SPACE else t for t in lines if t])
