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
