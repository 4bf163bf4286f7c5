"""Loading audio files into 16 kHz mono float waveforms."""

from __future__ import annotations

import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import soundfile

from asr_s2s.errors import AudioLoadError, ConfigError

if TYPE_CHECKING:
    import torch

SAMPLE_RATE_HZ = 16_000
MIN_DURATION_S = 0.1
MAX_DURATION_S = 3600.0
MIN_RATE_HZ, MAX_RATE_HZ = 1_000, 384_000  # sample rates outside this range are refused as corrupt or absurd
BLOCK_SAMPLES = 1 << 22  # samples (all channels) decoded per block: 16 MB of float32
AUDIO_EXTENSIONS = frozenset(  # file name suffixes taken as audio when a folder is searched
    ".wav .flac .mp3 .ogg .oga .opus .m4a .aac .mp4 .m4b .webm .mka .wma .aif .aiff .au .caf .amr".split()
)


def load_audio(source: str | os.PathLike | bytes, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Read an audio file (wav, flac, ogg, mp3, ...) as mono float32 at ``sample_rate_hz``.

    Any sample format, sample rate and channel count is accepted: channels are
    averaged and the signal is resampled with :func:`resample`.

    :param source: a path, or the bytes of a file (e.g. a wav read from stdin).
    :returns: ``(S,)`` float32 samples in [-1, 1].
    :raises AudioLoadError: naming the file, if it is missing, empty, not audio,
        corrupt, shorter than 100 ms, longer than an hour, holds NaN/inf samples,
        or has a sample rate outside 1-384 kHz.
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
        data = resample(data, rate, sample_rate_hz)
    return np.ascontiguousarray(data, dtype=np.float32)


def _check_file(path: Path, label: str) -> None:
    """A clear error for a path that is missing, a directory, or empty."""
    if not path.exists():
        raise AudioLoadError(f"{label}: no such file")
    if path.is_dir():
        raise AudioLoadError(f"{label}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioLoadError(f"{label}: file is empty (0 bytes)")


def _decode(source: str | os.PathLike | bytes, label: str) -> tuple[np.ndarray, int]:
    """Decode with libsndfile (wav, flac, ogg, mp3); fall back to librosa/audioread (ffmpeg)."""
    if not isinstance(source, bytes):
        _check_file(Path(source), label)
    elif not source:
        raise AudioLoadError(f"{label}: no audio data (0 bytes)")
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        stream = soundfile.SoundFile(handle)
    except (soundfile.LibsndfileError, RuntimeError) as open_error:
        if isinstance(source, bytes):
            reason = str(open_error).rsplit(": ", 1)[-1]  # not "Error opening <_io.BytesIO object at 0x...>"
            raise AudioLoadError(f"{label}: not a readable audio file ({reason})") from None
        return _decode_with_ffmpeg(source, label, open_error)
    with stream:
        expected, rate = stream.frames, int(stream.samplerate)
        _check_rate(rate, label)
        try:
            data = _read_blocks(stream, rate, label)
        except (soundfile.LibsndfileError, RuntimeError) as exc:
            raise AudioLoadError(f"{label}: corrupt or truncated {stream.format} audio ({exc})") from None
    if len(data) < expected:
        raise AudioLoadError(f"{label}: truncated audio: the header promises {expected} samples, {len(data)} decoded")
    return data, rate


def _check_rate(rate: int, label: str) -> None:
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise AudioLoadError(f"{label}: unsupported sample rate {rate} Hz (expected {MIN_RATE_HZ}-{MAX_RATE_HZ} Hz)")


def _read_blocks(stream: soundfile.SoundFile, rate: int, label: str) -> np.ndarray:
    """Decode block by block, so that a header claiming billions of frames costs no memory it has not earned.

    Stops with an error as soon as more than :data:`MAX_DURATION_S` has been decoded.
    """
    block = max(1, BLOCK_SAMPLES // stream.channels)
    limit = int(MAX_DURATION_S * rate)
    parts, total = [], 0
    while True:
        part = stream.read(block, dtype="float32", always_2d=True)
        parts.append(part)
        total += len(part)
        if len(part) < block:
            break
        if total > limit:
            raise AudioLoadError(
                f"{label}: audio is over {total / rate / 60:.1f} min long; split files longer than "
                f"{MAX_DURATION_S / 60:.0f} min first"
            )
    data = np.concatenate(parts) if len(parts) > 1 else parts[0]
    return data[:, 0] if data.shape[1] == 1 else data


def _decode_with_ffmpeg(source: str | os.PathLike, label: str, open_error: Exception) -> tuple[np.ndarray, int]:
    """Formats libsndfile cannot open (m4a, aac, ...) via librosa's audioread/ffmpeg backend."""
    try:
        import librosa

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # the cap keeps a small file that decodes to days of audio from filling memory
            data, rate = librosa.load(source, sr=None, mono=True, dtype=np.float32, duration=MAX_DURATION_S + 1)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means unreadable audio
        raise AudioLoadError(
            f"{label}: not a readable audio file (libsndfile: {open_error}; ffmpeg: {type(exc).__name__})"
        ) from None
    if data.size == 0:
        raise AudioLoadError(f"{label}: decoded to no samples")
    _check_rate(int(rate), label)
    return data, int(rate)


def audio_duration_s(path: str | os.PathLike) -> float:
    """Duration from the file header, without decoding the samples."""
    try:
        return float(soundfile.info(str(path)).duration)
    except (soundfile.LibsndfileError, RuntimeError):
        return len(load_audio(path)) / SAMPLE_RATE_HZ


STREAM_BLOCK_S = 30.0  # seconds of audio per block of stream_audio


def stream_audio(source: str | os.PathLike, sample_rate_hz: int = SAMPLE_RATE_HZ, block_s: float = STREAM_BLOCK_S):
    """Read an audio file as mono float32 blocks at ``sample_rate_hz``, holding one block at a time.

    The streaming counterpart of :func:`load_audio` for long recordings: there
    is no length limit, and memory does not grow with the file. libsndfile
    formats are resampled block by block with soxr's streaming resampler; other
    formats (m4a, aac, ...) are decoded, downmixed and resampled by the ffmpeg
    binary through a pipe (by :func:`load_audio` when there is no ffmpeg).

    :returns: an iterator of ``(S_i,)`` float32 blocks of about ``block_s`` seconds.
    :raises AudioLoadError: while iterating, naming the file, if it is missing,
        empty, not audio, corrupt or truncated, shorter than 100 ms, holds NaN/inf
        samples, or has a sample rate outside 1-384 kHz.
    """
    label = str(source)
    path = Path(source)
    _check_file(path, label)
    try:
        stream = soundfile.SoundFile(path)
    except (soundfile.LibsndfileError, RuntimeError) as open_error:
        yield from _stream_with_ffmpeg(path, label, open_error, sample_rate_hz, block_s)
        return
    with stream:
        rate, expected = int(stream.samplerate), stream.frames
        _check_rate(rate, label)
        resampler = None
        if rate != sample_rate_hz:
            import soxr  # librosa's resampling backend

            resampler = soxr.ResampleStream(rate, sample_rate_hz, 1, dtype="float32", quality="HQ")
        frames, total = max(1, int(block_s * rate)), 0
        while True:
            try:
                block = stream.read(frames, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                raise AudioLoadError(f"{label}: corrupt or truncated {stream.format} audio ({exc})") from None
            last = len(block) < frames
            mono = np.ascontiguousarray(block.mean(axis=1) if block.shape[1] > 1 else block[:, 0])
            if not np.all(np.isfinite(mono)):
                raise AudioLoadError(f"{label}: audio holds NaN or infinite samples")
            total += len(mono)
            out = mono if resampler is None else resampler.resample_chunk(mono, last=last)
            if len(out):
                yield out
            if last:
                break
    if total < expected:
        raise AudioLoadError(f"{label}: truncated audio: the header promises {expected} samples, {total} decoded")
    if total / rate < MIN_DURATION_S:
        raise AudioLoadError(f"{label}: audio is {total / rate * 1000:.0f} ms long; at least {MIN_DURATION_S * 1000:.0f} ms is needed")


def _stream_with_ffmpeg(path: Path, label: str, open_error: Exception, sample_rate_hz: int, block_s: float):
    """Blocks of a file libsndfile cannot open, decoded to mono ``sample_rate_hz`` float32 by ffmpeg."""
    import shutil
    import subprocess
    import tempfile

    exe = shutil.which("ffmpeg")
    if exe is None:
        yield load_audio(path, sample_rate_hz)
        return
    command = [exe, "-nostdin", "-v", "error", "-i", str(path), "-vn", "-ac", "1", "-ar", str(sample_rate_hz), "-f", "f32le", "-"]
    total = 0
    with tempfile.TemporaryFile() as log, subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=log) as proc:
        try:
            block_bytes = 4 * max(1, int(block_s * sample_rate_hz))
            while data := proc.stdout.read(block_bytes):
                block = np.frombuffer(data[: len(data) // 4 * 4], dtype="<f4").astype(np.float32)
                if not np.all(np.isfinite(block)):
                    raise AudioLoadError(f"{label}: audio holds NaN or infinite samples")
                total += len(block)
                yield block
        finally:
            if proc.poll() is None:
                proc.kill()
        code = proc.wait()
        log.seek(0)
        reason = (log.read().decode(errors="replace").strip().splitlines() or [f"exit code {code}"])[-1]
    if code != 0 or total == 0:
        raise AudioLoadError(f"{label}: not a readable audio file (libsndfile: {open_error}; ffmpeg: {reason})")
    if total / sample_rate_hz < MIN_DURATION_S:
        raise AudioLoadError(
            f"{label}: audio is {total / sample_rate_hz * 1000:.0f} ms long; at least {MIN_DURATION_S * 1000:.0f} ms is needed"
        )


MAX_CHANNELS = 64  # a 2-D array with more "channels" than this is taken to be (channels, samples) by mistake


def resample(samples: np.ndarray, from_hz: int, to_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """The toolkit's one resampler for whole signals: soxr at high quality (what librosa's
    ``soxr_hq`` runs), ``(S,)`` at ``from_hz`` to ``(S',)`` at ``to_hz``, in the input's float dtype."""
    if from_hz == to_hz:
        return samples
    import soxr  # imported lazily, with the first file that needs it

    return soxr.resample(samples, from_hz, to_hz, quality="HQ")


def array_to_mono(samples: np.ndarray | torch.Tensor, sample_rate: int | None, name: str) -> np.ndarray:
    """``(S,)`` or ``(S, C)`` samples at ``sample_rate`` as ``(S',)`` float32 mono at 16 kHz.

    Integer samples are scaled to [-1, 1]; channels are averaged.

    :raises ConfigError: without a positive integer ``sample_rate``.
    :raises AudioLoadError: naming ``name``, for a bad shape, NaN/inf samples or less than 100 ms.
    """
    if sample_rate is None:
        raise ConfigError(f"{name}: give the sample rate of an array, e.g. transcribe(samples, sample_rate=16000)")
    if not isinstance(sample_rate, (int, np.integer)) or sample_rate <= 0:
        raise ConfigError(f"{name}: sample_rate must be a positive integer, got {sample_rate!r}")
    x = samples.detach().cpu().numpy() if hasattr(samples, "detach") else np.asarray(samples)
    if np.issubdtype(x.dtype, np.integer):
        x = x.astype(np.float32) / float(-np.iinfo(x.dtype).min if np.issubdtype(x.dtype, np.signedinteger) else np.iinfo(x.dtype).max)
    if x.ndim == 2:
        if x.shape[1] > MAX_CHANNELS:
            raise AudioLoadError(f"{name}: expected samples (S,) or (S, channels), got shape {x.shape}; transpose it?")
        x = x.mean(axis=1)
    elif x.ndim != 1:
        raise AudioLoadError(f"{name}: expected samples (S,) or (S, channels), got shape {x.shape}")
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise AudioLoadError(f"{name}: audio holds NaN or infinite samples")
    if len(x) / sample_rate < MIN_DURATION_S:
        raise AudioLoadError(f"{name}: audio is {len(x) / sample_rate * 1000:.0f} ms long; at least {MIN_DURATION_S * 1000:.0f} ms is needed")
    return resample(x, int(sample_rate)).astype(np.float32, copy=False)
