"""The ``hotwords`` scorer: contextual biasing towards a list of words or phrases.

Phrases (normalised like transcripts, so ``"New York"`` becomes ``NEW YORK``)
go into a prefix trie over characters; a multi-word phrase includes its space
tokens. Each character that extends a partial match earns a bonus of 1 (the
search multiplies it by the scorer's weight, so the weight is the bonus per
character). The bonus is provisional: it is *kept* once the phrase is
complete and followed by a word boundary (space or ``<eos>``), and *taken back*
as soon as the hypothesis leaves the phrase half-way. A phrase only starts at
a word start (the start of the sentence or after a space), never inside a word.

With the phrase ``ALPHA`` and weight ``w``::

    "ALPHA "    A +1, L +1, P +1, H +1, A +1, " " 0    -> keeps 5w
    "ALPHAS"    A +1, L +1, P +1, H +1, A +1, S -5     -> nets 0
    "ALP<eos>"  A +1, L +1, P +1, <eos> -3             -> nets 0
    "MALPHA "   all 0: a match cannot start inside a word

The scores along a finished hypothesis therefore add up to the number of its
characters covered by complete phrases (whole words, each character counted
once), while partial matches pull the search towards a phrase on the way.

The score of appending token ``v`` to a hypothesis whose current partial
match ends at trie node ``n``:

1. ``v`` continues the match (``n`` has a child ``v``): ``+1``;
2. else, ``n`` completes a phrase and ``v`` is a word boundary: ``0``, the
   bonus is kept and matching starts over;
3. else: ``-pending(n)``, taking the provisional bonus back, plus ``+1`` if
   ``v`` starts a phrase afresh (only at a word start).

``pending(n) = depth(n) - kept(n)``, where ``kept(n)`` counts the characters of
the match that complete phrases inside it already made safe: with phrases
``ALPHA`` and ``ALPHA BETA``, the space after ``ALPHA`` continues towards
``ALPHA BETA`` (rule 1) but also completes ``ALPHA``, so ``"ALPHA GAMMA"``
keeps 5 and only the space's 1 is taken back, and ``"ALPHA BETA"`` earns 10.

Rule 3 in general falls back to the longest partial match that survives the
abandoned one, as Aho-Corasick failure links do (restricted to word starts):
with the phrase ``SEA SHELLS``, ``"SEA SEA SHELLS"`` abandons ``SEA S`` at the
second ``E`` but goes on from ``SE`` (-5 +2), and so still earns 10. A phrase
ending inside a longer partial match (``YORK`` within ``NEW YORK CITY``) counts
too. One over-count remains: two complete phrases that overlap by a word
without either containing the other (``A B`` and ``B C`` in ``"A B C"``) may
both be paid in full.

All of this is compiled once into dense tables over ``num_nodes + 1``
automaton states (the trie nodes, plus one state for "inside a word, no
match"; the root is "at a word start, no match"): ``next_state (S, V)`` and
``step_scores (S, V)``. A search step is one gather in
:meth:`~HotwordsScorer.score` and one in :meth:`~HotwordsScorer.select`; no
Python loop runs over hypotheses.

Params (``decode.scorer_params.hotwords``): ``phrases``, a list of strings,
and/or ``phrases_file``, a UTF-8 file of one phrase per line (blank lines and
``#`` comments ignored).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import torch

from asr_s2s.errors import ConfigError, TokenizerError
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Scorer
from asr_s2s.tokenizer import CharTokenizer, normalize_text

if TYPE_CHECKING:
    from asr_s2s.model import ASRModel

WHERE = "decode.scorer_params.hotwords"
ROOT = 0


class HotwordsTables(NamedTuple):
    """The phrase trie and the automaton compiled from it; ``M`` trie nodes, node 0 the root.

    Automaton state ``s < M`` is trie node ``s`` (the longest phrase prefix that
    ends the text and starts at a word start; the root when none does and the
    next token starts a word); state ``M`` ("inside a word") is no match with
    the next token inside a word.

    :ivar children: ``(M, V)`` long, each node's child by token, -1 for none.
    :ivar depth: ``(M,)`` long, characters from the root.
    :ivar terminal: ``(M,)`` bool, whether the node completes a phrase.
    :ivar kept: ``(M,)`` long, bonus already kept inside the node's path: its characters
        covered by complete phrases that a space in it follows. Abandoning the match
        takes back ``depth - kept``.
    :ivar next_state: ``(M + 1, V)`` long, the state after appending each token.
    :ivar step_scores: ``(M + 1, V)`` float32, the unweighted score of appending each token.
    """

    children: torch.Tensor
    depth: torch.Tensor
    terminal: torch.Tensor
    kept: torch.Tensor
    next_state: torch.Tensor
    step_scores: torch.Tensor

    def to(self, device: torch.device) -> HotwordsTables:
        return HotwordsTables(*(t.to(device) for t in self))


def build_tables(sequences: Iterable[Sequence[int]], vocab_size: int, space_id: int | None, eos_id: int) -> HotwordsTables:
    """Build the trie of token sequences (non-empty, ids below V) and compile the automaton, on the CPU.

    Python loops run over phrase characters and trie nodes at build time only;
    the transition table is compiled one trie depth at a time with tensor ops.
    """
    kids: list[dict[int, int]] = [{}]
    parent, token, depth, terminal = [ROOT], [-1], [0], [False]
    for seq in sequences:
        node = ROOT
        for t in seq:
            nxt = kids[node].get(t)
            if nxt is None:
                nxt = kids[node][t] = len(kids)
                kids.append({})
                parent.append(node)
                token.append(t)
                depth.append(depth[node] + 1)
                terminal.append(False)
            node = nxt
        terminal[node] = True
    m = len(kids)
    dead = m  # the "inside a word, no match" state
    children = torch.full((m, vocab_size), -1, dtype=torch.long)
    children[torch.tensor(parent[1:], dtype=torch.long), torch.tensor(token[1:], dtype=torch.long)] = torch.arange(1, m)
    depth_t = torch.tensor(depth)
    boundary = torch.zeros(vocab_size, dtype=torch.bool)
    boundary[eos_id] = True
    if space_id is not None:
        boundary[space_id] = True

    # Aho-Corasick restricted to word starts. fail(n): the state of n's path less
    # its first word(s); fail(child(p, v)) = next(fail(p), v), with fail(root) = dead,
    # and next(dead, v) = root for a boundary v, else dead.
    next_state = torch.empty((m + 1, vocab_size), dtype=torch.long)
    fail = torch.full((m + 1,), dead, dtype=torch.long)
    next_state[dead] = torch.where(boundary, ROOT, dead)
    next_state[ROOT] = torch.where(children[ROOT] >= 0, children[ROOT], next_state[dead])
    parent_t, token_t = torch.tensor(parent, dtype=torch.long), torch.tensor(token, dtype=torch.long)
    for d in range(1, max(depth) + 1):
        level = (depth_t == d).nonzero().squeeze(1)
        fail[level] = next_state[fail[parent_t[level]], token_t[level]]
        next_state[level] = torch.where(children[level] >= 0, children[level], next_state[fail[level]])

    # Which characters of each node's path complete phrases cover, as bit masks
    # counted from the path's end (so that a suffix's mask needs no shift):
    # ``ends`` by phrases ending the path, ``kept`` by phrases a space inside the path follows.
    fails = fail.tolist()
    ends, kept_mask = [0] * (m + 1), [0] * (m + 1)
    for n in sorted(range(1, m), key=depth.__getitem__):
        p = parent[n]
        ends[n] = ((1 << depth[n]) - 1 if terminal[n] else 0) | ends[fails[n]]
        kept_mask[n] = (kept_mask[p] | (ends[p] if token[n] == space_id else 0)) << 1
    kept = torch.tensor([k.bit_count() for k in kept_mask])
    commit = torch.tensor([(k | e).bit_count() for k, e in zip(kept_mask, ends)]) - kept  # kept at a boundary
    pending = torch.cat([depth_t, depth_t.new_zeros(1)]) - kept  # taken back on abandoning; 0 at root and dead
    step_scores = pending[next_state] - pending.unsqueeze(1) + boundary * commit.unsqueeze(1)
    return HotwordsTables(children, depth_t, torch.tensor(terminal), kept[:m], next_state, step_scores.float())


def read_phrases_file(path: str | Path) -> list[tuple[str, str]]:
    """Phrases of a file, one per line, each with ``"file:line"`` for errors; ``#`` starts a comment."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"{WHERE}.phrases_file: {str(path)!r} does not exist or is not a file")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{WHERE}.phrases_file: cannot read {str(path)!r}: {exc}") from None
    out = []
    for number, line in enumerate(lines, 1):
        text = line.split("#", 1)[0].strip()
        if text:
            out.append((text, f"{path}:{number}"))
    return out


