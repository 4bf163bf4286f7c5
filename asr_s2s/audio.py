"""Loading audio files into 16 kHz mono float waveforms."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path

import numpy as np
import soundfile

from asr_s2s.errors import AudioLoadError

SAMPLE_RATE_HZ = 16_000
MIN_DURATION_S = 0.1
MAX_DURATION_S = 3600.0


def load_audio(source: str | os.PathLike | bytes, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Read an audio file (wav, flac, ogg, mp3, ...) as mono float32 at ``sample_rate_hz``.

    Any sample format, sample rate and channel count is accepted: channels are
    averaged and the signal is resampled with soxr (via librosa).

    :param source: a path, or the bytes of a file (e.g. a wav read from stdin).
    :returns: ``(S,)`` float32 samples in [-1, 1].
    :raises AudioLoadError: naming the file, if it is missing, empty, not audio,
        corrupt, shorter than 100 ms, longer than an hour, or holds NaN/inf samples.
    """
    label = "<bytes>" if isinstance(source, bytes) else str(source)
    data, rate = _decode(source, label)
    if data.ndim == 2:
        data = data.mean(axis=1)
    if not np.all(np.isfinite(data)):
        raise AudioLoadError(f"{label}: audio holds NaN or infinite samples")
    duration_s = len(data) / rate
    if duration_s < MIN_DURATION_S:
        raise AudioLoadError(f"{label}: audio is {duration_s * 1000:.0f} ms long; at least {MIN_DURATION_S * 1000:.0f} ms is needed")
    if duration_s > MAX_DURATION_S:
        raise AudioLoadError(
            f"{label}: audio is {duration_s / 60:.1f} min long; split files longer than {MAX_DURATION_S / 60:.0f} min first"
        )
    if rate != sample_rate_hz:
        import librosa  # imported lazily: it is slow to import and only needed here

        data = librosa.resample(data, orig_sr=rate, target_sr=sample_rate_hz, res_type="soxr_hq")
    return np.ascontiguousarray(data, dtype=np.float32)


def _decode(source: str | os.PathLike | bytes, label: str) -> tuple[np.ndarray, int]:
    """Decode with libsndfile (wav, flac, ogg, mp3); fall back to librosa/audioread (ffmpeg)."""
    if not isinstance(source, bytes):
        path = Path(source)
        if not path.exists():
            raise AudioLoadError(f"{label}: no such file")
        if path.is_dir():
            raise AudioLoadError(f"{label}: is a directory, not an audio file")
        if path.stat().st_size == 0:
            raise AudioLoadError(f"{label}: file is empty (0 bytes)")
    elif not source:
        raise AudioLoadError(f"{label}: no audio data (0 bytes)")
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        stream = soundfile.SoundFile(handle)
    except (soundfile.LibsndfileError, RuntimeError) as open_error:
        if isinstance(source, bytes):
            raise AudioLoadError(f"{label}: not a readable audio file ({open_error})") from None
        return _decode_with_ffmpeg(source, label, open_error)
    with stream:
        expected, rate = stream.frames, stream.samplerate
        try:
            data = stream.read(dtype="float32", always_2d=False)
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise AudioLoadError(f"{label}: corrupt or truncated {stream.format} audio ({exc})") from None
    if len(data) < expected:
        raise AudioLoadError(f"{label}: truncated audio: the header promises {expected} samples, {len(data)} decoded")
    return data, int(rate)


def _decode_with_ffmpeg(source: str | os.PathLike, label: str, open_error: Exception) -> tuple[np.ndarray, int]:
    """Formats libsndfile cannot open (m4a, aac, ...) via librosa's audioread/ffmpeg backend."""
    try:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            data, rate = librosa.load(source, sr=None, mono=True, dtype=np.float32)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means unreadable audio
        raise AudioLoadError(
            f"{label}: not a readable audio file (libsndfile: {open_error}; ffmpeg: {type(exc).__name__})"
        ) from None
    if data.size == 0:
        raise AudioLoadError(f"{label}: decoded to no samples")
    return data, int(rate)


def audio_duration_s(path: str | os.PathLike) -> float:
    """Duration from the file header, without decoding the samples."""
    try:
        return float(soundfile.info(str(path)).duration)
    except (soundfile.LibsndfileError, RuntimeError):
        return len(load_audio(path)) / SAMPLE_RATE_HZ
