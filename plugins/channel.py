"""Augmentations of the transmission channel: ``telephone`` (narrow band, G.711 companding) and ``codec`` (lossy MP3/Opus).

``codec`` encodes and decodes in memory with libsndfile (through soundfile):
LAME for MP3 at a constant bit rate, libopus in Ogg for Opus. No subprocess
runs per utterance (an ffmpeg round trip costs 130-220 ms here, libsndfile's
MP3 about 25 ms). MP3 decoding adds the encoder's delay and frame padding, so
the decoded audio is re-aligned to the input by cross-correlation and cut to
the input's length.
"""

from __future__ import annotations

import io

import numpy as np
import torch
import torchaudio

from asr_s2s.augment import check_range, uniform
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Augmentation, Signal

SAMPLE_RATE_HZ = 16_000
MAX_CODEC_DELAY_SAMPLES = 4_096  # MP3 adds 1105 samples of encoder delay at 16 kHz; Opus' pre-skip is removed
# libsndfile maps its compression level in [0, 1] linearly onto the bit rate (mpeg_l3_encode.c): at 16 kHz,
# MPEG-2 Layer III, kbps = 160 - level * 152. Opus' mapping, measured on speech with libsndfile 1.2:
# about 6 + 258 * (1 - level) kbps.
MP3_KBPS_RANGE = (16.0, 160.0)  # 8 kbps (level 1.0) is refused by LAME at 16 kHz
OPUS_KBPS_RANGE = (8.0, 256.0)
FORMATS = {
    "mp3": ("MP3", "MPEG_LAYER_III", lambda kbps: (160.0 - kbps) / 152.0),
    "opus": ("OGG", "OPUS", lambda kbps: 1.0 - (kbps - 6.0) / 258.0),
}
KBPS_RANGES = {"mp3": MP3_KBPS_RANGE, "opus": OPUS_KBPS_RANGE}


def fit_length(audio: np.ndarray, samples: int) -> np.ndarray:
    """``audio`` cut or zero-padded to ``samples``."""
    return audio[:samples] if len(audio) >= samples else np.pad(audio, (0, samples - len(audio)))


def codec_delay(decoded: np.ndarray, original: np.ndarray) -> int:
    """The lag in ``[0, MAX_CODEC_DELAY_SAMPLES]`` at which ``decoded`` best matches ``original``."""
    from scipy.signal import correlate

    span = min(len(original), 4 * SAMPLE_RATE_HZ)  # the first seconds fix the lag
    padded = np.pad(decoded, (0, max(0, span + MAX_CODEC_DELAY_SAMPLES - len(decoded))))
    scores = correlate(padded[: span + MAX_CODEC_DELAY_SAMPLES], original[:span], mode="valid", method="fft")
    return int(np.argmax(scores))


def round_trip(waveform: np.ndarray, codec: str, kbps: float) -> tuple[np.ndarray, float]:
    """Encode ``(S,)`` with ``codec`` at about ``kbps`` and decode: the aligned ``(S,)`` audio and the real bit rate."""
    import soundfile

    container, subtype, level_of = FORMATS[codec]
    level = float(np.clip(level_of(kbps), 0.0, 0.99))
    buffer = io.BytesIO()
    extra = {"bitrate_mode": "CONSTANT"} if codec == "mp3" else {}
    soundfile.write(buffer, waveform, SAMPLE_RATE_HZ, format=container, subtype=subtype, compression_level=level, **extra)
    real_kbps = buffer.tell() * 8 / (len(waveform) / SAMPLE_RATE_HZ) / 1000
    buffer.seek(0)
    decoded, _ = soundfile.read(buffer, dtype="float32")
    if decoded.ndim > 1:
        decoded = decoded.mean(axis=1)
    delay = codec_delay(decoded, waveform) if len(decoded) != len(waveform) else 0
    return fit_length(decoded[delay:], len(waveform)), real_kbps


class Codec(Augmentation):
    """A lossy codec round trip at a drawn bit rate.

    :param codecs: draw from these, uniformly: ``mp3`` (16-160 kbps), ``opus`` (8-256 kbps).
    :param kbps: ``[min, max]`` bit rate in kbit/s (uniform; each codec clips it to its own range).
    """

    name = "codec"
    stage = "audio"

    def __init__(self, codecs=("mp3", "opus"), kbps=(16.0, 48.0)) -> None:
        if isinstance(codecs, str) or not codecs or any(c not in FORMATS for c in codecs):
            raise ValueError(f"codecs must be a non-empty list of {', '.join(FORMATS)}, got {codecs!r}")
        self.codecs = tuple(codecs)
        self.kbps = check_range("kbps", kbps, 6.0, 320.0)

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """``(S,)`` through the codec and back: ``(S,)``."""
        codec = self.codecs[int(rng.integers(len(self.codecs)))]
        low, high = KBPS_RANGES[codec]
        kbps = float(np.clip(uniform(rng, self.kbps), low, high))
        audio, real_kbps = round_trip(np.clip(signal.waveform, -1.0, 1.0), codec, kbps)
        return signal.with_audio(audio, f"codec: {codec} {real_kbps:.0f} kbps")


class Telephone(Augmentation):
    """A narrow-band telephone channel: band-pass, 8 kHz sampling, optional G.711 mu-law, back to 16 kHz.

    torchaudio's biquads give the band edges, its windowed-sinc resampler the 8 kHz round trip, and its
    mu-law functions the 8-bit companding.

    :param band_hz: ``[low, high]`` edges of the pass band.
    :param mu_law: quantise to 8-bit mu-law (G.711) at 8 kHz.
    """

    name = "telephone"
    stage = "audio"
    NARROW_RATE_HZ = 8_000

    def __init__(self, band_hz=(300.0, 3400.0), mu_law: bool = True) -> None:
        self.band_hz = check_range("band_hz", band_hz, 20.0, self.NARROW_RATE_HZ / 2)
        self.mu_law = bool(mu_law)

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """``(S,)`` through the channel: ``(S,)``."""
        functional = torchaudio.functional
        audio = torch.from_numpy(signal.waveform)
        audio = functional.highpass_biquad(audio, SAMPLE_RATE_HZ, self.band_hz[0])
        audio = functional.lowpass_biquad(audio, SAMPLE_RATE_HZ, self.band_hz[1])
        narrow = functional.resample(audio, SAMPLE_RATE_HZ, self.NARROW_RATE_HZ).clamp(-1.0, 1.0)
        if self.mu_law:
            narrow = functional.mu_law_decoding(functional.mu_law_encoding(narrow, 256), 256)
        wide = functional.resample(narrow, self.NARROW_RATE_HZ, SAMPLE_RATE_HZ).numpy()
        note = f"telephone: {self.band_hz[0]:.0f}-{self.band_hz[1]:.0f} Hz" + (", mu-law" if self.mu_law else "")
        return signal.with_audio(fit_length(wide, len(signal.waveform)), note)


@hookimpl
def asr_s2s_register_augmentations():
    return [Codec, Telephone]
