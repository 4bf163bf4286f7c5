"""Word and character error rates with jiwer.

Scoring compares references as written: :func:`scoring_text` upper-cases both
sides and collapses whitespace, and changes nothing else (punctuation,
apostrophes and accents stay). An utterance without a hypothesis is scored
against the empty string, so all its reference words count as deletions.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import jiwer


def scoring_text(text: str) -> str:
    """The text that is scored: upper case, words separated by single spaces, nothing else changed."""
    return " ".join(text.upper().split())


@dataclass(frozen=True)
class ErrorRates:
    """WER and CER in percent, with the word- and character-level edit counts."""

    wer: float
    cer: float
    substitutions: int
    deletions: int
    insertions: int
    words: int
    characters: int
    utterances: int
    char_substitutions: int = 0
    char_deletions: int = 0
    char_insertions: int = 0
    sentence_errors: int = 0  # utterances whose hypothesis differs from the reference

    def as_dict(self) -> dict:
        return asdict(self)


def error_rates(references: Sequence[str], hypotheses: Sequence[str]) -> ErrorRates:
    """Corpus-level error rates of aligned reference/hypothesis lists, both sides
    normalised by :func:`scoring_text` (an empty hypothesis is all deletions)."""
    if len(references) != len(hypotheses):
        raise ValueError(f"{len(references)} references but {len(hypotheses)} hypotheses")
    if not references:
        raise ValueError("no utterances to score")
    references = [scoring_text(r) for r in references]
    hypotheses = [scoring_text(h) for h in hypotheses]
    words = jiwer.process_words(references, hypotheses)
    chars = jiwer.process_characters(references, hypotheses)
    n_words = words.hits + words.substitutions + words.deletions
    n_chars = chars.hits + chars.substitutions + chars.deletions
    return ErrorRates(
        wer=100.0 * words.wer,
        cer=100.0 * chars.cer,
        substitutions=words.substitutions,
        deletions=words.deletions,
        insertions=words.insertions,
        words=n_words,
        characters=n_chars,
        utterances=len(references),
        char_substitutions=chars.substitutions,
        char_deletions=chars.deletions,
        char_insertions=chars.insertions,
        sentence_errors=sum(r != h for r, h in zip(references, hypotheses)),
    )


def alignment_text(utt_id: str, reference: str, hypothesis: str) -> str:
    """A readable REF/HYP word alignment of one utterance (both sides by :func:`scoring_text`), headed by its id."""
    output = jiwer.process_words(scoring_text(reference), scoring_text(hypothesis))
    shown = jiwer.visualize_alignment(output, show_measures=False, skip_correct=False)
    body = shown.split("\n", 1)[1].strip("\n")  # drop jiwer's "=== SENTENCE 1 ===" header
    return f"=== {utt_id} (WER {100 * output.wer:.1f}%) ===\n{body}\n"


def format_table(rows: Sequence[tuple[str, ErrorRates]]) -> str:
    """A Markdown table of named results."""
    lines = [
        "| set | utts | words | WER % | CER % | sub | del | ins |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in rows:
        lines.append(
            f"| {name} | {r.utterances} | {r.words} | {r.wer:.2f} | {r.cer:.2f} | "
            f"{r.substitutions} | {r.deletions} | {r.insertions} |"
        )
    return "\n".join(lines)
