"""Word timings from CTC forced alignment.

Given a model's CTC log-probabilities over encoder frames and the token
sequence the search chose, :func:`torchaudio.functional.forced_align` finds the
most likely CTC path that spells exactly those tokens; the frames of each
word's first and last character give its start and end. This aligns the
hypothesis, whatever searched it (greedy, beam, with any scorers), so the
words of the timings are always the words of the text.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torchaudio.functional as F


@dataclass(frozen=True)
class WordAlignment:
    """One word's frames ``[start, end)`` (encoder frames) and its mean CTC probability per aligned frame."""

    text: str
    start: int
    end: int
    probability: float


def ctc_alignable(num_frames: int, tokens: Sequence[int]) -> bool:
    """Whether CTC can spell ``tokens`` in ``num_frames`` frames: one frame per token plus a blank between repeats."""
    repeats = sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)
    return num_frames >= len(tokens) + repeats


def align_words(log_probs: torch.Tensor, tokens: Sequence[int], token_texts: Sequence[str], blank: int = 0,
                separator: str = " ") -> list[WordAlignment] | None:
    """Frames of each word of ``tokens``.

    :param log_probs: ``(T', V)`` CTC log-probabilities of one segment (valid frames only).
    :param tokens: the hypothesis's token ids, without ``<sos>``/``<eos>`` (and without blanks).
    :param token_texts: the text of each token id (``V`` entries); ``separator`` marks word boundaries.
    :returns: the words in order, or None when the tokens are too many for the frames.
    """
    tokens = [t for t in tokens if t != blank]
    if not tokens:
        return []
    if not ctc_alignable(log_probs.shape[0], tokens):
        return None
    targets = torch.tensor([tokens], dtype=torch.int32, device=log_probs.device)
    path, scores = F.forced_align(log_probs.unsqueeze(0).float(), targets, blank=blank)
    spans = F.merge_tokens(path[0], scores[0].exp(), blank=blank)  # one span per target token, in order
    words: list[WordAlignment] = []
    current: list = []
    for span in [*spans, None]:
        if span is None or token_texts[span.token] == separator:
            if current:
                frames = sum(len(s) for s in current)
                probability = sum(s.score * len(s) for s in current) / frames
                text = "".join(token_texts[s.token] for s in current)
                words.append(WordAlignment(text, current[0].start, current[-1].end, float(probability)))
            current = []
        else:
            current.append(span)
    return words
