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

Modules: :mod:`.arpa` reads the file, :mod:`.tables` compiles and caches the
lookup tables, :mod:`.lookahead` holds the spelling trie and word masses, and
:mod:`.scorer` the scorer itself; the names below are re-exported from here.
"""

from __future__ import annotations

from asr_s2s.hookspecs import hookimpl

from .arpa import BOS, EOS, FLOOR_LOG10, FLOOR_LOGPROB, LN_10, UNK, ArpaError, ArpaModel, read_arpa
from .lookahead import SpellingTrie, WordLookahead
from .scorer import SPACE_WORD, TINY, UNITS, NgramScorer, NgramState
from .tables import ROOT, TABLES_FORMAT, TABLES_SUFFIX, NgramTables, load_tables

__all__ = [
    "BOS", "EOS", "FLOOR_LOG10", "FLOOR_LOGPROB", "LN_10", "ROOT", "SPACE_WORD", "TABLES_FORMAT", "TABLES_SUFFIX",
    "TINY", "UNITS", "UNK", "ArpaError", "ArpaModel", "NgramScorer", "NgramState", "NgramTables", "SpellingTrie",
    "WordLookahead", "load_tables", "read_arpa",
]


@hookimpl
def asr_s2s_register_scorers() -> list[type]:
    return [NgramScorer]
