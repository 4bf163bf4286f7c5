"""The interfaces plugins implement. The core knows only these, never a concrete class.

Shape letters: ``B`` utterances, ``T`` input frames, ``F`` feature bins,
``T'`` encoder frames, ``D`` encoder state size, ``U`` output tokens,
``V`` vocabulary size, ``N`` hypotheses in search, ``L`` prefix length,
``K`` pre-beam candidates per hypothesis, ``S`` audio samples at 16 kHz.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from asr_s2s.manifest import Utterance
    from asr_s2s.model import ASRModel


class Encoder(nn.Module, ABC):
    """Maps features to a shorter sequence of states.

    Constructed as ``cls(input_dim=F, **params)``.
    """

    name: ClassVar[str]

    @property
    @abstractmethod
    def output_dim(self) -> int:
        """D, the size of each output state."""

    @property
    @abstractmethod
    def time_reduction(self) -> int:
        """How many input frames make one output frame (e.g. 4)."""

    def output_lengths(self, lengths: torch.Tensor) -> torch.Tensor:
        """Output lengths ``(B,)`` for input lengths ``(B,)``: ``ceil(T / time_reduction)``."""
        r = self.time_reduction
        return torch.div(lengths + r - 1, r, rounding_mode="floor")

    @abstractmethod
    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode a padded batch.

        :param feats: ``(B, T, F)`` normalised features; frames past ``lengths`` are padding.
        :param lengths: ``(B,)`` int64 valid frames per utterance.
        :returns: states ``(B, T', D)`` (zero past the output lengths) and lengths ``(B,)``.
            Real frames never depend on padding.
        """


