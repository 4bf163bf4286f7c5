"""Loading audio files into 16 kHz mono float waveforms.

Every reader decodes block by block and downmixes and resamples each block as it
comes, so memory follows the 16 kHz mono output, never the file's own sample rate,
channel count or header: :func:`load_audio` stops as soon as more than its limit has
come out; :func:`stream_audio` holds one block. libsndfile reads what it can (wav,
flac, ogg, mp3); other formats go to the ffmpeg binary (:mod:`asr_s2s.ffmpeg`).
"""

from __future__ import annotations

import io
import os
import shutil
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np
import soundfile

from asr_s2s import ffmpeg
from asr_s2s.errors import AudioLoadError, ConfigError

if TYPE_CHECKING:
    import torch

SAMPLE_RATE_HZ = 16_000
MIN_DURATION_S = 0.1
MAX_DURATION_S = 3600.0  # the longest audio load_audio accepts, in seconds (at 16 kHz mono float32: 230 MB)
MIN_RATE_HZ, MAX_RATE_HZ = 1_000, 384_000  # sample rates outside this range are refused as corrupt or absurd
BLOCK_SAMPLES = 1 << 22  # samples per decoded block, counted over all channels and again after resampling: 16 MB of float32
STREAM_BLOCK_S = 30.0  # seconds of audio per block of stream_audio
AUDIO_EXTENSIONS = frozenset(  # file name suffixes taken as audio when a folder is searched
    ".wav .flac .mp3 .ogg .oga .opus .m4a .aac .mp4 .m4b .webm .mka .wma .aif .aiff .au .caf .amr".split()
)


class AudioTooLongError(AudioLoadError):
    """Audio that decodes to more than a limit: at least ``decoded_s`` seconds, over ``limit_s``."""

    def __init__(self, message: str, decoded_s: float, limit_s: float) -> None:
        super().__init__(message)
        self.decoded_s, self.limit_s = decoded_s, limit_s


def load_audio(source: str | os.PathLike | bytes | BinaryIO, sample_rate_hz: int = SAMPLE_RATE_HZ,
               max_duration_s: float = MAX_DURATION_S) -> np.ndarray:
    """Read an audio file (wav, flac, ogg, mp3, ...) as mono float32 at ``sample_rate_hz``.

    Any sample format, sample rate and channel count is accepted: channels are
    averaged and the signal is resampled (soxr, as :func:`resample`), block by block.

    :param source: a path, the bytes of a file (e.g. a wav read from stdin), or a binary file object.
    :param max_duration_s: the longest audio accepted, in seconds; decoding stops as soon as
        more has come out, so memory never exceeds about ``max_duration_s * sample_rate_hz`` samples.
    :returns: ``(S,)`` float32 samples in [-1, 1].
    :raises AudioLoadError: naming the file, if it is missing, empty, not audio,
        corrupt, shorter than 100 ms, holds NaN/inf samples, or has a sample rate
        outside 1-384 kHz; :class:`AudioTooLongError` if longer than ``max_duration_s``.
    """
    label = _label(source)
    limit = int(max_duration_s * sample_rate_hz)
    parts, total = [], 0
    with closing(_blocks(source, label, sample_rate_hz, None)) as blocks:
        for block in blocks:
            total += len(block)
            if total > limit:
                raise AudioTooLongError(
                    f"{label}: audio is over {_span(total / sample_rate_hz)} long; split files longer than "
                    f"{_limit(max_duration_s)} first", total / sample_rate_hz, max_duration_s,
                )
            parts.append(block)
    data = np.concatenate(parts) if len(parts) != 1 else parts[0]
    return np.ascontiguousarray(data, dtype=np.float32)


