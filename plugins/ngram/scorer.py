"""The ``ngram`` scorer: char- or word-level back-off n-gram scores over the beam (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from asr_s2s.errors import ConfigError
from asr_s2s.interfaces import Scorer

from .arpa import EOS
from .lookahead import SpellingTrie, WordLookahead
from .tables import ROOT, NgramTables, load_tables

if TYPE_CHECKING:
    from asr_s2s.model import ASRModel
    from asr_s2s.tokenizer import CharTokenizer

SPACE_WORD = "<space>"  # how a char-level ARPA spells the space token
UNITS = ("char", "word")
TINY = 1e-300  # smallest probability mass taken to a log (a rounding-error zero)


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
    """Back-off n-gram LM scores from an ARPA file, char or word level (see the package docstring)."""

    name = "ngram"
    path_params = ("path",)

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

        :param unit: ``"char"`` or ``"word"`` (see the package docstring).
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
        """``(N, V)`` float64 look-ahead scores of every token (see the package docstring)."""
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
