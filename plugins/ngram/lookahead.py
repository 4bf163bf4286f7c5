"""Word-level look-ahead: a character trie over the LM's words and the probability mass below each node."""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from .arpa import BOS, EOS, UNK
from .tables import ROOT, NgramTables, _lookup, _sorted_table

if TYPE_CHECKING:
    from asr_s2s.tokenizer import CharTokenizer


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
