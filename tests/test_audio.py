"""asr_s2s.audio: any file in, 16 kHz mono float32 out; bad files named in the error."""

from __future__ import annotations

import shutil
import subprocess

import librosa
import numpy as np
import pytest
import scipy.signal
import soundfile

from asr_s2s.audio import SAMPLE_RATE_HZ, audio_duration_s, load_audio
from asr_s2s.errors import AudioLoadError

from conftest import FIXTURE_DIR

SOURCE = FIXTURE_DIR / "1001" / "10" / "1001-10-0000.flac"

FORMATS = {  # extension: (soundfile format, subtype)
    "wav": ("WAV", "PCM_16"),
    "flac": ("FLAC", "PCM_16"),
    "ogg": ("OGG", "VORBIS"),
    "mp3": ("MP3", "MPEG_LAYER_III"),
}


@pytest.fixture(scope="module")
def speech() -> np.ndarray:
    """A real 16 kHz utterance (float64) that every conversion starts from."""
    data, rate = soundfile.read(SOURCE, dtype="float64")
    assert rate == SAMPLE_RATE_HZ
    return data


def _similarity(a: np.ndarray, b: np.ndarray, max_lag: int = 1200) -> float:
    """Best normalised cross-correlation within ``max_lag`` samples (codecs may add delay)."""
    n = min(len(a), len(b))
    a, b = a[:n] - a[:n].mean(), b[:n] - b[:n].mean()
    corr = scipy.signal.correlate(a, b[max_lag:n - max_lag], mode="valid", method="fft")
    energy = np.sqrt(np.sum(b[max_lag:n - max_lag] ** 2) * np.sum(a**2))
    return float(np.max(np.abs(corr)) / energy)


@pytest.mark.parametrize("ext", list(FORMATS))
@pytest.mark.parametrize("rate", [8_000, 44_100])
@pytest.mark.parametrize("channels", [1, 2])
def test_formats_rates_and_channels_become_16k_mono_float32(tmp_path, speech, ext, rate, channels):
    resampled = librosa.resample(speech, orig_sr=SAMPLE_RATE_HZ, target_sr=rate)
    # stereo: the right channel is silent, so a correct downmix halves the amplitude
    data = resampled if channels == 1 else np.stack([resampled, np.zeros_like(resampled)], axis=1)
    path = tmp_path / f"speech_{rate}_{channels}ch.{ext}"
    fmt, subtype = FORMATS[ext]
    soundfile.write(path, data, rate, format=fmt, subtype=subtype)

    wav = load_audio(path)

    assert wav.dtype == np.float32 and wav.ndim == 1
    expected_s = len(speech) / SAMPLE_RATE_HZ
    assert len(wav) / SAMPLE_RATE_HZ == pytest.approx(expected_s, rel=0.01)
    assert np.all(np.isfinite(wav)) and np.abs(wav).max() <= 1.0
    band_limited = librosa.resample(librosa.resample(speech, orig_sr=SAMPLE_RATE_HZ, target_sr=8_000), orig_sr=8_000, target_sr=SAMPLE_RATE_HZ)
    reference = band_limited if rate == 8_000 else speech
    assert _similarity(wav.astype(np.float64), reference) > (0.97 if ext in ("wav", "flac") else 0.8)
    if ext in ("wav", "flac"):
        gain = np.dot(wav[: len(reference)], reference[: len(wav)]) / np.dot(reference, reference)
        assert gain == pytest.approx(1.0 if channels == 1 else 0.5, rel=0.05)


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")
def test_format_only_ffmpeg_reads_falls_back(tmp_path, speech):
    """AAC in MP4 is not a libsndfile format: decoding goes through ffmpeg."""
    path = tmp_path / "speech.m4a"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(SOURCE), "-ar", "22050", "-ac", "2", str(path)], check=True, stdin=subprocess.DEVNULL
    )
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    # AAC adds up to ~1024 samples of priming at 22.05 kHz
    assert len(wav) / SAMPLE_RATE_HZ == pytest.approx(len(speech) / SAMPLE_RATE_HZ, abs=0.06)
    assert _similarity(wav.astype(np.float64), speech) > 0.8


