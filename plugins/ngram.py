"""Built-in scorer ``ngram``: a back-off n-gram language model read from an ARPA file.

The model is compiled into sorted ``int64`` key tables and looked up with
:func:`torch.searchsorted`, so scoring is vectorised over hypotheses and the
vocabulary: the only Python loops at search time run over n-gram orders.
kenlm is not used: it builds only from source here and scores one hypothesis
at a time.

Two granularities (``unit``):

``char``
    ARPA words are single characters; ``<space>`` stands for the space token
    and ``</s>`` for ``<eos>``. Every token is scored at every step.
``word``
    ARPA words are words spelled in the tokenizer's characters (case
    sensitive). A word is scored when the space or ``<eos>`` after it is
    appended; other characters score 0. Spelled words the LM lacks score as
    ``<unk>`` (or ``oov_logprob``).

    With ``lookahead`` (Hori et al. 2018, "End-to-end speech recognition with
    word-based RNN language models"), every character is scored instead: after
    history ``h``, a prefix ``p`` has the mass ``S(p | h)`` of all LM words
    spelled ``p...``, and appending ``c`` scores ``log S(pc | h) - log S(p | h)``;
    the space after a word ``w`` scores ``log p(w | h) - log S(w | h)``. A
    word's scores add up to ``log p(w | h)``, but a misspelling is scored at
    the character where it leaves the LM's words, while the beam can still
    mend it. That character (or any other token but space and ``<eos>``)
    scores ``p(<unk> | h)`` (or ``oov_logprob``) over ``S(p | h)``; the rest of
    that word scores 0. It is a penalty only if ``<unk>`` is less likely than
    the words ``p`` could still become: give ``oov_logprob`` for an LM whose
    ``<unk>`` holds much mass (IRSTLM gives it about 17 %). The masses are exact for the
    back-off model: words are numbered in sorted order, so the words under a
    prefix are one range of ids, and ``S`` is a few prefix-sum lookups per
    n-gram order (see :class:`WordLookahead`).

Shape letters: ``N`` hypotheses, ``V`` vocabulary size, ``M`` any number of
(history, word) queries. All log-probabilities here are natural logs.
"""

from __future__ import annotations

import functools
import gzip
import hashlib
import json
import logging
import math
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from asr_s2s.errors import ConfigError
from asr_s2s.files import write_atomically
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Scorer

if TYPE_CHECKING:
    from asr_s2s.model import ASRModel
    from asr_s2s.tokenizer import CharTokenizer

log = logging.getLogger(__name__)

LN_10 = math.log(10.0)  # natural log units per log10 unit
FLOOR_LOG10 = -99.0  # log10 probability of a word with no unigram and no <unk> (SRILM's "zero")
FLOOR_LOGPROB = FLOOR_LOG10 * LN_10  # the same floor in natural log units

BOS, EOS, UNK = "<s>", "</s>", "<unk>"
SPACE_WORD = "<space>"  # how a char-level ARPA spells the space token
UNITS = ("char", "word")
ROOT = 0  # history id of the empty history, and node id of the trie root
TABLES_SUFFIX = ".tables.safetensors"  # compiled tables, cached beside the ARPA file
TABLES_FORMAT = "2"  # bump when NgramTables' saved layout changes
TINY = 1e-300  # smallest probability mass taken to a log (a rounding-error zero)

_NGRAM_COUNT = re.compile(r"ngram\s+(\d+)\s*=\s*(\d+)")
_SECTION = re.compile(r"\\(\d+)-grams:")


class ArpaError(ConfigError):
    """An ARPA file is missing, unreadable or malformed; the message names the file and line."""


# -- reading ------------------------------------------------------------------------------------
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


# -- compiled tables ----------------------------------------------------------------------------
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


