"""Augmentations that perturb the speaker and the level: ``gain``, ``speed``, ``pitch``, ``tempo`` and ``vtlp``.

- ``speed`` is Kaldi's speed perturbation (sox's ``speed`` effect): tempo and
  pitch change together, by resampling with torchaudio.
- ``pitch`` and ``tempo`` change one without the other, with librosa's phase
  vocoder (``librosa.effects.pitch_shift`` / ``time_stretch``).
- ``vtlp`` (vocal tract length perturbation, Jaitly & Hinton 2013) warps the
  mel filterbank's frequency axis with a drawn factor, through Kaldi's VTLN
  warp in torchaudio's fbank: a new speaker for the cost of nothing.
"""

from __future__ import annotations

import numpy as np
import torch
import torchaudio

from asr_s2s.augment import check_range, uniform
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Augmentation, Signal

SAMPLE_RATE_HZ = 16_000
PEAK_LIMIT = 1.0  # gain clips here, as a converter would


def change_speed(waveform: np.ndarray, factor: float, sample_rate_hz: int = SAMPLE_RATE_HZ) -> np.ndarray:
    """Play ``waveform`` ``factor`` times faster, like sox's ``speed`` effect (Kaldi's speed perturbation).

    Tempo and pitch change together: the samples are treated as if recorded at
    ``factor * sample_rate_hz`` and resampled back to ``sample_rate_hz``
    (torchaudio's windowed-sinc resampler).

    :param waveform: ``(S,)`` float32 samples.
    :returns: ``(about S / factor,)`` float32 samples, or ``waveform`` itself for a factor of 1.
    """
    if factor <= 0:
        raise ValueError(f"speed factor must be positive, got {factor}")
    if factor == 1.0:
        return waveform
    source_rate = round(sample_rate_hz * factor)
    out = torchaudio.functional.resample(torch.from_numpy(np.ascontiguousarray(waveform)), source_rate, sample_rate_hz)
    return out.numpy()


class Gain(Augmentation):
    """Scale by a drawn gain in dB; samples beyond full scale clip, as in a real recording.

    :param gain_db: ``[min, max]`` gain in dB.
    """

    name = "gain"
    stage = "audio"

    def __init__(self, gain_db=(-12.0, 6.0)) -> None:
        self.gain_db = check_range("gain_db", gain_db, -60.0, 40.0)

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """``(S,)`` scaled and clipped: ``(S,)``."""
        gain_db = uniform(rng, self.gain_db)
        out = np.clip(signal.waveform * np.float32(10 ** (gain_db / 20)), -PEAK_LIMIT, PEAK_LIMIT)
        return signal.with_audio(out, f"gain: {gain_db:+.1f} dB")


class Speed(Augmentation):
    """Speed perturbation: one of ``factors`` drawn uniformly (0.9 makes an utterance 11 % longer and lower).

    :param factors: speed factors in [0.5, 2], e.g. ``[0.9, 1.0, 1.1]`` (Kaldi, ESPnet).
    """

    name = "speed"
    stage = "audio"

    def __init__(self, factors=(0.9, 1.0, 1.1)) -> None:
        if isinstance(factors, (str, bytes)) or not factors or not all(
            isinstance(f, (int, float)) and not isinstance(f, bool) and 0.5 <= f <= 2.0 for f in factors
        ):
            raise ValueError(f"speed factors must lie in [0.5, 2.0], got {factors!r}")
        self.factors = tuple(float(f) for f in factors)

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """``(S,)`` played faster or slower: ``(about S / factor,)``."""
        factor = self.factors[int(rng.integers(len(self.factors)))]
        return signal.with_audio(change_speed(signal.waveform, factor), f"speed: x{factor:g}")


class Pitch(Augmentation):
    """Shift the pitch by a drawn number of semitones, keeping the tempo (librosa's phase vocoder).

    :param semitones: ``[min, max]`` shift.
    """

    name = "pitch"
    stage = "audio"

    def __init__(self, semitones=(-2.0, 2.0)) -> None:
        self.semitones = check_range("semitones", semitones, -12.0, 12.0)

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """``(S,)`` at another pitch: ``(S,)``."""
        import librosa

        steps = uniform(rng, self.semitones)
        out = librosa.effects.pitch_shift(signal.waveform, sr=SAMPLE_RATE_HZ, n_steps=steps, res_type="soxr_hq")
        return signal.with_audio(out, f"pitch: {steps:+.2f} semitones")


class Tempo(Augmentation):
    """Change the tempo by a drawn factor, keeping the pitch (librosa's phase vocoder).

    :param factor: ``[min, max]`` tempo factor; above 1 is faster (shorter).
    """

    name = "tempo"
    stage = "audio"

    def __init__(self, factor=(0.85, 1.15)) -> None:
        self.factor = check_range("factor", factor, 0.5, 2.0)

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """``(S,)`` faster or slower: ``(about S / factor,)``."""
        import librosa

        factor = uniform(rng, self.factor)
        if factor == 1.0:
            return signal.with_audio(signal.waveform, "tempo: x1")
        return signal.with_audio(librosa.effects.time_stretch(signal.waveform, rate=factor), f"tempo: x{factor:.3f}")


class VTLP(Augmentation):
    """Vocal tract length perturbation: a drawn warp factor for the mel filterbank (Kaldi's VTLN warp).

    :param warp: ``[min, max]`` warp factor; 1 leaves the filterbank as it is.
    """

    name = "vtlp"
    stage = "filterbank"

    def __init__(self, warp=(0.9, 1.1)) -> None:
        self.warp = check_range("warp", warp, 0.7, 1.3)

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """The same ``(S,)`` samples, with the filterbank warp set."""
        warp = uniform(rng, self.warp)
        return signal.with_warp(warp, f"vtlp: warp {warp:.3f}")


@hookimpl
def asr_s2s_register_augmentations():
    return [Gain, Speed, Pitch, Tempo, VTLP]
