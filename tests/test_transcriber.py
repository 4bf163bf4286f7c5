"""asr_s2s.transcriber: long files, many files, timestamps and the Python API, on real audio."""

from __future__ import annotations

import dataclasses
import inspect
import math
import shutil
import subprocess
import sys

import numpy as np
import pytest
import soundfile

import asr_s2s
from asr_s2s.errors import AudioLoadError, ConfigError, TranscriptionCancelled
from asr_s2s.metrics import error_rates
from asr_s2s.package import save_package
from asr_s2s.transcriber import AudioInput, Transcriber, TranscribeOptions, Transcription, load_model

from conftest import make_long_recording

SR = 16_000


@pytest.fixture(scope="module")
def transcriber(robust_package) -> Transcriber:
    return load_model(robust_package)


@pytest.fixture(scope="module")
def two_minutes(transcriber, long_recording) -> Transcription:
    """The 2-minute recording, greedy."""
    return transcriber.transcribe(long_recording.path, beam_size=1)


def _cer(reference: str, hypothesis: str) -> float:
    """Character error rate as a fraction."""
    return error_rates([reference], [hypothesis]).cer / 100


def _assert_same_segments(got, expected):
    """The same segments, up to float rounding (batches of other shapes round differently)."""
    assert [(s.id, s.start, s.end, s.text) for s in got] == [(s.id, s.start, s.end, s.text) for s in expected]
    for a, b in zip(got, expected):
        assert a.score == pytest.approx(b.score, abs=1e-4)
        assert [w.word for w in a.words] == [w.word for w in b.words]
        assert [t for w in a.words for t in (w.start, w.end)] == pytest.approx([t for w in b.words for t in (w.start, w.end)], abs=1e-6)


# -- a long file -----------------------------------------------------------------------
def test_a_two_minute_file_has_every_utterance_in_order(two_minutes, long_recording):
    assert two_minutes.duration == pytest.approx(120.0, abs=0.01)
    assert len(two_minutes.segments) == len(long_recording.texts)
    for segment, text in zip(two_minutes.segments, long_recording.texts):
        assert segment.text == text
    assert two_minutes.text == " ".join(long_recording.texts)


def test_segment_times_match_the_known_boundaries(two_minutes, long_recording):
    for segment, (start, end) in zip(two_minutes.segments, long_recording.spans):
        assert abs(segment.start - start) < 0.3 and abs(segment.end - end) < 0.3, (segment.id, segment.start, start)
        assert segment.end - segment.start <= 20.0


def test_word_times_are_inside_their_segment_and_monotonic(two_minutes):
    words = two_minutes.words
    assert [w.word for w in words] == two_minutes.text.split()
    for segment in two_minutes.segments:
        assert all(segment.start <= w.start < w.end <= segment.end for w in segment.words), segment
        assert all(0.0 <= w.probability <= 1.0 for w in segment.words)
    assert all(a.end <= b.start for a, b in zip(words, words[1:]))


def test_segments_longer_than_the_limit_are_cut_and_still_transcribed(transcriber, fixture_utterances, tmp_path):
    """Utterances with short pauses form one long stretch; with a 2.5 s limit it is cut between them."""
    wave, spans, texts = make_long_recording(fixture_utterances, 30.0, seed=3, pause_s=(0.3, 0.45))
    path = tmp_path / "dense.wav"
    soundfile.write(path, wave, SR)
    whole = transcriber.transcribe(path, beam_size=1, max_segment_s=60.0, min_pause_s=1.0, word_timestamps=False)
    assert len(whole.segments) == 1 and whole.segments[0].end - whole.segments[0].start > 25.0  # no pause of 1 s
    result = transcriber.transcribe(path, beam_size=1, max_segment_s=2.5, min_pause_s=1.0)
    assert all(s.end - s.start <= 2.5 + 1e-9 for s in result.segments)
    assert len(result.segments) == len(texts)  # each cut falls in a pause between two utterances
    assert _cer(" ".join(texts), result.text) < 0.05


