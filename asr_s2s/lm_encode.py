"""One pass over LM text files into token files (the ``train.*``/``valid.*`` of :mod:`asr_s2s.lm_data`).

Lines are read about 4 MB at a time. A block that is already normalised (upper-case letters,
apostrophes inside words, single spaces: ``librispeech-lm-norm.txt`` and ``asr-s2s lm-text`` output)
is encoded at once with byte tables; any other block line by line through
:func:`asr_s2s.tokenizer.normalize_text` and the tokenizer. Both give the same ids (tested).

Without a validation text, ``valid_fraction`` of each block of :data:`SPLIT_BLOCK` sentences is held
out: the block's sentences are shuffled as :func:`held_out` does, its first share goes to ``valid``
and the rest to ``train`` in that order, so that a text of one block is split (and ordered) exactly
as :func:`asr_s2s.lm.split_valid` splits it in memory.
"""

from __future__ import annotations

import os
import random
import string
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np

from asr_s2s.errors import ConfigError, ManifestError, TokenizerError
from asr_s2s.files import fsync_file
from asr_s2s.progress import progress_bar
from asr_s2s.tokenizer import CharTokenizer, normalize_text

SPLIT_BLOCK = 16384  # sentences: valid_fraction of each block of the text is held out
_READ_HINT = 1 << 20  # characters of lines read at a time
_GROUP = 64  # lines checked together: a line that needs normalising sends its group through normalize_text
_NEWLINE = 255  # the byte a newline becomes in the fast path (token lists of up to 255 entries)
# with newlines read as spaces: in a normalised block no line is empty, starts or ends with a space, has two
# spaces in a row or a word that starts or ends with an apostrophe
_NOT_NORMALISED = (b"  ", b" '", b"' ")
_NEWLINE_AS_SPACE = bytes(range(256)).replace(b"\n", b" ")