def stream_audio(source: str | os.PathLike | BinaryIO, sample_rate_hz: int = SAMPLE_RATE_HZ,
                 block_s: float = STREAM_BLOCK_S, name: str | None = None):
    """Read audio as mono float32 blocks at ``sample_rate_hz``, holding one block at a time.

    The streaming counterpart of :func:`load_audio` for long recordings: there
    is no length limit, and memory does not grow with the file. libsndfile
    formats are resampled block by block with soxr's streaming resampler; other
    formats (m4a, aac, ...) are decoded, downmixed and resampled by the ffmpeg
    binary through a pipe.

    :param source: a path, or a binary file object such as ``sys.stdin.buffer``, read as
        it arrives: by libsndfile when it can seek, else by ffmpeg through a pipe
        (without ffmpeg, a pipe is first copied to a temporary file, not to memory).
    :param name: what errors call the input (default: the path, or ``<stream>``).
    :returns: an iterator of ``(S_i,)`` float32 blocks of about ``block_s`` seconds
        (fewer where ``block_s`` of the file's channels would exceed :data:`BLOCK_SAMPLES`).
    :raises AudioLoadError: while iterating, naming the file, if it is missing,
        empty, not audio, corrupt or truncated, shorter than 100 ms, holds NaN/inf
        samples, or has a sample rate outside 1-384 kHz.
    """
    return _blocks(source, name or _label(source), sample_rate_hz, block_s)


def _label(source) -> str:
    return "<bytes>" if isinstance(source, bytes) else "<stream>" if hasattr(source, "read") else str(source)


def _span(seconds: float) -> str:
    return f"{seconds / 60:.1f} min" if seconds >= 60 else f"{seconds:.1f} s"