class SpellingTrie:
    """A character trie over the LM's words, as a sorted ``(node, token) -> child`` key table.

    Node :data:`ROOT` is the empty spelling; :attr:`off` is the absorbing
    node of spellings that no LM word starts with. ``word[node]`` is the LM
    word id a node spells, or the tables' ``oov_id`` when it spells none.
    """

    def __init__(self, tables: NgramTables, tokenizer: CharTokenizer) -> None:
        token_ids = {t: i for i, t in enumerate(tokenizer.tokens) if len(t) == 1 and t != " "}
        self.vocab_size = len(tokenizer.tokens)
        children: dict[tuple[int, int], int] = {}
        node_word = [tables.oov_id]
        first, end = [len(tables.words)], [0]  # per node: the lowest and one past the highest word id below it
        for word in tables.words:
            if word in (BOS, EOS, UNK) or not all(c in token_ids for c in word):
                continue  # unspellable with these tokens
            node = ROOT
            path = [ROOT]
            for c in word:
                key = (node, token_ids[c])
                if key not in children:
                    children[key] = len(node_word)
                    node_word.append(tables.oov_id)
                    first.append(len(tables.words))
                    end.append(0)
                node = children[key]
                path.append(node)
            node_word[node] = tables.word_ids[word]
            for node in path:
                first[node], end[node] = min(first[node], tables.word_ids[word]), max(end[node], tables.word_ids[word] + 1)
        self.off = len(node_word)
        self.word = torch.tensor([*node_word, tables.oov_id], dtype=torch.long)  # (nodes + 1,)
        # words are numbered in sorted order, so the words under a node are the ids [first, end)
        # (plus unspellable ones, which spellable masks); the off node has none
        self.first = torch.tensor([*(f if f < e else 0 for f, e in zip(first, end)), 0], dtype=torch.long)  # (nodes + 1,)
        self.end = torch.tensor([*(e if f < e else 0 for f, e in zip(first, end)), 0], dtype=torch.long)  # (nodes + 1,)
        self.spellable = torch.zeros(tables.stride, dtype=torch.bool)  # (words + 1,), by word id
        self.spellable[[i for i in node_word if i != tables.oov_id]] = True
        self.keys, self.child = _sorted_table([n * self.vocab_size + t for n, t in children], list(children.values()), torch.long)

    def to(self, device: torch.device) -> SpellingTrie:
        """Move every table to ``device`` (in place); returns self."""
        for name in ("word", "first", "end", "spellable", "keys", "child"):
            setattr(self, name, getattr(self, name).to(device))
        return self

    def step(self, node: torch.Tensor, token: torch.Tensor) -> torch.Tensor:
        """Child nodes ``(M,)`` after appending ``token`` ``(M,)`` to ``node`` ``(M,)``; :attr:`off` if none."""
        child, found = _lookup(self.keys, self.child, node * self.vocab_size + token)
        return torch.where(found, child, self.off)


class WordLookahead:
    """``S(node | h)``: the probability mass of the spellable LM words below a trie node, after a history.

    With ``p(w | h) = P(h w)`` for a listed n-gram and ``bow(h) p(w | h')`` otherwise
    (``h'``: ``h`` without its oldest word), a range ``R`` of word ids has the mass
    ``S(R | h) = bow(h) S(R | h') + sum over the n-grams (h, w) listed with w in R of
    D(h, w)``, where ``D(h, w) = P(h w) - bow(h) p(w | h')`` (``D(w) = P(w)`` for
    unigrams). Listed n-grams are sorted by ``history * stride + word``, so that sum is
    the difference of two prefix sums of ``D``: one pair of lookups per order.
    """

    def __init__(self, tables: NgramTables, trie: SpellingTrie) -> None:
        self.tables, self.trie = tables, trie
        keys = tables.ngram_keys
        history, word = keys // tables.stride, keys % tables.stride  # (G,), (G,)
        prob = tables.ngram_logprob.exp()
        lower = (tables.backoff[history] + tables.logprob(tables.suffix[history], word)).exp()
        gain = torch.where(history == ROOT, prob, prob - lower) * trie.spellable[word]
        self.cumulative = torch.cat([gain.new_zeros(1), gain.cumsum(0)])  # (G + 1,) float64

    def to(self, device: torch.device) -> WordLookahead:
        """Move the prefix sums to ``device`` (in place); returns self."""
        self.cumulative = self.cumulative.to(device)
        return self

    def mass(self, history: torch.Tensor, node: torch.Tensor) -> torch.Tensor:
        """``S(node | history)`` ``(M,)`` float64 for history ids and trie nodes ``(M,)``; 0 for the off node."""
        tables, keys = self.tables, self.tables.ngram_keys
        first, end = self.trie.first[node], self.trie.end[node]
        total = torch.zeros(history.shape, dtype=torch.float64, device=history.device)
        scale = torch.ones_like(total)
        pending = torch.ones_like(history, dtype=torch.bool)
        for _ in range(tables.order):  # one level per history length, down to the root
            base = history * tables.stride
            listed = self.cumulative[torch.searchsorted(keys, base + end)] - self.cumulative[torch.searchsorted(keys, base + first)]
            total = torch.where(pending, total + scale * listed, total)
            pending = pending & (history != ROOT)
            scale = scale * tables.backoff[history].exp()
            history = tables.suffix[history]
        return total


# -- the scorer ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class NgramState:
    """Per-hypothesis state: LM history ids ``(N,)`` and, at word level, trie nodes ``(N,)`` (else None)."""

    history: torch.Tensor
    node: torch.Tensor | None = None