def held_out(count: int, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices of ``count`` sentences to train on and to hold out (``fraction`` of them, at least one of
    two or more), both in the order of one seeded shuffle."""
    if not 0 < fraction < 1:
        raise ConfigError(f"train.valid_fraction must be between 0 and 1, got {fraction}")
    order = list(range(count))
    random.Random(seed).shuffle(order)
    cut = max(1, round(fraction * count)) if count >= 2 else 0
    return order[cut:], order[:cut]


class _StreamWriter:
    """Appends sentences to ``PREFIX.tokens`` (their ids) and ``PREFIX.offsets`` (int64 ends; a 0 first)."""

    def __init__(self, prefix: Path, itemsize: int) -> None:
        self.itemsize = itemsize
        self.tokens = open(f"{prefix}.tokens", "wb", buffering=1 << 20)
        self.offsets = open(f"{prefix}.offsets", "wb", buffering=1 << 20)
        self.offsets.write(np.zeros(1, dtype=np.int64).tobytes())
        self.sentences = self.length = 0

    def add(self, data: bytes | bytearray, lengths: np.ndarray) -> None:
        """Sentences of ``lengths`` tokens whose ids are ``data``, back to back."""
        self.tokens.write(data)
        self.offsets.write((self.length + np.cumsum(lengths, dtype=np.int64)).tobytes())
        self.sentences += len(lengths)
        self.length += int(np.sum(lengths, dtype=np.int64))

    def close(self) -> dict:
        for handle in (self.tokens, self.offsets):
            handle.close()
            fsync_file(handle.name)
        return {"sentences": self.sentences, "tokens": self.length}


class _Splitter:
    """Collects :data:`SPLIT_BLOCK` sentences, then writes their held-out share to ``valid``, the rest to ``train``."""

    def __init__(self, train: _StreamWriter, valid: _StreamWriter, split: tuple[float, int]) -> None:
        self.train, self.valid, self.split = train, valid, split
        self.data, self.lengths, self.blocks = bytearray(), np.zeros(0, dtype=np.int64), 0

    def add(self, data: bytes | bytearray, lengths: np.ndarray) -> None:
        self.data += data
        self.lengths = np.concatenate([self.lengths, lengths])
        while len(self.lengths) >= SPLIT_BLOCK:
            cut = int(self.lengths[:SPLIT_BLOCK].sum()) * self.train.itemsize
            self._write(self.data[:cut], self.lengths[:SPLIT_BLOCK])
            del self.data[:cut]
            self.lengths = self.lengths[SPLIT_BLOCK:]

    def close(self) -> None:
        if len(self.lengths):
            self._write(self.data, self.lengths)

    def _write(self, data: bytearray, lengths: np.ndarray) -> None:
        fraction, seed = self.split
        keep, hold = held_out(len(lengths), fraction, seed + 1_000_003 * self.blocks)
        ends = np.cumsum(lengths) * self.train.itemsize
        starts, ends, data = (ends - lengths * self.train.itemsize).tolist(), ends.tolist(), bytes(data)
        for writer, indices in ((self.train, keep), (self.valid, hold)):
            writer.add(b"".join([data[starts[i]:ends[i]] for i in indices]), lengths[indices])
        self.blocks += 1


class _Encoder:
    """Token ids of blocks of text lines, normalised like the transcripts (blank lines left out)."""

    def __init__(self, tokenizer: CharTokenizer) -> None:
        self.tokenizer = tokenizer
        self.dtype = np.dtype(np.uint8 if len(tokenizer) <= 256 else np.uint16)
        ids = {t: i for i, t in enumerate(tokenizer.tokens) if len(t) == 1}
        self.known = frozenset(ids)
        # byte tables need ASCII characters and a spare byte for the newline
        self.fast = len(tokenizer) <= _NEWLINE and all(c.isascii() and c != "\n" for c in ids)
        table = bytearray(256)
        for c, i in ids.items() if self.fast else ():
            table[ord(c)] = i
        table[ord("\n")] = _NEWLINE
        self.table = bytes(table)
        self.normalised = ("".join(c for c in string.ascii_uppercase + "' " if c in ids) + "\n").encode()
        self.bad: list[str] = []
        self.bad_lines = 0

    def block(self, lines: list[str], path: str | os.PathLike, first: int) -> tuple[bytes, np.ndarray]:
        """The ids of the sentences of ``lines`` (line ``first`` on of ``path``), back to back, and their lengths."""
        if not self.fast:
            return self._one_by_one(lines, path, first)
        pieces = []  # each sentence as ASCII + newline
        for start in range(0, len(lines), _GROUP):
            group = lines[start:start + _GROUP]
            raw = self._normalised("".join(group))
            pieces.append(raw if raw is not None else self._renormalised(group, path, first + start))
        ids = np.frombuffer(b"".join(pieces).translate(self.table), dtype=np.uint8)
        ends = np.flatnonzero(ids == _NEWLINE)
        return ids[ids != _NEWLINE].tobytes(), np.diff(ends, prepend=-1) - 1

    def _normalised(self, text: str) -> bytes | None:
        """``text`` as ASCII ending in a newline if :func:`normalize_text` leaves each of its lines as it is and the
        tokenizer knows each character; else None."""
        try:
            raw = text.encode("ascii")
        except UnicodeEncodeError:
            return None
        raw = raw if raw.endswith(b"\n") else raw + b"\n"
        if raw.translate(None, self.normalised):
            return None
        spaced = b" " + raw.translate(_NEWLINE_AS_SPACE)  # the start of the block is the start of a line
        return None if any(pattern in spaced for pattern in _NOT_NORMALISED) else raw

    def _renormalised(self, lines: list[str], path: str | os.PathLike, first: int) -> bytes:
        """Each line through :func:`normalize_text`, as ASCII + newline (blank and unrepresentable lines left out)."""
        out = []
        for number, line in enumerate(lines, first):
            text = normalize_text(line)
            if text and self.known.issuperset(text):
                out.append(text.encode("ascii") + b"\n")
            elif text:
                self._encode(text, path, number)  # records why not
        return b"".join(out)

    def _one_by_one(self, lines: list[str], path: str | os.PathLike, first: int) -> tuple[bytes, np.ndarray]:
        data, lengths = [], []
        for number, line in enumerate(lines, first):
            text = normalize_text(line)
            if text and (sentence := self._encode(text, path, number)) is not None:
                data.append(np.asarray(sentence, dtype=self.dtype).tobytes())
                lengths.append(len(sentence))
        return b"".join(data), np.asarray(lengths, dtype=np.int64)

    def _encode(self, text: str, path: str | os.PathLike, number: int) -> list[int] | None:
        try:
            return self.tokenizer.encode(text, where=f"{path}:{number}")
        except TokenizerError as exc:
            self.bad_lines += 1
            if len(self.bad) < 5:
                self.bad.append(str(exc))
            return None

    def check(self) -> None:
        """:raises TokenizerError: listing (up to five) lines the tokenizer cannot represent, as ``file:line``."""
        if self.bad_lines:
            raise TokenizerError(f"{self.bad_lines} line(s) contain characters the tokenizer cannot represent:\n  "
                                 + "\n  ".join(self.bad))


def _line_blocks(paths: Sequence[str | os.PathLike], progress: bool) -> Iterator[tuple[list[str], str | os.PathLike, int]]:
    """(lines, file, number of the first) of about :data:`_READ_HINT` characters at a time, with a progress bar."""
    total = sum(os.path.getsize(p) for p in paths if os.path.isfile(p))
    bar = progress_bar(total=total, unit="B", unit_scale=True, desc="encoding LM text", disable=not progress, leave=False)
    for path in paths:
        try:
            handle = open(path, encoding="utf-8")
        except OSError as exc:
            raise ManifestError(f"{path}: cannot read text file: {exc.strerror}") from None
        with handle:
            number = 1
            while lines := handle.readlines(_READ_HINT):
                yield lines, path, number
                number += len(lines)
                bar.update(sum(map(len, lines)))
    bar.close()


def encode_texts(train: Sequence[str | os.PathLike], valid: Sequence[str | os.PathLike], tokenizer: CharTokenizer,
                 split: tuple[float, int] | None, folder: Path, progress: bool = False) -> dict:
    """Write ``folder/train.*`` and ``folder/valid.*`` in one pass over the texts; their dtype and counts.

    :param split: ``(valid_fraction, seed)``: hold out part of ``train`` (``valid`` is then empty).
    :raises TokenizerError: for lines the tokenizer cannot represent (after the whole pass, listing five).
    :raises ManifestError: for an unreadable file, or no text.
    """
    encode = _Encoder(tokenizer)
    writers = {name: _StreamWriter(folder / name, encode.dtype.itemsize) for name in ("train", "valid")}
    splitter = _Splitter(writers["train"], writers["valid"], split) if split else writers["train"]
    try:
        for paths, target in ((train, splitter), (valid, writers["valid"])):
            for lines, path, first in _line_blocks(paths, progress):
                target.add(*encode.block(lines, path, first))
        if split:
            splitter.close()
    finally:
        counts = {name: writer.close() for name, writer in writers.items()}
    encode.check()
    _check_counts(counts, train, valid, split)
    return {"dtype": encode.dtype.name, **counts}


def _check_counts(counts: dict, train: Sequence, valid: Sequence, split: tuple[float, int] | None) -> None:
    names = ", ".join(map(str, train))
    text = counts["train"]["sentences"] + (counts["valid"]["sentences"] if split else 0)
    if not text:
        raise ManifestError(f"no text in {names}")
    if split and text < 2:
        raise ManifestError(f"{names}: need at least two sentences to hold one out for validation; pass --valid-text")
    if not counts["valid"]["sentences"]:
        raise ManifestError(f"no text in {', '.join(map(str, valid))}")
