"""asr_s2s.vad: energy-based segmentation of long audio at pauses, in memory and streamed."""

from __future__ import annotations

import numpy as np
import pytest

from asr_s2s.errors import ConfigError
from asr_s2s.vad import AudioSegment, Span, VadOptions, frame_energy_db, speech_segments, stream_segments

from conftest import make_long_recording

SR = 16_000


def _seconds(spans):
    return [(s.start / SR, s.end / SR) for s in spans]


def _voiced_intervals(recording_spans, waveform):
    """Each utterance's first to last loud frame, in seconds: where a cut would split a word."""
    out = []
    for start, end in recording_spans:
        db = frame_energy_db(waveform[int(start * SR): int(end * SR)])
        loud = np.flatnonzero(db > db.max() - 30)
        out.append((start + loud[0] * 0.01, start + loud[-1] * 0.01))
    return out


def test_one_segment_per_utterance_at_the_known_boundaries(long_recording):
    segments = _seconds(speech_segments(long_recording.waveform))
    assert len(segments) == len(long_recording.spans)
    for (start, end), (true_start, true_end) in zip(segments, long_recording.spans):
        assert abs(start - true_start) < 0.3 and abs(end - true_end) < 0.3
    ends = [e for _, e in segments]
    starts = [s for s, _ in segments]
    assert all(e <= s for e, s in zip(ends, starts[1:])), "segments overlap"


def test_long_speech_is_cut_at_pauses_under_the_limit(fixture_utterances):
    """Utterances with pauses shorter than min_pause form one long stretch; it is cut only between them."""
    wave, spans, _ = make_long_recording(fixture_utterances, 60.0, seed=1, pause_s=(0.05, 0.15))
    options = VadOptions(max_segment_s=6.0, min_pause_s=1.0, pad_s=0.1)
    segments = speech_segments(wave, options)
    assert len(segments) > 60 / 6
    assert all(s.end - s.start <= 6.0 * SR for s in segments)
    assert all(a.end == b.start for a, b in zip(segments, segments[1:])), "a long stretch is cut without gaps"
    words = _voiced_intervals(spans, wave)
    for cut in (s.start / SR for s in segments[1:]):
        inside = [(a, b) for a, b in words if a + 0.02 < cut < b - 0.02]
        assert not inside, f"cut at {cut:.2f} s falls inside the utterance spoken at {inside}"


def test_speech_without_pauses_is_cut_at_the_limit():
    """A sound whose energy dips every 1/3 s, but never for a pause's length, is cut at one of its dips."""
    t = np.arange(50 * SR) / SR
    syllables = (0.3 * np.sin(2 * np.pi * 220 * t) * np.abs(np.sin(2 * np.pi * 1.5 * t))).astype(np.float32)
    segments = speech_segments(syllables, VadOptions(max_segment_s=20.0))
    assert segments[0].start <= 0.2 * SR and segments[-1].end >= len(syllables) - 0.2 * SR
    assert all(s.end - s.start <= 20 * SR for s in segments) and 3 <= len(segments) <= 5
    assert all(a.end == b.start for a, b in zip(segments, segments[1:]))
    for cut in (s.start / SR for s in segments[1:]):  # at a dip: a zero of the 1.5 Hz envelope, every 1/3 s
        assert abs(cut * 3 - round(cut * 3)) < 0.1, cut


def test_silence_and_empty_audio_have_no_segments():
    assert speech_segments(np.zeros(0, np.float32)) == []
    assert speech_segments(np.zeros(5 * SR, np.float32)) == []
    noise = np.random.default_rng(0).normal(0, 1e-4, 5 * SR).astype(np.float32)  # -80 dBFS: below the floor
    assert speech_segments(noise) == []


def test_a_lone_utterance_in_minutes_of_noise(fixture_utterances):
    """Speech under 1% of the audio: the loud reference is noise, but the noise floor keeps noise out."""
    import soundfile

    rng = np.random.default_rng(0)
    wave = rng.normal(0, 10 ** (-50 / 20), 120 * SR).astype(np.float32)
    word = soundfile.read(fixture_utterances[7].audio, dtype="float32")[0]
    wave[60 * SR: 60 * SR + len(word)] += word
    (segment,) = speech_segments(wave)
    assert abs(segment.start / SR - 60) < 0.3 and abs(segment.end / SR - (60 + len(word) / SR)) < 0.4


def test_a_short_click_is_not_speech():
    wave = np.zeros(3 * SR, np.float32)
    wave[SR: SR + 320] = 0.5  # 20 ms
    assert speech_segments(wave) == []


def test_streamed_segments_match_the_whole_file(long_recording):
    """Fed in 1-second blocks, the stream finds the same segments as the whole waveform."""
    wave = long_recording.waveform
    whole = speech_segments(wave)
    streamed = list(stream_segments((wave[i: i + SR] for i in range(0, len(wave), SR)), VadOptions()))
    assert len(streamed) == len(whole)
    for seg, span in zip(streamed, whole):
        assert isinstance(seg, AudioSegment)
        assert abs(seg.start - span.start) <= 0.05 * SR and abs(seg.end - span.end) <= 0.05 * SR
        np.testing.assert_array_equal(seg.samples, wave[seg.start: seg.end])
    assert all(a.end <= b.start for a, b in zip(streamed, streamed[1:]))


def test_streaming_a_long_stretch_respects_the_limit(fixture_utterances):
    wave, _, _ = make_long_recording(fixture_utterances, 90.0, seed=2, pause_s=(0.05, 0.15))
    options = VadOptions(max_segment_s=5.0, min_pause_s=1.0, pad_s=0.1)
    streamed = list(stream_segments((wave[i: i + 7 * SR] for i in range(0, len(wave), 7 * SR)), options))
    assert all(len(s.samples) <= 5 * SR for s in streamed)
    assert all(a.end <= b.start for a, b in zip(streamed, streamed[1:]))
    covered = sum(len(s.samples) for s in streamed)
    assert covered > 0.9 * len(wave)  # nothing of the speech is lost at block or window edges


@pytest.mark.parametrize("kwargs, match", [
    ({"max_segment_s": 1.0}, "at least"),
    ({"min_pause_s": 0.0}, "min pause"),
    ({"min_pause_s": 0.2, "pad_s": 0.2}, "padding"),
    ({"top_db": -3.0}, "top_db"),
])
def test_bad_options(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        VadOptions(**kwargs)


def test_span_is_a_value():
    assert Span(1, 2) == Span(1, 2)