@pytest.mark.parametrize("variant", ["stereo", "8k", "44k"])
def test_channels_and_sample_rates_transcribe_like_the_original(transcriber, long_recording, two_minutes, tmp_path, variant):
    import librosa

    # About 40 s, cut in a pause: 40.0 s itself falls 0.33 s into an utterance, and what the tiny model hears in
    # such a fragment depends on its trained weights (here 'THE CAT SAT', after another training 'SHE SOLD SEA').
    before = max(end for start, end in long_recording.spans if end <= 40.0)
    after = min(start for start, end in long_recording.spans if start >= before)
    wave = long_recording.waveform[: round((before + after) / 2 * SR)]
    original = transcriber.transcribe(wave, SR, beam_size=1).text
    assert original == two_minutes.text[: len(original)] and len(original) > 200
    if variant == "stereo":
        data, rate = np.stack([wave, 0.5 * wave], axis=1), SR
    else:
        rate = 8000 if variant == "8k" else 44_100
        data = librosa.resample(wave, orig_sr=SR, target_sr=rate)
    path = tmp_path / f"{variant}.flac"
    soundfile.write(path, data, rate)
    result = transcriber.transcribe(path, beam_size=1)
    assert _cer(original, result.text) <= (0.15 if variant == "8k" else 0.05)
    assert result.duration == pytest.approx(len(wave) / SR, abs=0.01)


def test_array_bytes_and_path_give_the_same_result(transcriber, fixture_utterances, tmp_path):
    wave, _, _ = make_long_recording(fixture_utterances, 12.0, seed=4)
    path = tmp_path / "a.wav"
    soundfile.write(path, wave, SR, subtype="FLOAT")
    from_path = transcriber.transcribe(path, beam_size=1)
    from_array = transcriber.transcribe(wave, sample_rate=SR, beam_size=1)
    from_bytes = transcriber.transcribe(path.read_bytes(), beam_size=1)
    from_int16 = transcriber.transcribe((wave * 32767).astype(np.int16), sample_rate=SR, beam_size=1)
    _assert_same_segments(from_array.segments, from_path.segments)
    _assert_same_segments(from_bytes.segments, from_path.segments)
    assert from_int16.text == from_path.text
    assert from_array.source == "<array>" and from_bytes.source == "<bytes>" and from_path.source == str(path)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")
def test_m4a_streams_through_ffmpeg(transcriber, fixture_utterances, tmp_path):
    wave, _, texts = make_long_recording(fixture_utterances, 12.0, seed=5)
    wav, m4a = tmp_path / "a.wav", tmp_path / "a.m4a"
    soundfile.write(wav, wave, SR)
    subprocess.run(["ffmpeg", "-nostdin", "-loglevel", "error", "-i", str(wav), "-ar", "44100", "-ac", "2", "-b:a", "192k",
                    str(m4a)], check=True, stdin=subprocess.DEVNULL)
    result = transcriber.transcribe(m4a, beam_size=1)
    assert _cer(" ".join(texts), result.text) < 0.05
    assert result.duration == pytest.approx(12.0, abs=0.1)


# -- many files --------------------------------------------------------------------------
def test_many_files_decode_together_like_one_at_a_time(transcriber, fixture_utterances, tmp_path):
    """Segments of several files share batches; the results are those of each file alone, in input order."""
    paths = []
    for seed, seconds in enumerate([9.0, 4.0, 15.0]):
        wave, _, _ = make_long_recording(fixture_utterances, seconds, seed=10 + seed)
        paths.append(tmp_path / f"{seed}.wav")
        soundfile.write(paths[-1], wave, SR)
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF not really a wave file")
    options = transcriber.options.with_overrides(beam_size=1)
    alone = [transcriber.transcribe(p, options=options) for p in paths]
    progress = []
    together = list(transcriber.transcribe_many([paths[0], bad, AudioInput("second", paths[1]), paths[2]],
                                                options, progress=progress.append))
    assert [r.name for r in together] == [str(paths[0]), str(bad), "second", str(paths[2])]
    assert [r.ok for r in together] == [True, False, True, True]
    assert together[0].source is paths[0] and together[2].source.name == "second", "each source as passed"
    assert isinstance(together[1].error, AudioLoadError) and "bad.wav" in str(together[1].error)
    assert together[1].transcription is None
    with pytest.raises(AudioLoadError, match="bad.wav"):
        together[1].text  # noqa: B018 - a failed input's text is its error, never a silent ""
    for one, many in zip(alone, [together[0], together[2], together[3]]):
        assert many.text == one.text
        _assert_same_segments(many.transcription.segments, one.segments)
    assert sum(progress) == pytest.approx(9.0 + 4.0 + 15.0, abs=0.01)
    read_ahead = list(transcriber.transcribe_many([paths[0], bad, AudioInput("second", paths[1]), paths[2]],
                                                  options, num_workers=2))
    assert [r.ok for r in read_ahead] == [True, False, True, True] and "bad.wav" in str(read_ahead[1].error)
    for ahead, many in zip(read_ahead, together):
        if many.ok:
            _assert_same_segments(ahead.transcription.segments, many.transcription.segments)
    small = options.with_overrides(batch_seconds=3.0)  # one segment per batch
    for one, many in zip(alone, transcriber.transcribe_many(paths, small)):
        _assert_same_segments(many.transcription.segments, one.segments)


