"""What a transcription is: its options (:class:`TranscribeOptions`), its input (:class:`AudioInput`)
and its results (:class:`Transcription` of :class:`Segment` and :class:`Word`; :class:`FileResult` per input
of :meth:`~asr_s2s.transcriber.Transcriber.transcribe_many`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from asr_s2s.config import DecodeConfig, check_precision, end_margin_or_none
from asr_s2s.errors import AsrS2SError, ConfigError, did_you_mean
from asr_s2s.search import SearchOptions
from asr_s2s.vad import MAX_SEGMENT_S, MIN_PAUSE_S, PAD_S, VadOptions


# -- results ------------------------------------------------------------------------
@dataclass(frozen=True)
class Word:
    """A word and its time in seconds from the start of the audio, from CTC forced alignment.

    Named as in the JSON output (and Whisper's): ``word``, ``start``, ``end``, ``probability``.
    """

    word: str
    start: float
    end: float
    probability: float  # mean CTC probability of its aligned frames, in [0, 1]


@dataclass(frozen=True)
class Segment:
    """A stretch of audio between pauses, decoded as one utterance; times in seconds."""

    id: int
    start: float
    end: float
    text: str
    score: float  # the search's total log score of the hypothesis
    scores: Mapping[str, float] = field(default_factory=dict)  # each scorer's unweighted share
    words: tuple[Word, ...] = ()  # empty without word timestamps
    attention: np.ndarray | None = field(default=None, repr=False, compare=False)  # (U + 1, T') with attention=True

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id, "start": round(self.start, 3), "end": round(self.end, 3), "text": self.text,
            "score": self.score, "scores": dict(self.scores),
            "words": [{"word": w.word, "start": round(w.start, 3), "end": round(w.end, 3), "probability": round(w.probability, 4)}
                      for w in self.words],
        }


@dataclass(frozen=True)
class TranscribeOptions:
    """Everything that decides a transcription. :func:`load_model` fills the search fields from the package.

    Search (see ``DecodeConfig`` and the scorer table in the README):
    ``scorers`` maps every scorer to its weight (0 or absent: off) and
    ``scorer_params`` holds their params, e.g. ``{"ngram": {"path": "lm.arpa", "unit": "word"}}``,
    ``{"coverage": {"threshold": 0.5}}``, ``{"hotwords": {"phrases_file": "names.txt"}}``;
    ``lm`` and ``hotwords`` are shortcuts for ``scorer_params["lm"]["path"]`` and
    ``scorer_params["hotwords"]["phrases"]``. ``end_margin`` None (or ``math.inf``) turns end detection off.
    ``precision`` "bf16" runs the encoder under bf16 autocast (see ``DecodeConfig.precision``).

    Long audio: segments are at most ``max_segment_s`` seconds; pauses of
    ``min_pause_s`` separate them. ``word_timestamps``: None for "when the model
    has a CTC head", True to require them, False for none. ``attention`` keeps
    each segment's attention weights (for plots).
    """

    # the search fields take their defaults from DecodeConfig, their one home
    beam_size: int = DecodeConfig.beam_size
    scorers: Mapping[str, float] = field(default_factory=lambda: dict(DecodeConfig().scorers))
    scorer_params: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    lm: str | None = None
    hotwords: tuple[str, ...] = ()
    max_length_ratio: float = DecodeConfig.max_length_ratio
    min_length_ratio: float = DecodeConfig.min_length_ratio
    length_normalize: bool = DecodeConfig.length_normalize
    end_margin: float | None = DecodeConfig.end_margin
    pre_beam_ratio: float = DecodeConfig.pre_beam_ratio
    eos_threshold: float | None = DecodeConfig.eos_threshold
    batch_seconds: float = DecodeConfig.batch_seconds
    precision: str = DecodeConfig.precision
    max_segment_s: float = MAX_SEGMENT_S
    min_pause_s: float = MIN_PAUSE_S
    word_timestamps: bool | None = None
    attention: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "scorers", {str(k): float(v) for k, v in self.scorers.items()})
        object.__setattr__(self, "scorer_params", {str(k): dict(v) for k, v in self.scorer_params.items()})
        hotwords = (self.hotwords,) if isinstance(self.hotwords, str) else tuple(self.hotwords)  # one phrase, not letters
        object.__setattr__(self, "hotwords", hotwords)
        object.__setattr__(self, "end_margin", end_margin_or_none(self.end_margin))
        if not self.batch_seconds > 0:
            raise ConfigError(f"batch_seconds must be positive, got {self.batch_seconds}")
        self.search_options()
        check_precision(self.precision, "precision")
        self.vad_options()
        for name, flag in (("lm", self.lm), ("hotwords", self.hotwords)):
            if flag and name not in self.scorers:  # an explicit weight of 0 turns the scorer off, as in evaluate
                raise ConfigError(f"{name!r} is set but the {name!r} scorer has no weight: give scorers={{{name!r}: WEIGHT}}")

    @classmethod
    def from_decode_config(cls, decode: DecodeConfig) -> TranscribeOptions:
        """The options of a package's ``decode`` section."""
        return cls(
            beam_size=decode.beam_size, scorers=decode.scorers, scorer_params=decode.scorer_params,
            max_length_ratio=decode.max_length_ratio, min_length_ratio=decode.min_length_ratio,
            length_normalize=decode.length_normalize,
            end_margin=decode.end_margin,
            pre_beam_ratio=decode.pre_beam_ratio, eos_threshold=decode.eos_threshold,
            batch_seconds=decode.batch_seconds, precision=decode.precision,
        )

    def decode_config(self) -> DecodeConfig:
        """The search part, as the recogniser takes it."""
        params = {name: dict(p) for name, p in self.scorer_params.items()}
        if self.lm:
            params.setdefault("lm", {})["path"] = self.lm
        if self.hotwords:
            params.setdefault("hotwords", {})["phrases"] = list(self.hotwords)
        return DecodeConfig(
            beam_size=self.beam_size, scorers=dict(self.scorers), scorer_params=params,
            max_length_ratio=self.max_length_ratio, min_length_ratio=self.min_length_ratio,
            length_normalize=self.length_normalize, nbest=1,
            end_margin=self.end_margin,
            pre_beam_ratio=self.pre_beam_ratio, eos_threshold=self.eos_threshold,
            batch_seconds=self.batch_seconds, precision=self.precision,
        )

    def search_options(self) -> SearchOptions:
        """Checks the search fields (raises ConfigError)."""
        return SearchOptions.from_decode(self.decode_config())

    def vad_options(self) -> VadOptions:
        return VadOptions(max_segment_s=self.max_segment_s, min_pause_s=self.min_pause_s,
                          pad_s=min(PAD_S, self.min_pause_s / 2))

    def with_overrides(self, **changes: Any) -> TranscribeOptions:
        """These options with each given field that is not None replaced.

        ``scorers`` and ``scorer_params`` are merged into this object's (a weight of 0
        turns a scorer off); ``hotwords`` may be one phrase or several.

        :raises ConfigError: for an unknown field (naming the closest one) or a bad value.
        """
        fields = [f.name for f in dataclasses.fields(self)]
        for name in changes:
            if name not in fields:
                raise ConfigError(f"unknown transcription option {name!r}.{did_you_mean(name, fields)} "
                                  f"Options: {', '.join(fields)}")
        changes = {name: value for name, value in changes.items() if value is not None}
        if "scorers" in changes:
            changes["scorers"] = {**self.scorers, **changes["scorers"]}
        if "scorer_params" in changes:
            merged = {name: dict(p) for name, p in self.scorer_params.items()}
            for name, extra in changes["scorer_params"].items():
                merged.setdefault(name, {}).update(extra)
            changes["scorer_params"] = merged
        return dataclasses.replace(self, **changes) if changes else self

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        out["hotwords"] = list(self.hotwords)
        return out


@dataclass(frozen=True)
class Transcription:
    """The result for one recording."""

    source: str  # the path, or a name given for an array or bytes
    text: str  # the segments' texts joined by spaces
    segments: tuple[Segment, ...]
    duration: float  # seconds of audio
    model_id: str
    options: TranscribeOptions

    @property
    def words(self) -> tuple[Word, ...]:
        """Every segment's words, in order."""
        return tuple(w for s in self.segments for w in s.words)

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": self.source, "model": self.model_id, "duration": round(self.duration, 3), "text": self.text,
            "segments": [s.to_dict() for s in self.segments], "options": self.options.to_dict(),
        }


