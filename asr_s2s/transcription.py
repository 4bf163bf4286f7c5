"""What a transcription is: its options (:class:`TranscribeOptions`), its input (:class:`AudioInput`)
and its results (:class:`Transcription` of :class:`Segment` and :class:`Word`; :class:`FileResult` per input
of :meth:`~asr_s2s.transcriber.Transcriber.transcribe_many`)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import torch

from asr_s2s.config import DecodeConfig
from asr_s2s.errors import AsrS2SError, ConfigError, did_you_mean
from asr_s2s.vad import VadOptions


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


# the keywords of transcribe() that are not DecodeConfig fields (nbest is always 1 for transcription)
_SEGMENTATION_KEYS = ("max_segment_s", "min_pause_s")
_OWN_KEYS = ("word_timestamps", "attention")


@dataclass(frozen=True)
class TranscribeOptions:
    """Everything that decides a transcription: the search (``decode``) and the segmentation of long audio.

    ``decode`` is a :class:`~asr_s2s.config.DecodeConfig` (:func:`load_model` takes the
    package's): ``scorers`` maps every scorer to its weight (0 or absent: off) and
    ``scorer_params`` holds their params, e.g. ``{"ngram": {"path": "lm.arpa", "unit": "word"}}``;
    transcription keeps one hypothesis, so its ``nbest`` is 1.

    ``segmentation`` (:class:`~asr_s2s.vad.VadOptions`): segments are at most
    ``max_segment_s`` seconds; pauses of ``min_pause_s`` separate them.
    ``word_timestamps``: None for "when the model has a CTC head", True to
    require them, False for none. ``attention`` keeps each segment's attention
    weights (for plots).

    :meth:`with_overrides` takes every option by its own name (``beam_size=4``,
    ``min_pause_s=0.5``, ``lm=DIR``, ``hotwords=[...]``): the keywords of
    :meth:`Transcriber.transcribe <asr_s2s.transcriber.Transcriber.transcribe>`.
    """

    decode: DecodeConfig = field(default_factory=DecodeConfig)
    segmentation: VadOptions = field(default_factory=VadOptions)
    word_timestamps: bool | None = None
    attention: bool = False

    def __post_init__(self) -> None:
        if self.decode.nbest != 1:
            object.__setattr__(self, "decode", dataclasses.replace(self.decode, nbest=1))

    @staticmethod
    def option_names() -> tuple[str, ...]:
        """Every option :meth:`with_overrides` takes, by name."""
        decode = tuple(f.name for f in dataclasses.fields(DecodeConfig) if f.name != "nbest")
        return (*decode[:3], "lm", "hotwords", *decode[3:], *_SEGMENTATION_KEYS, *_OWN_KEYS)

    def with_overrides(self, **changes: Any) -> TranscribeOptions:
        """These options with each given option that is not None replaced.

        Search options go to :meth:`DecodeConfig.with_overrides <asr_s2s.config.DecodeConfig.with_overrides>`
        (``scorers`` and ``scorer_params`` are merged; ``lm`` and ``hotwords`` are its shortcuts).

        :raises ConfigError: for an unknown option (naming the closest one) or a bad value.
        """
        names = self.option_names()
        for name in changes:
            if name not in names:
                raise ConfigError(f"unknown transcription option {name!r}.{did_you_mean(name, names)} "
                                  f"Options: {', '.join(names)}")
        changes = {name: value for name, value in changes.items() if value is not None}
        if not changes:
            return self
        segmentation = {k: changes.pop(k) for k in _SEGMENTATION_KEYS if k in changes}
        own = {k: changes.pop(k) for k in _OWN_KEYS if k in changes}
        if segmentation:
            spans = {k: getattr(self.segmentation, k) for k in _SEGMENTATION_KEYS}
            own["segmentation"] = VadOptions(**{**spans, **segmentation}, top_db=self.segmentation.top_db)
        return dataclasses.replace(self, decode=self.decode.with_overrides(**changes), **own)

    def to_dict(self) -> dict[str, Any]:
        """Every option by its name, as :meth:`with_overrides` takes it (the JSON output's ``options``)."""
        decode = dataclasses.asdict(self.decode)
        del decode["nbest"]
        out = {**decode, "lm": self.decode.scorer_params.get("lm", {}).get("path"),
               "hotwords": list(self.decode.scorer_params.get("hotwords", {}).get("phrases", ()))}
        out.update({k: getattr(self.segmentation, k) for k in _SEGMENTATION_KEYS})
        out.update({k: getattr(self, k) for k in _OWN_KEYS})
        return {name: out[name] for name in self.option_names()}


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
    """One recording to transcribe: a path, the bytes of a file, a binary stream (e.g. stdin, read as it
    arrives), or samples.

    ``audio`` as an array is ``(S,)`` or ``(S, C)`` (as soundfile returns it) at ``sample_rate`` Hz.
    """

    name: str
    audio: str | os.PathLike | bytes | BinaryIO | np.ndarray | torch.Tensor
    sample_rate: int | None = None

    @classmethod
    def of(cls, item: AudioInput | str | os.PathLike | bytes) -> AudioInput:
        """An input named after its path (arrays need an explicit AudioInput with their sample rate)."""
        if isinstance(item, AudioInput):
            return item
        if hasattr(item, "read"):  # a binary stream such as sys.stdin.buffer
            return cls("<stream>", item)
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
