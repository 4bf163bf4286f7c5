"""An ARPA model compiled into sorted ``int64`` key tables for vectorised back-off lookup, cached beside the file."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
from pathlib import Path

import torch

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from asr_s2s.files import write_atomically

from .arpa import BOS, FLOOR_LOGPROB, UNK, ArpaError, ArpaModel, read_arpa

log = logging.getLogger(__name__)

ROOT = 0  # history id of the empty history, and node id of the trie root
TABLES_SUFFIX = ".tables.safetensors"  # compiled tables, cached beside the ARPA file
TABLES_FORMAT = "2"  # bump when NgramTables' saved layout changes


def _lookup(keys: torch.Tensor, values: torch.Tensor, query: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Values of ``query`` ``(M,)`` in the sorted ``keys`` ``(K,)``; returns values ``(M,)`` and found ``(M,)`` bool.

    Where not found the value is arbitrary (clamped index) and must be masked.
    """
    if keys.numel() == 0:
        return values.new_zeros(query.shape), torch.zeros_like(query, dtype=torch.bool)
    index = torch.searchsorted(keys, query).clamp_(max=keys.numel() - 1)
    return values[index], keys[index] == query


def _sorted_table(keys: list[int], values: list, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Key and value tensors sorted by key."""
    key_tensor = torch.tensor(keys, dtype=torch.long)
    order = key_tensor.argsort()
    return key_tensor[order], torch.tensor(values, dtype=dtype)[order]


class NgramTables:
    """An ARPA model compiled for vectorised lookup.

    Every word sequence shorter than the model order that occurs inside an
    n-gram is a *history* with an id (the empty history is :data:`ROOT`).
    Histories are closed under prefixes and suffixes, so the longest known
    suffix of any context is reached by repeatedly dropping its oldest word.
    Word ids index :attr:`words`; one more id, :attr:`oov_id` (that of
    ``<unk>`` when the model has it), stands for words the model lacks.
    Keys are ``history_id * stride + word_id`` with ``stride = len(words) + 1``.
    :func:`load_tables` caches the compiled tables beside the ARPA file.
    """

    TENSORS = ("backoff", "suffix", "length", "ngram_keys", "ngram_logprob", "child_keys", "child_history", "histories")

    def __init__(self, arpa: ArpaModel) -> None:
        self._set_words(sorted({w for table in arpa.ngrams for ngram in table for w in ngram}), arpa.order)
        histories = self._histories(arpa)
        self.history_ids = {h: i for i, h in enumerate(histories)}
        width = max(self.order - 1, 1)
        self.histories = torch.tensor(  # (H, max(order - 1, 1)): each history's word ids, -1 padded
            [[self.word_ids[w] for w in h] + [-1] * (width - len(h)) for h in histories], dtype=torch.long
        )
        self.backoff = torch.tensor([self._entry(arpa, h)[1] for h in histories], dtype=torch.float64)  # (H,)
        self.suffix = torch.tensor([self.history_ids[h[1:]] if h else ROOT for h in histories], dtype=torch.long)  # (H,)
        self.length = torch.tensor([len(h) for h in histories], dtype=torch.long)  # (H,)
        self.ngram_keys, self.ngram_logprob = _sorted_table(  # (G,), (G,)
            [self._key(ngram[:-1], ngram[-1]) for table in arpa.ngrams for ngram in table],
            [logprob for table in arpa.ngrams for logprob, _ in table.values()],
            torch.float64,
        )
        self.child_keys, self.child_history = _sorted_table(  # (C,), (C,)
            [self._key(h[:-1], h[-1]) for h in histories if h], [self.history_ids[h] for h in histories if h], torch.long
        )
        self.start = self.history_ids.get((BOS,), ROOT)  # history id of the sentence start

    def _set_words(self, words: list[str], order: int) -> None:
        self.order = order
        self.words = words
        self.word_ids = {w: i for i, w in enumerate(words)}
        self.stride = len(words) + 1
        self.oov_id = self.word_ids.get(UNK, len(words))

    @functools.cached_property
    def history_ids(self) -> dict[tuple[str, ...], int]:
        """History id of each history (word tuple); rebuilt from :attr:`histories` for cached tables."""
        return {tuple(self.words[i] for i in row if i >= 0): h for h, row in enumerate(self.histories.tolist())}

    def saved(self) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
        """The tables as CPU tensors and string metadata, for :meth:`from_saved`."""
        meta = {"words": json.dumps(self.words), "order": str(self.order), "start": str(self.start)}
        return {name: getattr(self, name).cpu().contiguous() for name in self.TENSORS}, meta

    @classmethod
    def from_saved(cls, tensors: dict[str, torch.Tensor], meta: dict[str, str]) -> NgramTables:
        """Tables from :meth:`saved`'s output.

        :raises KeyError, ValueError: for missing or malformed entries.
        """
        tables = cls.__new__(cls)
        tables._set_words(json.loads(meta["words"]), int(meta["order"]))
        for name in cls.TENSORS:
            setattr(tables, name, tensors[name])
        tables.start = int(meta["start"])
        return tables

    @staticmethod
    def _histories(arpa: ArpaModel) -> list[tuple[str, ...]]:
        """Every word sequence shorter than the order inside an n-gram, root first, sorted by length then words."""
        found: set[tuple[str, ...]] = {()}
        for table in arpa.ngrams:
            for ngram in table:
                for i in range(len(ngram)):
                    for j in range(i + 1, min(len(ngram), i + arpa.order - 1) + 1):
                        found.add(ngram[i:j])
        return sorted(found, key=lambda h: (len(h), h))

    @staticmethod
    def _entry(arpa: ArpaModel, ngram: tuple[str, ...]) -> tuple[float, float]:
        """(logprob, backoff) of an n-gram; (floor, 0) for a history the file does not list itself."""
        if not ngram:
            return FLOOR_LOGPROB, 0.0
        return arpa.ngrams[len(ngram) - 1].get(ngram, (FLOOR_LOGPROB, 0.0))

    def _key(self, history: tuple[str, ...], word: str) -> int:
        return self.history_ids[history] * self.stride + self.word_ids[word]

    def word_id(self, word: str) -> int:
        """The id of ``word``, or :attr:`oov_id` when the model lacks it."""
        return self.word_ids.get(word, self.oov_id)

    def to(self, device: torch.device) -> NgramTables:
        """Move every table to ``device`` (in place); returns self."""
        for name in self.TENSORS:
            setattr(self, name, getattr(self, name).to(device))
        return self

    @property
    def device(self) -> torch.device:
        return self.ngram_keys.device

    def logprob(self, history: torch.Tensor, word: torch.Tensor) -> torch.Tensor:
        """Back-off log-probabilities ``(M,)`` float64 of ``word`` ``(M,)`` after ``history`` ``(M,)``.

        ``p(w | h) = P(h w)`` if listed, else ``bow(h) + p(w | h minus its oldest word)``;
        a word without even a unigram gets :data:`FLOOR_LOGPROB`.
        """
        total = torch.zeros(history.shape, dtype=torch.float64, device=history.device)
        pending = torch.ones_like(history, dtype=torch.bool)
        for _ in range(self.order):  # a history has at most order - 1 words: order levels
            logprob, found = _lookup(self.ngram_keys, self.ngram_logprob, history * self.stride + word)
            total = torch.where(pending & found, total + logprob, total)
            pending = pending & ~found
            at_root = history == ROOT
            total = torch.where(pending, total + torch.where(at_root, FLOOR_LOGPROB, self.backoff[history]), total)
            pending = pending & ~at_root
            history = self.suffix[history]
        return total

    def next_history(self, history: torch.Tensor, word: torch.Tensor) -> torch.Tensor:
        """History ids ``(M,)``: the longest known suffix of ``history + word`` (both ``(M,)``)."""
        history = torch.where(self.length[history] >= self.order - 1, self.suffix[history], history)  # <= order - 2 words
        result = torch.full_like(history, ROOT)
        pending = torch.ones_like(history, dtype=torch.bool)
        for _ in range(max(self.order - 1, 1)):  # one level per history length, down to the root
            child, found = _lookup(self.child_keys, self.child_history, history * self.stride + word)
            result = torch.where(pending & found, child, result)
            pending = pending & ~found & (history != ROOT)
            history = self.suffix[history]
        return result


def load_tables(path: str | Path) -> NgramTables:
    """The compiled tables of the ARPA file at ``path``.

    Compiling a large model takes seconds (0.6M n-grams: about 9 s), so the tables
    are cached in ``PATH.tables.safetensors`` and read from there while the ARPA
    file's bytes hash to what they were compiled from (hashing is about 100x
    faster than compiling). A cache that is stale, unreadable or cannot be
    written is (re)compiled; never an error.

    :raises ArpaError: for a missing or malformed ARPA file.
    """
    path = Path(path)
    if path.exists() and not path.is_file():  # /dev/zero would hash for ever
        raise ArpaError(f"{path}: not a regular file; give an ARPA file (plain or .gz)")
    cache = path.with_name(path.name + TABLES_SUFFIX)
    try:
        mode, digest = path.stat().st_mode, _file_digest(path)
    except OSError:
        return NgramTables(read_arpa(path))  # read_arpa names the problem
    stamp = {"format": TABLES_FORMAT, "arpa_blake2b": digest}
    if cache.is_file():
        try:
            with safe_open(str(cache), framework="pt") as saved:
                meta = saved.metadata() or {}
                if all(meta.get(k) == v for k, v in stamp.items()):
                    return NgramTables.from_saved({k: saved.get_tensor(k) for k in saved.keys()}, meta)
            log.info("%s: compiled from another version of %s; recompiling", cache, path)
        except (OSError, SafetensorError, KeyError, ValueError) as exc:
            log.info("%s: unreadable (%s); recompiling", cache, exc)
    tables = NgramTables(read_arpa(path))
    tensors, meta = tables.saved()

    def write(tmp: Path) -> None:
        save_file(tensors, str(tmp), {**meta, **stamp})
        os.chmod(tmp, mode & 0o666)  # readable by whoever can read the ARPA file

    try:
        if _file_digest(path) != digest:  # rewritten while it was read: cache nothing
            raise OSError("the ARPA file changed while it was read")
        write_atomically(cache, write)
    except (OSError, SafetensorError) as exc:
        log.info("%s: tables not cached (%s)", cache, exc)
    return tables


def _file_digest(path: Path, chunk_bytes: int = 1 << 20) -> str:
    """BLAKE2b hex digest of a file's bytes (read in 1 MiB chunks)."""
    digest = hashlib.blake2b()
    with path.open("rb") as file:
        while chunk := file.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()