@dataclass(frozen=True)
class AudioInput:
    """One recording to transcribe: a path, the bytes of a file (e.g. a wav from stdin), or samples.

    ``audio`` as an array is ``(S,)`` or ``(S, C)`` (as soundfile returns it) at ``sample_rate`` Hz.
    """

    name: str
    audio: str | os.PathLike | bytes | np.ndarray | torch.Tensor
    sample_rate: int | None = None

    @classmethod
    def of(cls, item: AudioInput | str | os.PathLike | bytes) -> AudioInput:
        """An input named after its path (arrays need an explicit AudioInput with their sample rate)."""
        if isinstance(item, AudioInput):
            return item
        return cls("<bytes>", item) if isinstance(item, bytes) else cls(str(item), item)


@dataclass(frozen=True)
class FileResult:
    """What :meth:`Transcriber.transcribe_many` gives for one input: its transcription, or why it failed.

    ``source`` is the input exactly as passed (a path, bytes, an :class:`AudioInput`);
    ``name`` is how messages and outputs call it. Exactly one of ``transcription``
    and ``error`` is set; check ``ok`` first. ``text`` is the transcription's text,
    and raises the error for an input that failed.
    """

    source: Any
    name: str
    transcription: Transcription | None = None
    error: AsrS2SError | None = None

    @property
    def ok(self) -> bool:
        return self.error is None

    @property
    def text(self) -> str:
        if self.error is not None:
            raise self.error
        return self.transcription.text