def test_on_batch_reports_segments_as_decoded_and_cancelled_stops_an_input(transcriber, fixture_utterances, tmp_path):
    """What a server builds on: every decoded batch is reported as it is decoded (each segment once, in order),
    and an input whose caller gave up is read and decoded no further, while the others finish as usual."""
    wave, _, _ = make_long_recording(fixture_utterances, 16.0, seed=5)
    long = tmp_path / "long.wav"
    soundfile.write(long, wave, SR)
    paths = [fixture_utterances[0].audio, str(long), fixture_utterances[1].audio]
    options = transcriber.options.with_overrides(beam_size=1, batch_seconds=5.0)
    batches = []
    whole = list(transcriber.transcribe_many(paths, options, on_batch=batches.append))
    assert len(batches) > 3 and all(r.ok for r in whole)
    for result in whole:
        reported = [segment for batch in batches for source, segment in batch if source == result.source]
        _assert_same_segments(reported, result.transcription.segments)

    decoded = []
    stopped = list(transcriber.transcribe_many(
        paths, options, on_batch=decoded.extend,
        cancelled=lambda source: source == str(long) and any(s == source for s, _ in decoded)))
    assert [r.ok for r in stopped] == [True, False, True]
    assert isinstance(stopped[1].error, TranscriptionCancelled) and str(stopped[1].error) == f"{long}: cancelled"
    assert 0 < sum(s == str(long) for s, _ in decoded) < len(whole[1].transcription.segments)
    assert [r.text for r in (stopped[0], stopped[2])] == [whole[0].text, whole[2].text]


def test_transcribe_many_takes_the_keywords_of_transcribe(transcriber, fixture_utterances):
    path = fixture_utterances[0].audio
    (many,) = transcriber.transcribe_many([path], beam_size=1, scorers={"length_bonus": 0.0})
    assert many.ok and many.transcription.options.decode.beam_size == 1
    assert many.transcription.options == transcriber.transcribe(path, beam_size=1, scorers={"length_bonus": 0.0}).options
    with pytest.raises(ConfigError, match="unknown transcription option 'beam'. Did you mean 'beam_size'"):
        list(transcriber.transcribe_many([path], beam=1))


# -- options and the API ---------------------------------------------------------------------
def test_load_model_is_exported_lazily():
    code = "import sys, asr_s2s; assert 'torch' not in sys.modules and 'load_model' in dir(asr_s2s); print('ok')"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.stdout.strip() == "ok", out.stderr
    assert asr_s2s.load_model is load_model and asr_s2s.Transcription is Transcription


def test_every_option_is_an_explicit_keyword():
    """transcribe's keyword-only parameters are exactly the options TranscribeOptions takes by name (plus options=)."""
    params = inspect.signature(Transcriber.transcribe).parameters
    keywords = [n for n, p in params.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
    assert keywords == ["options", *TranscribeOptions.option_names()]
    assert not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())


def test_options_come_from_the_package_and_are_recorded(transcriber, fixture_utterances):
    assert transcriber.options.decode.beam_size == 4 and transcriber.options.decode.scorers == {"decoder": 1.0, "length_bonus": 0.0}
    audio = fixture_utterances[0].audio
    result = transcriber.transcribe(audio, scorers={"ctc": 0.3}, scorer_params={"ctc": {}}, end_margin=math.inf)
    assert result.options.decode.scorers == {"decoder": 1.0, "length_bonus": 0.0, "ctc": 0.3}
    assert result.options.decode.beam_size == 4 and result.options.decode.end_margin is None
    assert result.options.to_dict()["end_margin"] is None
    assert result.model_id.endswith("/model@sha256:" + result.model_id.rsplit(":", 1)[1])
    assert result.text and result.segments[0].scores.keys() == {"decoder", "ctc"}