def _check_options(unit: str, lookahead: bool, oov_logprob: float | None) -> None:
    """:raises ConfigError: unless ``unit`` is one of :data:`UNITS`, ``lookahead`` a bool (word level only)
    and ``oov_logprob`` None or a non-positive number."""
    if unit not in UNITS:
        raise ConfigError(f"ngram scorer: unit must be one of {', '.join(map(repr, UNITS))}, got {unit!r}")
    if not isinstance(lookahead, bool):
        raise ConfigError(f"ngram scorer: lookahead must be true or false, got {lookahead!r}")
    if lookahead and unit != "word":
        raise ConfigError("ngram scorer: lookahead needs unit 'word' (a char-level LM already scores every character)")
    if oov_logprob is not None and unit != "word":
        raise ConfigError("ngram scorer: oov_logprob needs unit 'word' (a char-level LM scores every character itself)")
    if oov_logprob is not None and (isinstance(oov_logprob, bool) or not isinstance(oov_logprob, (int, float)) or not oov_logprob <= 0):
        raise ConfigError(f"ngram scorer: oov_logprob must be a natural-log probability <= 0, got {oov_logprob!r}")


class NgramScorer(Scorer):
    """Back-off n-gram LM scores from an ARPA file, char or word level (see the module docstring)."""

    name = "ngram"

    def __init__(
        self,
        tables: NgramTables,
        tokenizer: CharTokenizer,
        unit: str = "char",
        lookahead: bool = False,
        oov_logprob: float | None = None,
    ) -> None:
        _check_options(unit, lookahead, oov_logprob)
        self.tables, self.unit = tables, unit
        self.oov_logprob = oov_logprob
        self.vocab_size = len(tokenizer.tokens)
        self.eos_id = tokenizer.eos_id
        self.eos_word = tables.word_id(EOS)
        self.lookahead: WordLookahead | None = None
        if unit == "char":
            self.trie = None
            self.token_words = torch.tensor([self._char_word(t, i, tokenizer) for i, t in enumerate(tokenizer.tokens)])  # (V,)
        else:
            if " " not in tokenizer.tokens:
                raise ConfigError("ngram scorer: unit 'word' needs a space token in the vocabulary")
            self.space_id = tokenizer.tokens.index(" ")
            self.trie = SpellingTrie(tables, tokenizer)
            if lookahead:
                self.lookahead = WordLookahead(tables, self.trie)

    def _char_word(self, token: str, token_id: int, tokenizer: CharTokenizer) -> int:
        """The LM word id of one token at char level."""
        if token_id == tokenizer.eos_id:
            return self.eos_word
        return self.tables.word_id(SPACE_WORD if token == " " else token)

    @classmethod
    def from_model(
        cls, model: ASRModel, *, path: str, unit: str = "char", lookahead: bool = False, oov_logprob: float | None = None
    ) -> NgramScorer:
        """Read the ARPA file at ``path``.

        :param unit: ``"char"`` or ``"word"`` (see the module docstring).
        :param lookahead: word level only: score every character by the mass of the LM words it can still spell.
        :param oov_logprob: word level only: natural-log probability of a word the LM lacks, instead of
            ``<unk>``'s (toolkits differ widely in the mass they give ``<unk>``).
        :raises ConfigError: for a bad option; :class:`ArpaError` for a bad file.
        """
        _check_options(unit, lookahead, oov_logprob)
        return cls(load_tables(path), model.tokenizer, unit, lookahead, oov_logprob)

    def _to(self, device: torch.device) -> None:
        """Move the tables to ``device`` if they are elsewhere."""
        if self.tables.device != device:
            self.tables.to(device)
            if self.trie is not None:
                self.trie.to(device)
            if self.lookahead is not None:
                self.lookahead.to(device)
        if self.unit == "char" and self.token_words.device != device:
            self.token_words = self.token_words.to(device)

    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> NgramState:
        """The sentence-start state for ``N`` rows. ``states``: ``(N, T', D)``; ``state_lengths``: ``(N,)``."""
        return self.init_beam_state(states, state_lengths, 1)

    def init_beam_state(self, states: torch.Tensor, state_lengths: torch.Tensor, beam: int) -> NgramState:
        """The sentence-start state for ``B * beam`` rows (``states`` ``(B, T', D)``)."""
        self._to(states.device)
        history = torch.full((states.shape[0] * beam,), self.tables.start, dtype=torch.long, device=states.device)
        return NgramState(history, torch.full_like(history, ROOT) if self.unit == "word" else None)

    def score(self, prefix: torch.Tensor, state: NgramState) -> tuple[torch.Tensor, NgramState]:
        """Scores ``(N, V)`` float32 of every next token; the state is returned as is for :meth:`select`.

        :param prefix: ``(N, L)`` tokens so far (unused: the state holds the history).
        """
        if self.unit == "char":
            scores = self._char_scores(state)
        else:
            scores = self._word_scores(state) if self.lookahead is None else self._lookahead_scores(state)
        return scores.float(), state

    def _char_scores(self, state: NgramState) -> torch.Tensor:
        """``(N, V)`` float64: log p(token | history) for every token."""
        n, v = state.history.shape[0], self.vocab_size
        history = state.history.repeat_interleave(v)  # (N * V,)
        words = self.token_words.repeat(n)  # (N * V,)
        return self.tables.logprob(history, words).view(n, v)

    def _word_scores(self, state: NgramState) -> torch.Tensor:
        """``(N, V)`` float64: 0 but at space (the finished word) and ``<eos>`` (that word and ``</s>``)."""
        history, node = state.history, state.node
        in_word = node != ROOT  # (N,)
        word = self.trie.word[node]  # (N,)
        word_logprob = self._word_logprob(history, word)
        after = self.tables.next_history(history, word)
        eos = torch.full_like(history, self.eos_word)
        end_after_word = word_logprob + self.tables.logprob(after, eos)
        scores = torch.zeros(history.shape[0], self.vocab_size, dtype=torch.float64, device=history.device)
        scores[:, self.space_id] = torch.where(in_word, word_logprob, 0.0)
        scores[:, self.eos_id] = torch.where(in_word, end_after_word, self.tables.logprob(history, eos))
        return scores

    def _word_logprob(self, history: torch.Tensor, word: torch.Tensor) -> torch.Tensor:
        """``(M,)`` float64 log p(word | history), with ``oov_logprob`` (if set) for words the LM lacks."""
        logprob = self.tables.logprob(history, word)
        if self.oov_logprob is None:
            return logprob
        return torch.where(word == self.tables.oov_id, self.oov_logprob, logprob)

    def _lookahead_scores(self, state: NgramState) -> torch.Tensor:
        """``(N, V)`` float64 look-ahead scores of every token (see the module docstring)."""
        history, node, trie = state.history, state.node, self.trie
        n, v = node.shape[0], self.vocab_size
        off = node == trie.off  # (N,): inside a word the LM lacks
        # log S(node | h); the root's mass counts as 1: its words and </s> share the whole distribution
        parent = torch.where(node == ROOT, 0.0, self.lookahead.mass(history, node).clamp_min(TINY).log())  # (N,)
        oov = self._word_logprob(history, torch.full_like(history, self.tables.oov_id))  # (N,)
        child = trie.step(node.repeat_interleave(v), torch.arange(v, device=node.device).repeat(n)).view(n, v)
        child_mass = self.lookahead.mass(history.repeat_interleave(v), child.flatten()).view(n, v)
        letter = torch.where(child == trie.off, oov[:, None], child_mass.clamp_min(TINY).log()) - parent[:, None]
        # a token that spells no LM word (<blank>, say) leaves the vocabulary like a wrong letter
        scores = torch.where(~off[:, None], letter, 0.0)  # (N, V)
        word = trie.word[node]
        # the space after a word, and <eos> after a word or at a word boundary
        finish = torch.where(off, 0.0, self._word_logprob(history, word) - parent)
        after = torch.where(node == ROOT, history, self.tables.next_history(history, word))
        scores[:, self.space_id] = torch.where(node == ROOT, 0.0, finish)
        eos = torch.full_like(history, self.eos_word)
        scores[:, self.eos_id] = torch.where(node == ROOT, 0.0, finish) + self.tables.logprob(after, eos)
        return scores

    def select(self, state: NgramState, index: torch.Tensor, tokens: torch.Tensor) -> NgramState:
        """The states after appending ``tokens`` ``(N,)`` to the rows ``index`` ``(N,)``."""
        history = state.history[index]
        if self.unit == "char":
            return NgramState(self.tables.next_history(history, self.token_words[tokens]))
        node = state.node[index]
        ends = (tokens == self.space_id) | (tokens == self.eos_id)
        advance = ends & (node != ROOT)
        history = torch.where(advance, self.tables.next_history(history, self.trie.word[node]), history)
        node = torch.where(ends, ROOT, self.trie.step(node, tokens))
        return NgramState(history, node)

    def compact(self, state: NgramState, rows: torch.Tensor) -> NgramState:
        return NgramState(state.history[rows], None if state.node is None else state.node[rows])


@hookimpl
def asr_s2s_register_scorers() -> list[type]:
    return [NgramScorer]
