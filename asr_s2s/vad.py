"""Energy-based voice activity detection: split long audio at pauses.

Attention decoders lose their place on long inputs, so a long recording is
cut into segments of at most ``max_segment_s`` seconds. Speech is found by
frame energy (RMS, via librosa) against a threshold relative to the loud end
of the recording (and above its noise floor); stretches of speech separated by pauses of at least
``min_pause_s`` become separate segments, each padded with a little of the
pause around it. A stretch longer than the limit is cut at its longest short
pause within the second half of the allowed window (its quietest point when
it has none), so words are not cut when a pause is near.

:func:`speech_segments` works on a waveform in memory; :func:`stream_segments`
does the same over a stream of blocks while holding a bounded amount of audio,
so memory stays flat however long the file is.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np

from asr_s2s.audio import SAMPLE_RATE_HZ
from asr_s2s.errors import ConfigError

MAX_SEGMENT_S = 20.0  # the longest segment the decoder is given, padding included
MIN_SEGMENT_LIMIT_S = 2.0  # smallest allowed max_segment_s
MIN_PAUSE_S = 0.3  # silence that separates two segments
PAD_S = 0.15  # silence kept before and after each segment (at most half a pause)
MIN_SPEECH_S = 0.1  # shorter bursts of energy (clicks) are dropped
TOP_DB = 35.0  # frames this far below the loud reference are silence
FLOOR_DBFS = -60.0  # frames quieter than this are always silence
REFERENCE_PERCENTILE = 99.0  # the "loud" reference level, robust to a few clicks
NOISE_PERCENTILE = 5.0  # the noise floor: even dense speech has this share of pauses and closures
MIN_SNR_DB = 10.0  # speech is at least this far above the noise floor
FRAME_LENGTH_S = 0.025
HOP_S = 0.010
SMOOTH_S = 0.100  # energy smoothing when a long stretch has no pause at all
CUT_WINDOW_START = 0.5  # a long stretch is cut no earlier than this share of max_segment_s


@dataclass(frozen=True)
class VadOptions:
    """Segmentation settings; times in seconds."""

    max_segment_s: float = MAX_SEGMENT_S
    min_pause_s: float = MIN_PAUSE_S
    pad_s: float | None = None  # None: PAD_S, or half of min_pause_s when that is less
    top_db: float = TOP_DB

    def __post_init__(self) -> None:
        if self.pad_s is None:
            object.__setattr__(self, "pad_s", min(PAD_S, self.min_pause_s / 2))
        if not self.max_segment_s >= MIN_SEGMENT_LIMIT_S:
            raise ConfigError(f"max segment length must be at least {MIN_SEGMENT_LIMIT_S} s, got {self.max_segment_s}")
        if not 0 < self.min_pause_s < self.max_segment_s / 2:
            raise ConfigError(f"min pause must be positive and under half the max segment length, got {self.min_pause_s}")
        if not 0 <= self.pad_s <= self.min_pause_s / 2:
            raise ConfigError(f"segment padding must be between 0 and half the min pause ({self.min_pause_s / 2} s), got {self.pad_s}")
        if not self.top_db > 0:
            raise ConfigError(f"top_db must be positive, got {self.top_db}")


@dataclass(frozen=True)
class Span:
    """A segment ``[start, end)`` in samples."""

    start: int
    end: int


def frame_energy_db(waveform: np.ndarray, sample_rate: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """RMS energy in dBFS of ``HOP_S``-spaced frames ``(T,)``; frame ``t`` is centred on sample ``t * hop``."""
    import librosa  # imported lazily: slow to import

    hop = round(HOP_S * sample_rate)
    rms = librosa.feature.rms(y=waveform, frame_length=round(FRAME_LENGTH_S * sample_rate), hop_length=hop, center=True)[0]
    return 20.0 * np.log10(np.maximum(rms, 1e-10))


def speech_segments(waveform: np.ndarray, options: VadOptions = VadOptions(), sample_rate: int = SAMPLE_RATE_HZ) -> list[Span]:
    """Segments of ``waveform`` ``(S,)`` that hold speech, in order, none longer than ``options.max_segment_s``.

    Segments never overlap. Pure silence yields no segment.
    """
    if len(waveform) == 0:
        return []
    hop = round(HOP_S * sample_rate)
    db = frame_energy_db(waveform, sample_rate)
    loud, floor = np.percentile(db, [REFERENCE_PERCENTILE, NOISE_PERCENTILE])
    threshold = max(float(loud) - options.top_db, float(floor) + MIN_SNR_DB, FLOOR_DBFS)
    voiced = db > threshold
    max_len = int(options.max_segment_s * sample_rate)
    pad = int(options.pad_s * sample_rate)
    spans = []
    for first, last in _regions(voiced, round(options.min_pause_s / HOP_S), max(1, round(MIN_SPEECH_S / HOP_S))):
        start = max(0, first * hop - hop // 2 - pad)
        end = min(len(waveform), (last + 1) * hop + hop // 2 + pad)
        spans.extend(_split(start, end, max_len, voiced, db, hop))
    return spans


def _regions(voiced: np.ndarray, min_pause: int, min_speech: int) -> list[tuple[int, int]]:
    """Inclusive frame ranges of speech, bridging gaps shorter than ``min_pause`` frames."""
    idx = np.flatnonzero(voiced)
    if idx.size == 0:
        return []
    breaks = np.flatnonzero(np.diff(idx) > min_pause)  # a gap of >= min_pause silent frames
    firsts = np.concatenate([idx[:1], idx[breaks + 1]])
    lasts = np.concatenate([idx[breaks], idx[-1:]])
    return [(int(a), int(b)) for a, b in zip(firsts, lasts) if b - a + 1 >= min_speech]


def _split(start: int, end: int, max_len: int, voiced: np.ndarray, db: np.ndarray, hop: int) -> list[Span]:
    """Cut ``[start, end)`` (samples) into pieces of at most ``max_len`` at its pauses."""
    spans = []
    while end - start > max_len:
        lo = (start + int(CUT_WINDOW_START * max_len)) // hop + 1
        hi = (start + max_len) // hop  # frames lo..hi-1 are candidate cut points
        cut = _best_cut(voiced[lo:hi], db[lo:hi]) + lo
        cut_sample = min(max(cut * hop, start + 1), start + max_len)
        spans.append(Span(start, cut_sample))
        start = cut_sample
    spans.append(Span(start, end))
    return spans


def _best_cut(voiced: np.ndarray, db: np.ndarray) -> int:
    """Index of the middle of the longest (latest on ties) silent run, or of the quietest smoothed frame."""
    silent = np.concatenate([[False], ~voiced, [False]])
    edges = np.flatnonzero(np.diff(silent.astype(np.int8)))
    if edges.size:
        starts, ends = edges[::2], edges[1::2]
        lengths = ends - starts
        best = len(lengths) - 1 - int(np.argmax(lengths[::-1]))
        return int((starts[best] + ends[best]) // 2)
    width = max(1, round(SMOOTH_S / HOP_S))
    smooth = np.convolve(db, np.ones(width) / width, mode="same")
    return int(np.argmin(smooth))


@dataclass(frozen=True)
class AudioSegment:
    """A segment cut from a stream: its first sample's index in the whole recording, and its samples ``(S,)``."""

    start: int
    samples: np.ndarray

    @property
    def end(self) -> int:
        return self.start + len(self.samples)