class Decoder(nn.Module, ABC):
    """Emits tokens one step at a time, attending over encoder states.

    Constructed as ``cls(encoder_dim=D, vocab_size=V, sos_id=..., **params)``.
    The search state is a ``dict[str, torch.Tensor]`` whose per-hypothesis
    tensors have ``N`` rows; a decoder may add an ``"attention"`` entry
    ``(N, T')`` holding the latest attention weights.
    """

    name: ClassVar[str]

    @abstractmethod
    def forward(
        self,
        states: torch.Tensor,
        state_lengths: torch.Tensor,
        tokens_in: torch.Tensor,
        token_lengths: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Teacher-forced decoding of a padded batch.

        :param states: ``(B, T', D)`` encoder states.
        :param state_lengths: ``(B,)`` valid encoder frames.
        :param tokens_in: ``(B, U)`` input tokens, starting with ``<sos>``.
        :param token_lengths: ``(B,)`` valid tokens per row, or None when all are valid.
        :returns: logits ``(B, U, V)`` and attention weights ``(B, U, T')``.
        """

    @abstractmethod
    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> dict[str, torch.Tensor]:
        """Start decoding ``N`` hypotheses.

        :param states: ``(N, T', D)`` encoder states, one row per hypothesis.
        :param state_lengths: ``(N,)`` valid encoder frames.
        :returns: the initial search state.
        """

    def init_beam_state(self, states: torch.Tensor, state_lengths: torch.Tensor, beam: int) -> dict[str, torch.Tensor]:
        """Start decoding ``beam`` hypotheses per utterance: ``N = B * beam`` rows, utterance-major.

        :param states: ``(B, T', D)`` encoder states, one row per utterance.
        :param state_lengths: ``(B,)`` valid encoder frames.
        :returns: a state for ``N`` hypotheses. The default repeats each utterance's
            states ``beam`` times for :meth:`init_state`; a decoder may override it to
            keep per-utterance memory once (search reads it ``beam`` times per step).
        """
        return self.init_state(states.repeat_interleave(beam, 0), state_lengths.repeat_interleave(beam))

    @abstractmethod
    def step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Advance every hypothesis by one token.

        :param tokens: ``(N,)`` the last token of each hypothesis (``<sos>`` at the start).
        :param state: the state after the previous token.
        :returns: log-probabilities ``(N, V)`` of the next token, and the new state.
        """

    @abstractmethod
    def select(self, state: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Reorder hypotheses after pruning.

        :param index: ``(N,)`` for each surviving hypothesis, the row it came from.
            Search only ever maps a row to a row of the same utterance, so
            per-utterance memory may be kept as it is.
        :returns: the state with per-hypothesis rows gathered.
        """

    def compact(self, state: dict[str, torch.Tensor], rows: torch.Tensor) -> dict[str, torch.Tensor]:
        """Keep only the hypotheses ``rows`` ``(M,)``, per-utterance memory included.

        Search calls this when utterances finish, so that their rows are no
        longer computed. ``rows`` (increasing) holds whole utterances' blocks of
        hypotheses. Unlike :meth:`select`, it spans utterances: per-utterance
        memory must be gathered too. Optional: a decoder without it is still
        searched, just without compaction.
        """
        raise NotImplementedError

    def init_from_language_model(self, lm: LanguageModel) -> None:
        """Copy a trained language model's weights into this decoder's matching parts.

        The decoder then starts training already able to spell: it has read the
        LM's text, which may be far more than the transcripts (Ramachandran et
        al. 2017). Parts that read the encoder keep their initialisation.
        Optional: ``asr-s2s train --init-decoder-from-lm`` refuses a decoder
        without it.

        :raises ConfigError: naming each size that differs between the two.
        """
        raise NotImplementedError


class LanguageModel(nn.Module, ABC):
    """A token-level language model, for shallow fusion in beam search.

    Constructed as ``cls(vocab_size=V, **params)``. Sentences are modelled as
    ``<sos> tokens <eos>``; the search state is a ``dict[str, torch.Tensor]``.
    """

    name: ClassVar[str]

    @abstractmethod
    def forward(self, tokens_in: torch.Tensor) -> torch.Tensor:
        """Next-token logits for every position of a right-padded batch.

        :param tokens_in: ``(B, U)`` tokens starting with ``<sos>``; padding at the end
            never changes the logits of earlier positions.
        :returns: logits ``(B, U, V)``.
        """

    @abstractmethod
    def init_state(self, n: int, device: torch.device) -> dict[str, torch.Tensor]:
        """The state before ``<sos>`` for ``n`` hypotheses: tensors of ``N = n`` rows, ``(N, ...)``, on ``device``."""

    @abstractmethod
    def step(self, tokens: torch.Tensor, state: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Read one token per hypothesis.

        :param tokens: ``(N,)`` the last token of each hypothesis.
        :returns: log-probabilities ``(N, V)`` of the next token, and the new state.
        """

    @abstractmethod
    def select(self, state: dict[str, torch.Tensor], index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Gather the state rows ``index`` ``(N,)``."""


class Scorer(ABC):
    """Adds a log-probability to every beam-search extension (ESPnet's design, batched).

    A *full* scorer (``partial = False``) scores the whole vocabulary with
    :meth:`score`; a *partial* one scores only pre-beam candidates with
    :meth:`score_partial`. Search weighs each scorer by its ``name``.

    A full scorer that reads another scorer's state of the same step (the
    coverage penalty reads the decoder's attention) names it in
    ``depends_on``; search then runs it after those and calls
    ``score(prefix, state, inputs)`` with ``inputs`` mapping each name to that
    scorer's new state.

    The full scorers' weighted sum picks the candidates that partial scorers
    see (the pre-beam). A full scorer whose score is the same for every next
    token (a length bonus) sets ``ranks_tokens = False``: it reorders
    hypotheses but cannot pick tokens, so when no active full scorer ranks
    tokens, partial scorers see the whole vocabulary.

    Search checks what a scorer returns: scores of the wrong shape or a
    non-float dtype, a NaN or ``+inf``, or an exception raised in any method
    stop the search with a :class:`~asr_s2s.errors.ScorerError` naming the
    scorer and its plugin. ``-inf`` is allowed: it rules a token out.

    ``path_params`` names the params that are file paths. A model package is
    untrusted input: in its ``decode`` section such a param must name a regular
    file inside the package folder (it is resolved there); paths the user gives
    (command line, Python, their own config) are taken as given.
    """

    name: ClassVar[str]
    partial: ClassVar[bool] = False
    depends_on: ClassVar[tuple[str, ...]] = ()
    ranks_tokens: ClassVar[bool] = True
    path_params: ClassVar[tuple[str, ...]] = ()

    @classmethod
    def from_model(cls, model: ASRModel) -> Scorer:
        """Build the scorer for ``model``. Subclasses add keyword-only params."""
        return cls()

    @abstractmethod
    def init_state(self, states: torch.Tensor, state_lengths: torch.Tensor) -> Any:
        """Initial state for ``N`` hypotheses.

        :param states: ``(N, T', D)`` encoder states, one row per hypothesis.
        :param state_lengths: ``(N,)`` valid encoder frames.
        """

    def init_beam_state(self, states: torch.Tensor, state_lengths: torch.Tensor, beam: int) -> Any:
        """Initial state for ``beam`` hypotheses per utterance, ``N = B * beam`` rows, utterance-major.

        Search calls this one. The default repeats each utterance's rows ``beam``
        times for :meth:`init_state`; override it to keep per-utterance data once.

        :param states: ``(B, T', D)`` encoder states, one row per utterance.
        :param state_lengths: ``(B,)`` valid encoder frames.
        """
        return self.init_state(states.repeat_interleave(beam, 0), state_lengths.repeat_interleave(beam))

    def score(self, prefix: torch.Tensor, state: Any, inputs: Mapping[str, Any] | None = None) -> tuple[torch.Tensor, Any]:
        """Full scorer: log-probabilities of every next token.

        :param prefix: ``(N, L)`` tokens so far, starting with ``<sos>``.
        :param inputs: only for scorers with ``depends_on``: the new state of each named scorer.
        :returns: scores ``(N, V)`` and the state for the ``N`` extended prefixes.
        """
        raise NotImplementedError(f"{type(self).__name__} is a partial scorer; use score_partial")

    def score_partial(self, prefix: torch.Tensor, candidates: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """Partial scorer: log-probabilities of ``K`` candidate tokens per hypothesis.

        :param prefix: ``(N, L)`` tokens so far.
        :param candidates: ``(N, K)`` token ids to score.
        :returns: scores ``(N, K)`` and a state that :meth:`select` understands.
        """
        raise NotImplementedError(f"{type(self).__name__} is a full scorer; use score")

    @abstractmethod
    def select(self, state: Any, index: torch.Tensor, tokens: torch.Tensor) -> Any:
        """Keep the states of the surviving hypotheses.

        :param index: ``(N,)`` the source row of each surviving hypothesis.
        :param tokens: ``(N,)`` the token each survivor appended.
        """

    def final_score(self, state: Any) -> torch.Tensor | None:
        """Optional extra score ``(N,)`` when a hypothesis ends with ``<eos>``; None for none."""
        return None

    def compact(self, state: Any, rows: torch.Tensor) -> Any:
        """Optional: keep only the hypotheses ``rows`` ``(M,)`` of the state after :meth:`select`.

        Search calls this when utterances finish, so that their rows stop
        costing work. ``rows`` (increasing, whole utterances' hypotheses) spans
        utterances, so unlike in :meth:`select` per-utterance data (encoder
        memory, frame scores) must be gathered too. A scorer that does not
        override it is still searched; search then keeps stepping finished
        utterances' rows (a slower search with the same result).
        """
        raise NotImplementedError

    @property
    def can_compact(self) -> bool:
        """Whether :meth:`compact` is implemented (search compacts only when every active scorer can)."""
        return type(self).compact is not Scorer.compact


@dataclass(frozen=True)
class Signal:
    """One training utterance on its way to the features: what audio and filterbank augmentations see."""

    waveform: np.ndarray  # (S,) float32 samples at 16 kHz, nominally in [-1, 1]
    vtln_warp: float = 1.0  # frequency warp of the mel filterbank (VTLP); 1 leaves it as it is
    notes: tuple[str, ...] = ()  # what each augmentation did, e.g. "noise pink 10.0 dB"
    utterance: Utterance | None = None  # the manifest entry (e.g. so that babble leaves out its speaker)

    def with_audio(self, waveform: np.ndarray, note: str) -> Signal:
        """This signal with new samples ``(S',)`` (made float32) and one more note."""
        return replace(self, waveform=np.ascontiguousarray(waveform, dtype=np.float32), notes=(*self.notes, note))

    def with_warp(self, vtln_warp: float, note: str) -> Signal:
        """This signal with a new filterbank warp and one more note."""
        return replace(self, vtln_warp=float(vtln_warp), notes=(*self.notes, note))


@dataclass(frozen=True)
class AugmentationContext:
    """What an augmentation may draw on besides its params."""

    utterances: Sequence[Utterance] = ()  # the utterances being augmented (e.g. babble sources), manifest order
    sample_rate_hz: int = 16_000
    seed: int = 0  # the run's seed: fixed resources (e.g. a bank of simulated rooms) are built from it
    extra: Mapping[str, Any] = field(default_factory=dict)


class Augmentation(ABC):
    """Changes one training utterance, in the data workers; never at validation or decoding.

    Constructed as ``cls(**params)`` from a ``train.augment`` entry
    ``{name: ..., prob: ..., **params}``, or ``cls(context=..., **params)``
    when the constructor takes a ``context`` (an :class:`AugmentationContext`:
    the utterances being augmented, the run's seed). The chain applies it with
    probability ``prob`` and gives it a generator seeded from the run's seed,
    the epoch, the utterance and the entry's position, so every draw repeats.
    ``stage`` says what it changes and so which method the chain calls:

    * ``"audio"``: :meth:`apply` returns new samples (noise, reverberation, codecs, speed, framing);
    * ``"filterbank"``: :meth:`apply` changes only ``Signal.vtln_warp`` (VTLP);
    * ``"features"``: :meth:`apply_features` masks or warps the log-mel features (SpecAugment).

    The chain runs the audio stages, then the filterbank stages, then computes
    the features, then runs the feature stages, each group in config order.
    An augmentation that raises, or returns samples that are not finite, is
    reported and skipped for that utterance; it never drops the utterance.
    """

    name: ClassVar[str]
    stage: ClassVar[Literal["audio", "filterbank", "features"]] = "audio"

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """Audio or filterbank stage: augment one utterance.

        :param signal: ``waveform`` ``(S,)`` float32 at 16 kHz, the filterbank warp, and earlier notes.
        :param rng: this utterance's generator for this entry; every random draw comes from it.
        :returns: the new signal ``(S',)``, usually with a note of what was drawn (``Signal.with_audio``).
        """
        raise NotImplementedError(f"{type(self).__name__} is a '{self.stage}' augmentation; the chain calls apply_features")

    def apply_features(self, feats: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """Feature stage: augment one utterance's raw (not yet normalised) log-mel features.

        :param feats: ``(T, F)`` float32 features, 100 frames per second; never change them in place
            (they may be the feature cache's copy).
        :param rng: this utterance's generator for this entry.
        :returns: ``(T', F)`` features.
        """
        raise NotImplementedError(f"{type(self).__name__} is an '{self.stage}' augmentation; the chain calls apply")