@pytest.mark.parametrize(
    ("subtype", "tolerance"), [("PCM_U8", 1 / 128), ("PCM_16", 1 / 32768), ("PCM_24", 1 / 2**23), ("PCM_32", 1e-7), ("FLOAT", 0.0)]
)
def test_sample_formats_scale_to_unit_range(tmp_path, subtype, tolerance):
    rng = np.random.default_rng(0)
    signal = (0.9 * np.sin(np.linspace(0, 400 * np.pi, 8000)) * rng.uniform(0.5, 1.0, 8000)).astype(np.float32)
    path = tmp_path / f"{subtype}.wav"
    soundfile.write(path, signal, SAMPLE_RATE_HZ, subtype=subtype)
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.shape == signal.shape
    np.testing.assert_allclose(wav, signal, atol=tolerance + 1e-8, rtol=0)


def test_bytes_input_equals_file_input(tmp_path, speech):
    path = tmp_path / "a.ogg"
    soundfile.write(path, speech, SAMPLE_RATE_HZ, format="OGG", subtype="VORBIS")
    np.testing.assert_array_equal(load_audio(path.read_bytes()), load_audio(path))


def test_fixture_flac_loads_unchanged(speech):
    np.testing.assert_allclose(load_audio(SOURCE), speech.astype(np.float32), atol=0)
    assert audio_duration_s(SOURCE) == pytest.approx(len(speech) / SAMPLE_RATE_HZ)


def test_duration_from_header_matches_decoded_length(tmp_path, speech):
    path = tmp_path / "a.wav"
    soundfile.write(path, librosa.resample(speech, orig_sr=SAMPLE_RATE_HZ, target_sr=44_100), 44_100)
    assert audio_duration_s(path) == pytest.approx(len(load_audio(path)) / SAMPLE_RATE_HZ, rel=1e-3)


# -- bad inputs ---------------------------------------------------------------------
def _raises_naming(path, *words: str) -> str:
    with pytest.raises(AudioLoadError) as info:
        load_audio(path)
    message = str(info.value)
    assert str(path) in message
    for word in words:
        assert word in message.lower()
    return message


def test_missing_file(tmp_path):
    _raises_naming(tmp_path / "nope.wav", "no such file")


def test_zero_byte_file(tmp_path):
    path = tmp_path / "empty.wav"
    path.touch()
    _raises_naming(path, "empty")


def test_directory(tmp_path):
    _raises_naming(tmp_path, "directory")


def test_text_file_renamed_wav(tmp_path):
    path = tmp_path / "notes.wav"
    path.write_text("this is not audio at all\n" * 20)
    _raises_naming(path, "not a readable audio file")


def test_truncated_flac(tmp_path):
    path = tmp_path / "truncated.flac"
    data = SOURCE.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    _raises_naming(path)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_nan_or_inf_samples(tmp_path, bad):
    signal = np.zeros(SAMPLE_RATE_HZ, dtype=np.float32)
    signal[1234] = bad
    path = tmp_path / "bad.wav"
    soundfile.write(path, signal, SAMPLE_RATE_HZ, subtype="FLOAT")
    _raises_naming(path, "nan")


def test_shorter_than_100_ms(tmp_path):
    path = tmp_path / "short.wav"
    soundfile.write(path, np.zeros(int(0.05 * SAMPLE_RATE_HZ), dtype=np.float32), SAMPLE_RATE_HZ)
    _raises_naming(path, "50 ms", "100 ms")


def test_longer_than_an_hour(tmp_path):
    path = tmp_path / "long.wav"  # 1 kHz, 8 bit: an hour in 3.6 MB
    soundfile.write(path, np.zeros(3_601_000, dtype=np.float32), 1_000, subtype="PCM_U8")
    _raises_naming(path, "60.0 min", "split")


def test_100_ms_is_enough(tmp_path):
    path = tmp_path / "ok.wav"
    soundfile.write(path, np.zeros(int(0.1 * SAMPLE_RATE_HZ), dtype=np.float32), SAMPLE_RATE_HZ)
    assert len(load_audio(path)) == 1600


def test_empty_and_garbage_bytes():
    with pytest.raises(AudioLoadError, match="<bytes>"):
        load_audio(b"")
    with pytest.raises(AudioLoadError, match="<bytes>"):
        load_audio(b"RIFF not really a wav file" * 10)