def stream_segments(
    blocks: Iterable[np.ndarray], options: VadOptions = VadOptions(), sample_rate: int = SAMPLE_RATE_HZ
) -> Iterator[AudioSegment]:
    """:func:`speech_segments` over a stream of waveform blocks ``(S_i,)``, holding a bounded amount of audio.

    Audio is analysed in windows of a few ``max_segment_s``; the segments that
    end well before a window's end are emitted, and the analysis goes on from
    the end of the last one emitted. At most about ``4 * max_segment_s`` plus
    one block is held at a time.
    """
    lookahead = int((options.max_segment_s + 2 * options.min_pause_s) * sample_rate)
    window = lookahead + int(2 * options.max_segment_s * sample_rate)
    pending: list[np.ndarray] = []
    held = 0
    buffer = np.zeros(0, dtype=np.float32)
    offset = 0  # index of buffer[0] in the recording
    for block in blocks:
        pending.append(np.asarray(block, dtype=np.float32))
        held += len(block)
        if held < window:
            continue
        buffer = np.concatenate([buffer, *pending])
        pending, held = [], len(buffer)
        while len(buffer) >= window:
            decided = len(buffer) - lookahead
            spans = speech_segments(buffer, options, sample_rate)
            done = [s for s in spans if s.end <= decided]
            for span in done:
                yield AudioSegment(offset + span.start, buffer[span.start : span.end].copy())
            later = [s.start for s in spans if s.end > decided]
            drop = done[-1].end if done else min(later[0] if later else decided, decided)
            buffer = buffer[drop:]
            offset += drop
            held = len(buffer)
    buffer = np.concatenate([buffer, *pending])
    for span in speech_segments(buffer, options, sample_rate):
        yield AudioSegment(offset + span.start, buffer[span.start : span.end].copy())