def _limit(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds >= 60 else f"{seconds:g} s"


def _check_file(path: Path, label: str) -> None:
    """A clear error for a path that is missing, a directory, or empty."""
    if not path.exists():
        raise AudioLoadError(f"{label}: no such file")
    if path.is_dir():
        raise AudioLoadError(f"{label}: is a directory, not an audio file")
    if path.stat().st_size == 0:
        raise AudioLoadError(f"{label}: file is empty (0 bytes)")


def _check_rate(rate: int, label: str) -> None:
    if not MIN_RATE_HZ <= rate <= MAX_RATE_HZ:
        raise AudioLoadError(f"{label}: unsupported sample rate {rate} Hz (expected {MIN_RATE_HZ}-{MAX_RATE_HZ} Hz)")


def _check_samples(samples: np.ndarray, label: str) -> None:
    if not np.all(np.isfinite(samples)):
        raise AudioLoadError(f"{label}: audio holds NaN or infinite samples")


def _check_length(seconds: float, label: str) -> None:
    if seconds < MIN_DURATION_S:
        raise AudioLoadError(f"{label}: audio is {seconds * 1000:.0f} ms long; at least {MIN_DURATION_S * 1000:.0f} ms is needed")


def _open(handle) -> soundfile.SoundFile | Exception:
    """The file opened by libsndfile, or why it could not be."""
    try:
        return soundfile.SoundFile(handle)
    except (soundfile.LibsndfileError, RuntimeError) as error:
        return error


def _blocks(source, label: str, rate_hz: int, block_s: float | None):
    """Mono float32 blocks at ``rate_hz`` of a path, the bytes of a file, or a binary stream."""
    if isinstance(source, bytes):
        if not source:
            raise AudioLoadError(f"{label}: no audio data (0 bytes)")
        stream = _open(io.BytesIO(source))
        if isinstance(stream, Exception):
            reason = str(stream).rsplit(": ", 1)[-1]  # not "Error opening <_io.BytesIO object at 0x...>"
            raise AudioLoadError(f"{label}: not a readable audio file ({reason})")
        yield from _sndfile_blocks(stream, label, rate_hz, block_s)
    elif hasattr(source, "read"):
        yield from _stream_blocks(source, label, rate_hz, block_s)
    else:
        path = Path(source)
        _check_file(path, label)
        stream = _open(path)
        if isinstance(stream, Exception):
            yield from _ffmpeg_blocks(path, label, stream, rate_hz, block_s)
        else:
            yield from _sndfile_blocks(stream, label, rate_hz, block_s)


def _stream_blocks(source: BinaryIO, label: str, rate_hz: int, block_s: float | None):
    """A file object: libsndfile if it can seek (and reads the format), else ffmpeg through a pipe."""
    try:
        start = source.tell() if source.seekable() else None
    except (OSError, ValueError):
        start = None
    if start is not None:
        stream = _open(source)
        if not isinstance(stream, Exception):
            yield from _sndfile_blocks(stream, label, rate_hz, block_s)
            return
        source.seek(start)
        yield from _ffmpeg_blocks(source, label, stream, rate_hz, block_s)
    elif shutil.which("ffmpeg") is not None:
        yield from _ffmpeg_blocks(source, label, None, rate_hz, block_s)
    else:  # libsndfile must seek: the pipe goes to disk, not to memory
        import tempfile

        with tempfile.TemporaryFile() as spool:
            shutil.copyfileobj(source, spool)
            spool.seek(0)
            yield from _stream_blocks(spool, label, rate_hz, block_s)


def _block_frames(rate: int, channels: int, rate_hz: int, block_s: float | None) -> int:
    """Frames per read: at most BLOCK_SAMPLES samples over all channels, and at most BLOCK_SAMPLES once resampled."""
    frames = min(BLOCK_SAMPLES // channels, BLOCK_SAMPLES * rate // rate_hz)
    if block_s is not None:
        frames = min(frames, int(block_s * rate))
    return max(1, frames)


def _sndfile_blocks(stream: soundfile.SoundFile, label: str, rate_hz: int, block_s: float | None):
    """Decode with libsndfile block by block, downmixing and resampling each block as it comes.

    A header claiming billions of frames costs no memory it has not earned; a header
    promising more frames than the file holds is reported as truncated.
    """
    with stream:
        rate, channels, expected = int(stream.samplerate), stream.channels, stream.frames
        _check_rate(rate, label)
        frames = _block_frames(rate, channels, rate_hz, block_s)
        resample_chunk = _chunk_resampler(rate, rate_hz)
        total = 0
        while True:
            try:
                block = stream.read(frames, dtype="float32", always_2d=True)
            except (soundfile.LibsndfileError, RuntimeError) as exc:
                raise AudioLoadError(f"{label}: corrupt or truncated {stream.format} audio ({exc})") from None
            last = len(block) < frames
            mono = np.ascontiguousarray(block.mean(axis=1) if channels > 1 else block[:, 0])
            _check_samples(mono, label)
            total += len(mono)
            out = resample_chunk(mono, last)
            if len(out):
                yield out
            if last:
                break
    if total < expected:
        raise AudioLoadError(f"{label}: truncated audio: the header promises {expected} samples, {total} decoded")
    _check_length(total / rate, label)


def _ffmpeg_blocks(source: Path | BinaryIO, label: str, open_error: Exception | None, rate_hz: int, block_s: float | None):
    """Blocks of a file libsndfile cannot open (or of a pipe), decoded, downmixed and resampled by ffmpeg.

    A file's sample rate is checked from its header (ffprobe) before anything is decoded.
    """
    tried = "" if open_error is None else f"libsndfile: {open_error}; "
    total = 0
    try:
        if isinstance(source, Path):
            found = ffmpeg.probe(source)
            if found is not None:
                _check_rate(found[0], label)
        samples = BLOCK_SAMPLES if block_s is None else max(1, min(BLOCK_SAMPLES, int(block_s * rate_hz)))
        for block in ffmpeg.decode(source, rate_hz, samples):
            _check_samples(block, label)
            total += len(block)
            yield block
    except ffmpeg.FfmpegError as exc:
        raise AudioLoadError(f"{label}: not a readable audio file ({tried}ffmpeg: {exc})") from None
    if total == 0:
        raise AudioLoadError(f"{label}: not a readable audio file ({tried}ffmpeg: decoded to no samples)")
    _check_length(total / rate_hz, label)


def _chunk_resampler(from_hz: int, to_hz: int):
    """``resample_chunk(samples, last)``: the streaming counterpart of :func:`resample` (soxr, high quality),
    one block at a time; ``last=True`` flushes its tail."""
    if from_hz == to_hz:
        return lambda samples, last: samples
    import soxr  # imported lazily, with the first file that needs it

    stream = soxr.ResampleStream(from_hz, to_hz, 1, dtype="float32", quality="HQ")
    return lambda samples, last: stream.resample_chunk(samples, last=last)


def audio_duration_s(path: str | os.PathLike) -> float:
    """Duration from the file header, without decoding the samples."""
    try:
        return float(soundfile.info(str(path)).duration)
    except (soundfile.LibsndfileError, RuntimeError):
        return len(load_audio(path)) / SAMPLE_RATE_HZ


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