def test_48_khz_six_channel_wav_is_downmixed(tmp_path, speech):
    """5.1 audio at 48 kHz: speech on one channel, the other five silent, so the mono mix is 1/6 of it."""
    resampled = librosa.resample(speech, orig_sr=SAMPLE_RATE_HZ, target_sr=48_000)
    data = np.zeros((len(resampled), 6))
    data[:, 0] = resampled
    path = tmp_path / "surround.wav"
    soundfile.write(path, data, 48_000, subtype="PCM_24")
    wav = load_audio(path)
    assert wav.dtype == np.float32 and wav.ndim == 1
    assert len(wav) == pytest.approx(len(speech), abs=2)
    gain = np.dot(wav[: len(speech)], speech[: len(wav)]) / np.dot(speech, speech)
    assert gain == pytest.approx(1 / 6, rel=0.02)


def test_all_silence_loads_and_gives_finite_features(tmp_path):
    """Digital silence is valid audio: no error, and its log-mel features stay finite (no log(0))."""
    from asr_s2s.features import fbank

    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(2 * SAMPLE_RATE_HZ, dtype=np.int16), SAMPLE_RATE_HZ, subtype="PCM_16")
    wav = load_audio(path)
    assert wav.shape == (2 * SAMPLE_RATE_HZ,) and not wav.any()
    feats = fbank(wav)
    assert feats.shape[0] == 198 and bool(feats.isfinite().all())


@pytest.mark.parametrize("rate", [500, 400_000])
def test_sample_rate_out_of_range(tmp_path, rate):
    path = tmp_path / f"rate_{rate}.wav"
    soundfile.write(path, np.zeros(rate, dtype=np.float32), rate)
    _raises_naming(path, f"unsupported sample rate {rate} hz")


def test_header_claiming_billions_of_samples_costs_no_memory(tmp_path):
    """A FLAC whose STREAMINFO claims 2^36 samples (a day of audio would be 1.4e9): decoding stops at the real
    end and reports the lie, instead of allocating 256 GiB up front."""
    data = bytearray(SOURCE.read_bytes())
    assert data[:4] == b"fLaC"
    field = slice(8 + 10, 8 + 18)  # STREAMINFO bytes 10-17: rate, channels, bits, 36-bit total samples
    packed = int.from_bytes(data[field], "big") | (1 << 36) - 1
    data[field] = packed.to_bytes(8, "big")
    path = tmp_path / "liar.flac"
    path.write_bytes(bytes(data))
    _raises_naming(path, "truncated")


# -- fuzzing: random and mangled bytes give a clean AudioLoadError or audio, never a crash or a hang --------------
import faulthandler  # noqa: E402
from contextlib import contextmanager  # noqa: E402

from hypothesis import HealthCheck, example, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402


@contextmanager
def _no_hang(seconds: float):
    """Abort the whole run with a traceback if the body hangs (a C-level hang ignores Python signals)."""
    faulthandler.dump_traceback_later(seconds, exit=True)
    try:
        yield
    finally:
        faulthandler.cancel_dump_traceback_later()


def _check_outcome(source) -> None:
    try:
        wav = load_audio(source)
    except AudioLoadError as exc:
        assert str(exc).startswith("<bytes>" if isinstance(source, bytes) else str(source))
    else:
        assert wav.dtype == np.float32 and wav.ndim == 1 and len(wav) >= 0.1 * SAMPLE_RATE_HZ
        assert np.all(np.isfinite(wav))


@given(st.binary(max_size=4096))
@example(b"RIFF\xff\xff\xff\xffWAVEfmt ")
@example(b"fLaC" + bytes(40))
@example(b"OggS" + bytes(100))
@example(b"ID3" + bytes(100))
@settings(max_examples=300)
def test_fuzz_random_bytes(data):
    with _no_hang(120):
        _check_outcome(data)


