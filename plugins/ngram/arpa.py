"""Reading ARPA back-off language models (optionally gzipped) of any order, in natural-log units."""

from __future__ import annotations

import gzip
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from asr_s2s.errors import ConfigError

LN_10 = math.log(10.0)  # natural log units per log10 unit
FLOOR_LOG10 = -99.0  # log10 probability of a word with no unigram and no <unk> (SRILM's "zero")
FLOOR_LOGPROB = FLOOR_LOG10 * LN_10  # the same floor in natural log units

BOS, EOS, UNK = "<s>", "</s>", "<unk>"

_NGRAM_COUNT = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)")
_SECTION = re.compile(r"\\(\d+)-grams:")


class ArpaError(ConfigError):
    """An ARPA file is missing, unreadable or malformed; the message names the file and line."""


@dataclass
class ArpaModel:
    """An ARPA back-off model as read from the file, in natural-log units.

    ``ngrams[n - 1]`` maps each n-gram (a tuple of ``n`` words) to its
    log-probability and back-off weight (0 when the file gives none).
    """

    path: str
    ngrams: list[dict[tuple[str, ...], tuple[float, float]]] = field(default_factory=list)

    @property
    def order(self) -> int:
        """The highest n-gram order."""
        return len(self.ngrams)


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, stripped text)`` of a plain or gzipped UTF-8 file."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            for lineno, raw in enumerate(f, 1):
                try:
                    yield lineno, raw.decode("utf-8").strip()
                except UnicodeDecodeError:
                    raise ArpaError(f"{path}:{lineno}: not UTF-8 text") from None
    except FileNotFoundError:
        raise ArpaError(f"ARPA file not found: {path}") from None
    except (OSError, EOFError) as exc:
        raise ArpaError(f"cannot read ARPA file {path}: {exc}") from None


def _parse_float(text: str, where: str, what: str) -> float:
    """A log10 value converted to natural log; NaN and junk are errors."""
    try:
        value = float(text)
    except ValueError:
        raise ArpaError(f"{where}: {what} {text!r} is not a number") from None
    if math.isnan(value):
        raise ArpaError(f"{where}: {what} is NaN")
    return value * LN_10


def _parse_entry(fields: list[str], order: int, max_order: int, where: str) -> tuple[tuple[str, ...], float, float]:
    """One n-gram line ``log10p w1 .. wn [log10bow]`` as (words, logprob, backoff) in natural log."""
    has_backoff = len(fields) == order + 2
    if len(fields) != order + 1 and not (has_backoff and order < max_order):
        expected = f"{order + 1}" if order == max_order else f"{order + 1} or {order + 2}"
        raise ArpaError(f"{where}: a {order}-gram line needs {expected} fields, got {len(fields)}: {' '.join(fields)!r}")
    logprob = _parse_float(fields[0], where, "log-probability")
    backoff = _parse_float(fields[-1], where, "back-off weight") if has_backoff else 0.0
    return tuple(fields[1 : order + 1]), logprob, backoff


def read_arpa(path: str | Path) -> ArpaModel:
    """Read an ARPA file (optionally gzipped) of any order.

    Layout: text before ``\\data\\`` is ignored; ``ngram N=count`` lines
    declare orders 1..max; each ``\\N-grams:`` section lists that many
    entries; ``\\end\\`` closes the file.

    :raises ArpaError: for a missing file, or a malformed line or a count that
        disagrees with its declaration, naming ``file:line``.
    """
    path = Path(path)
    declared: dict[int, int] = {}
    model = ArpaModel(str(path))
    stage, order, lineno = "preamble", 0, 0  # stage: preamble, data, ngrams, end
    for lineno, line in _lines(path):
        where = f"{path}:{lineno}"
        if stage == "end":
            break
        if not line:
            continue
        if stage == "preamble":
            stage = "data" if line == "\\data\\" else stage
            continue
        section = _SECTION.fullmatch(line)
        if section or line == "\\end\\":
            _check_section_complete(model, declared, order, where)
            if line == "\\end\\":
                stage = "end"
                continue
            order = _open_section(model, declared, int(section.group(1)), where)
            stage = "ngrams"
        elif stage == "data":
            _declare(declared, line, where)
        else:
            words, logprob, backoff = _parse_entry(line.split(), order, max(declared), where)
            table = model.ngrams[order - 1]
            if words in table:
                raise ArpaError(f"{where}: duplicate {order}-gram {' '.join(words)!r}")
            table[words] = (logprob, backoff)
    if stage != "end":
        missing = "\\data\\" if stage == "preamble" else "\\end\\"
        raise ArpaError(f"{path}:{lineno}: unexpected end of file, no {missing} line (is this an ARPA file?)")
    if model.order != max(declared, default=0) or not declared:
        raise ArpaError(f"{path}: declares orders 1..{max(declared, default=0)} but has sections 1..{model.order}")
    return model


def _declare(declared: dict[int, int], line: str, where: str) -> None:
    """Record an ``ngram N=count`` line of the ``\\data\\`` section."""
    match = _NGRAM_COUNT.fullmatch(line)
    if not match:
        raise ArpaError(f"{where}: expected 'ngram N=count' in the \\data\\ section, got {line!r}")
    order, count = int(match.group(1)), int(match.group(2))
    if order != len(declared) + 1:
        raise ArpaError(f"{where}: n-gram orders must be declared as 1, 2, 3, ...; got order {order} after {len(declared)}")
    declared[order] = count


def _open_section(model: ArpaModel, declared: dict[int, int], order: int, where: str) -> int:
    """Start the ``\\N-grams:`` section; sections must come in order 1, 2, ... as declared."""
    if order != model.order + 1 or order not in declared:
        raise ArpaError(f"{where}: unexpected \\{order}-grams: section (declared orders 1..{max(declared, default=0)}, "
                        f"after section {model.order})")
    model.ngrams.append({})
    return order


def _check_section_complete(model: ArpaModel, declared: dict[int, int], order: int, where: str) -> None:
    """The section of ``order`` just closed must hold as many entries as declared."""
    if order and len(model.ngrams[order - 1]) != declared[order]:
        raise ArpaError(f"{where}: \\data\\ declares ngram {order}={declared[order]} but the "
                        f"\\{order}-grams: section has {len(model.ngrams[order - 1])} entries")