def test_every_scorer_is_reachable(transcriber, fixture_utterances, tmp_path):
    arpa = tmp_path / "lm.arpa"
    arpa.write_text("\\data\\\nngram 1=4\n\n\\1-grams:\n-1.5 <unk>\n-99 <s>\n-1.0 </s>\n-0.8 THE\n\n\\end\\\n")
    result = transcriber.transcribe(
        fixture_utterances[0].audio, beam_size=3,
        scorers={"ctc": 0.3, "length_bonus": 0.5, "coverage": 0.2, "hotwords": 1.0, "ngram": 0.1},
        scorer_params={"coverage": {"threshold": 0.5}, "ngram": {"path": str(arpa), "unit": "word"}},
        hotwords=["CAT"],
    )
    assert set(result.segments[0].scores) == {"decoder", "ctc", "length_bonus", "coverage", "hotwords", "ngram"}
    assert result.options.to_dict()["hotwords"] == ["CAT"]
    assert result.options.decode.scorer_params["hotwords"] == {"phrases": ["CAT"]}


def test_bad_options_are_clear_errors(transcriber, fixture_utterances):
    audio = fixture_utterances[0].audio
    with pytest.raises(ConfigError, match="scorer 'lm' has params but no weight"):
        transcriber.transcribe(audio, lm="some/lm")
    with pytest.raises(ConfigError, match="beam size"):
        transcriber.transcribe(audio, beam_size=0)
    with pytest.raises(ConfigError, match="max segment length"):
        transcriber.transcribe(audio, max_segment_s=0.5)
    with pytest.raises(ConfigError, match="sample rate of an array"):
        transcriber.transcribe(np.zeros(SR, np.float32))
    with pytest.raises(TypeError):
        transcriber.transcribe(audio, beam=3)  # a typo is not silently ignored


def test_an_lm_at_weight_zero_is_off(transcriber, fixture_utterances):
    # as in evaluate: an explicit weight of 0 turns the scorer off, and its LM is never read
    audio = fixture_utterances[0].audio
    off = transcriber.transcribe(audio, beam_size=3, lm="no/such/lm", scorers={"lm": 0.0})
    assert off.text == transcriber.transcribe(audio, beam_size=3).text


def test_unreadable_audio_raises_naming_it(transcriber, tmp_path):
    with pytest.raises(AudioLoadError, match="no such file"):
        transcriber.transcribe(tmp_path / "gone.flac")
    (tmp_path / "empty.wav").write_bytes(b"")
    with pytest.raises(AudioLoadError, match="empty.wav: file is empty"):
        transcriber.transcribe(tmp_path / "empty.wav")
    with pytest.raises(AudioLoadError, match="NaN"):
        transcriber.transcribe(np.full(SR, np.nan, np.float32), sample_rate=SR)


def test_attention_and_word_timestamp_switches(transcriber, random_model, registry, fixture_utterances):
    audio = fixture_utterances[1].audio
    result = transcriber.transcribe(audio, beam_size=2, attention=True, word_timestamps=False)
    (segment,) = result.segments
    assert segment.words == ()
    assert segment.attention.shape == (len(segment.text) + 1, segment.attention.shape[1])
    assert np.allclose(segment.attention.sum(-1), 1.0, atol=1e-5)
    no_ctc = dataclasses.replace(random_model.config, ctc_weight=0.0)
    from asr_s2s.model import ASRModel

    model = ASRModel(no_ctc, random_model.tokenizer, random_model.frontend.cmvn, registry).eval()
    plain = Transcriber(model, registry, TranscribeOptions().with_overrides(beam_size=1))
    assert plain.transcribe(audio).words == ()
    with pytest.raises(ConfigError, match="CTC head"):
        plain.transcribe(audio, word_timestamps=True)


def test_a_package_without_ctc_still_transcribes(random_model, registry, tiny_config, tmp_path, fixture_utterances):
    from asr_s2s.model import ASRModel

    model = ASRModel(dataclasses.replace(random_model.config, ctc_weight=0.0), random_model.tokenizer,
                     random_model.frontend.cmvn, registry).eval()
    package = save_package(model, tiny_config.decode, tmp_path / "model", registry)
    result = load_model(package).transcribe(fixture_utterances[2].audio, beam_size=1)
    assert len(result.segments) == 1 and result.words == ()