def encode_phrases(tokenizer: CharTokenizer, phrases: Iterable[tuple[str, str]]) -> list[tuple[str, list[int]]]:
    """Normalise and encode ``(phrase, where)`` pairs into ``(text, ids)``.

    :raises ConfigError: naming ``where`` and the phrase, for a non-string, an
        empty phrase, or one with characters the vocabulary lacks.
    """
    out = []
    for raw, where in phrases:
        if not isinstance(raw, str):
            raise ConfigError(f"{where}: phrases must be strings, got {raw!r} ({type(raw).__name__})")
        text = normalize_text(raw)
        if not text:
            raise ConfigError(f"{where}: phrase {raw!r} is empty after normalisation")
        try:
            ids = tokenizer.encode(text, where=f"{where}: phrase {raw!r}")
        except TokenizerError as exc:
            raise ConfigError(str(exc)) from None
        out.append((text, ids))
    return out


class HotwordsState(NamedTuple):
    """Search state: ``node`` ``(N,)`` long, each hypothesis's automaton state.

    ``node < num_nodes`` is a trie node (the root when nothing matches at a word
    start); ``node == num_nodes`` means no match, inside a word.
    """

    node: torch.Tensor


class HotwordsScorer(Scorer):
    """Bonus per character of a partial phrase match, kept when the phrase completes, else taken back.

    Scores are unweighted (+1 per matched character); the search's weight for
    ``hotwords`` is the bonus per character. See the module docstring.
    """

    name = "hotwords"
    path_params = ("phrases_file",)

    def __init__(self, sequences: Iterable[Sequence[int]], vocab_size: int, space_id: int | None, eos_id: int,
                 phrases: Sequence[str] = ()) -> None:
        """:param sequences: token ids of each phrase (non-empty), space tokens included.
        :param vocab_size: V. :param space_id: the space token (None if the vocabulary has none).
        :param eos_id: the ``<eos>`` token. :param phrases: the phrases' texts, for display only.
        """
        self.phrases = tuple(phrases)
        self.vocab_size = vocab_size
        self.tables = build_tables(sequences, vocab_size, space_id, eos_id)
        self._on_device = {self.tables.children.device: self.tables}

    @classmethod
    def from_model(cls, model: ASRModel, *, phrases: Sequence[str] = (), phrases_file: str | None = None) -> HotwordsScorer:
        """Build the scorer for ``model``'s tokenizer.

        :param phrases: words or phrases to boost, normalised like transcripts.
        :param phrases_file: a file of more phrases, one per line.
        :raises ConfigError: naming a phrase that is empty or holds characters
            the vocabulary lacks, or a file that is missing.
        """
        if isinstance(phrases, (str, bytes)) or not isinstance(phrases, Sequence):
            raise ConfigError(f"{WHERE}.phrases must be a list of strings, got {phrases!r}")
        pairs = [(p, f"{WHERE}.phrases[{i}]") for i, p in enumerate(phrases)]
        if phrases_file is not None:
            pairs += read_phrases_file(phrases_file)
        tok = model.tokenizer
        encoded = encode_phrases(tok, pairs)
        try:
            space_id: int | None = tok.encode(" ")[0]
        except TokenizerError:
            space_id = None
        return cls([ids for _, ids in encoded], model.vocab_size, space_id, tok.eos_id, [t for t, _ in encoded])

    @property
    def num_nodes(self) -> int:
        """M, trie nodes including the root."""
        return self.tables.children.shape[0]

    def _tables(self, device: torch.device) -> HotwordsTables:
        tables = self._on_device.get(device)
        if tables is None:
            tables = self._on_device[device] = self.tables.to(device)
        return tables

    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> HotwordsState:
        """The root state (no match, at a word start) for ``N`` hypotheses.

        :param states: ``(N, T', D)`` encoder states; only ``N`` and the device are used.
        :param state_lengths: ``(N,)`` valid encoder frames (unused).
        :returns: node ``(N,)`` zeros on ``states.device``.
        """
        return self.init_beam_state(states, state_lengths, 1)

    def init_beam_state(self, states: torch.Tensor, state_lengths: torch.Tensor, beam: int) -> HotwordsState:
        """The root state for ``B * beam`` hypotheses (``states`` ``(B, T', D)``)."""
        self._tables(states.device)
        return HotwordsState(torch.full((states.shape[0] * beam,), ROOT, dtype=torch.long, device=states.device))

    def score(self, prefix: torch.Tensor, state: HotwordsState) -> tuple[torch.Tensor, HotwordsState]:
        """Score every next token of every hypothesis.

        :param prefix: ``(N, L)`` tokens so far (unused: ``state`` holds the match).
        :param state: node ``(N,)``.
        :returns: float32 scores ``(N, V)`` and ``state`` unchanged; :meth:`select` advances it.
        """
        return self._tables(state.node.device).step_scores[state.node], state

    def select(self, state: HotwordsState, index: torch.Tensor, tokens: torch.Tensor) -> HotwordsState:
        """Gather the survivors' rows and advance each by its appended token.

        :param index: ``(N,)`` the source row of each survivor.
        :param tokens: ``(N,)`` the token each survivor appended.
        :returns: node ``(N,)`` after ``tokens``.
        """
        return HotwordsState(self._tables(state.node.device).next_state[state.node[index], tokens])

    def compact(self, state: HotwordsState, rows: torch.Tensor) -> HotwordsState:
        return HotwordsState(state.node[rows])

    def __repr__(self) -> str:
        return f"{type(self).__name__}({len(self.phrases)} phrases, {self.num_nodes} trie nodes)"


@hookimpl
def asr_s2s_register_scorers() -> list[type]:
    return [HotwordsScorer]