@pytest.fixture(scope="module")
def encoded_files(speech) -> dict[str, bytes]:
    """The fixture utterance (first 0.5 s) encoded as each format, as bytes to mangle."""
    import io

    out = {}
    for ext, (fmt, subtype) in FORMATS.items():
        buffer = io.BytesIO()
        soundfile.write(buffer, speech[: SAMPLE_RATE_HZ // 2], SAMPLE_RATE_HZ, format=fmt, subtype=subtype)
        out[ext] = buffer.getvalue()
    return out


@given(
    st.sampled_from(sorted(FORMATS)),
    st.lists(st.tuples(st.integers(0, 2**16), st.integers(0, 255)), max_size=8),
    st.one_of(st.none(), st.integers(0, 2**16)),
)
@settings(max_examples=150, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_mangled_real_files(encoded_files, ext, flips, cut):
    """Real wav/flac/ogg/mp3 bytes with random bytes overwritten and the tail cut off: the parsers' hard cases."""
    data = bytearray(encoded_files[ext])
    for position, value in flips:
        data[position % len(data)] = value
    if cut is not None:
        data = data[: cut % len(data)]
    with _no_hang(120):
        _check_outcome(bytes(data))


@given(st.binary(min_size=1, max_size=2048), st.sampled_from(["wav", "flac", "m4a", "bin"]))
@settings(max_examples=12, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_random_files_through_the_ffmpeg_fallback(tmp_path, data, ext):
    """Files (unlike bytes) that libsndfile rejects go on to ffmpeg; it too must end in a clean error."""
    path = tmp_path / f"random.{ext}"
    path.write_bytes(data)
    with _no_hang(120):
        _check_outcome(path)


@given(st.sampled_from(sorted(FORMATS)), st.binary(max_size=64), st.integers(0, 2**16), st.booleans())
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzz_the_streaming_reader(tmp_path, encoded_files, ext, noise, position, cut):
    """stream_audio (long files, `asr-s2s transcribe`) on mangled files: blocks of finite audio, or AudioLoadError."""
    from asr_s2s.audio import stream_audio

    data = bytearray(encoded_files[ext])
    at = position % len(data)
    data[at : at + len(noise)] = noise
    path = tmp_path / f"mangled.{ext}"
    path.write_bytes(bytes(data[:at] if cut else data))
    with _no_hang(120):
        try:
            blocks = list(stream_audio(path))
        except AudioLoadError as exc:
            assert str(exc).startswith(str(path))
        else:
            assert blocks and all(b.dtype == np.float32 and np.all(np.isfinite(b)) for b in blocks)


# -- streaming (long recordings) ---------------------------------------------------------------------
@pytest.mark.parametrize("rate, channels", [(16_000, 1), (44_100, 2), (8_000, 1)])
def test_stream_audio_blocks_join_to_what_load_audio_reads(tmp_path, speech, rate, channels):
    """Blocks of a few seconds, resampled as a stream, give the samples of the whole file resampled at once."""
    from asr_s2s.audio import stream_audio

    wave = np.tile(speech, 4) if rate == SAMPLE_RATE_HZ else librosa.resample(np.tile(speech, 4), orig_sr=SAMPLE_RATE_HZ, target_sr=rate)
    path = tmp_path / "long.wav"
    soundfile.write(path, np.stack([wave] * channels, 1) if channels > 1 else wave, rate, subtype="FLOAT")
    blocks = list(stream_audio(path, block_s=1.5))
    assert len(blocks) >= 4 and all(b.dtype == np.float32 and b.ndim == 1 for b in blocks)
    streamed, whole = np.concatenate(blocks), load_audio(path)
    assert abs(len(streamed) - len(whole)) <= 1
    n = min(len(streamed), len(whole))
    assert np.max(np.abs(streamed[:n] - whole[:n])) < 1e-3


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")
def test_stream_audio_through_ffmpeg(tmp_path, speech):
    from asr_s2s.audio import stream_audio

    path = tmp_path / "speech.m4a"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-y", "-i", str(SOURCE), "-ar", "22050", "-ac", "2", str(path)],
        check=True, stdin=subprocess.DEVNULL,
    )
    streamed = np.concatenate(list(stream_audio(path, block_s=0.5)))
    assert abs(len(streamed) / SAMPLE_RATE_HZ - len(speech) / SAMPLE_RATE_HZ) < 0.1
    assert _similarity(streamed.astype(np.float64), speech) > 0.9


@pytest.mark.parametrize("content, match", [
    (b"", "file is empty"),
    (b"this is a text file, not audio\n" * 10, "not a readable audio file"),
])
def test_stream_audio_bad_files(tmp_path, content, match):
    from asr_s2s.audio import stream_audio

    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioLoadError, match=match):
        list(stream_audio(path))
    with pytest.raises(AudioLoadError, match="no such file"):
        list(stream_audio(tmp_path / "gone.flac"))
