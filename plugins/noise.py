"""Augmentation ``noise``: additive noise at a drawn signal-to-noise ratio.

Sources, one drawn per utterance: generated coloured noise (``white``, ``pink``:
1/f, ``brown``: 1/f^2), ``babble`` (several other utterances of the set spoken
at once, none by the utterance's own speaker), and ``files`` (excerpts of the
audio files in ``folder``, e.g. MUSAN's noise and music for LibriSpeech). The
mix is torchaudio's ``add_noise``, whose SNR is the ratio of the whole
utterance's energy to the noise's.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torchaudio

from asr_s2s.augment import audio_folder, check_range, read_audio, uniform
from asr_s2s.errors import AudioLoadError
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Augmentation, AugmentationContext, Signal

log = logging.getLogger(__name__)

COLOUR_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}  # power spectral density ~ 1 / f^exponent
SOURCES = (*COLOUR_EXPONENTS, "babble", "files")
PEAK_LIMIT = 0.99  # a mix that would clip is scaled down as a whole (the SNR is kept)
FILE_TRIES = 3  # noise files tried before the utterance goes without noise


def coloured_noise(samples: int, exponent: float, rng: np.random.Generator) -> np.ndarray:
    """Gaussian noise ``(samples,)`` whose power spectral density falls as ``1 / f^exponent``."""
    white = rng.standard_normal(samples)
    if exponent == 0.0:
        return white.astype(np.float32)
    spectrum = np.fft.rfft(white)
    freqs = np.fft.rfftfreq(samples)
    freqs[0] = freqs[1] if samples > 1 else 1.0  # no infinite DC gain
    return np.fft.irfft(spectrum * freqs ** (-exponent / 2), samples).astype(np.float32)


def mix_at_snr(speech: np.ndarray, noise: np.ndarray, snr_db: float) -> np.ndarray:
    """``speech + g * noise`` with ``g`` set so that the energy ratio is ``snr_db`` (torchaudio's add_noise).

    :param speech: ``(S,)``; :param noise: ``(S,)``. :returns: ``(S,)``, scaled down as a whole if it would clip.
    """
    mixed = torchaudio.functional.add_noise(
        torch.from_numpy(speech)[None], torch.from_numpy(noise)[None], torch.tensor([snr_db], dtype=torch.float32)
    )[0].numpy()
    peak = float(np.abs(mixed).max())
    return mixed * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else mixed


class AdditiveNoise(Augmentation):
    """Add one drawn noise source at a drawn SNR.

    :param snr_db: ``[min, max]`` signal-to-noise ratio in dB (uniform).
    :param sources: the sources to draw from, uniformly: ``white``, ``pink``, ``brown``, ``babble``, ``files``.
    :param folder: audio files for ``files`` (searched recursively; unreadable ones are skipped with a warning).
    :param babble_speakers: ``[min, max]`` talkers in a babble.
    """

    name = "noise"
    stage = "audio"

    def __init__(
        self, snr_db=(5.0, 25.0), sources=("white", "pink", "brown"), folder: str | None = None,
        babble_speakers=(3, 6), *, context: AugmentationContext | None = None,
    ) -> None:
        self.snr_db = check_range("snr_db", snr_db, -20.0, 100.0)
        if isinstance(sources, str) or not sources:
            raise ValueError(f"sources must be a non-empty list of {', '.join(SOURCES)}, got {sources!r}")
        unknown = [s for s in sources if s not in SOURCES]
        if unknown:
            raise ValueError(f"unknown noise source(s) {unknown}; known: {', '.join(SOURCES)}")
        self.sources = tuple(sources)
        low, high = check_range("babble_speakers", babble_speakers, 1, 50)
        self.babble_speakers = (int(low), int(high))
        self.files = audio_folder(folder, "noise") if folder is not None else []
        if "files" in self.sources and folder is None:
            raise ValueError("the 'files' source needs folder: DIR (a folder of noise recordings)")
        if folder is not None and "files" not in self.sources:
            raise ValueError(f"folder {folder} is set but 'files' is not among the sources {list(self.sources)}")
        self.utterances = list(context.utterances) if context is not None else []
        if "babble" in self.sources and len({u.speaker or u.id for u in self.utterances}) < 2:
            raise ValueError("the 'babble' source needs utterances of at least two speakers to draw talkers from")

    def _babble(self, samples: int, rng: np.random.Generator, signal: Signal) -> tuple[np.ndarray, str]:
        own = signal.utterance.speaker or signal.utterance.id if signal.utterance is not None else None
        pool = [u for u in self.utterances if (u.speaker or u.id) != own]
        talkers = int(rng.integers(self.babble_speakers[0], self.babble_speakers[1] + 1))
        total = np.zeros(samples, dtype=np.float32)
        for position in rng.choice(len(pool), size=min(talkers, len(pool)), replace=False):
            voice = read_audio(pool[int(position)].audio)
            voice = np.resize(np.roll(voice, int(rng.integers(len(voice)))), samples)  # a random start, repeated
            total += voice / max(float(np.sqrt(np.mean(voice**2))), 1e-8)  # each talker at the same level
        return total, f"babble of {talkers}"

    def _file(self, samples: int, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        for _ in range(FILE_TRIES):
            path = self.files[int(rng.integers(len(self.files)))]
            try:
                return read_audio(path, samples, rng), path.name
            except AudioLoadError as exc:
                log.warning("noise file skipped: %s", exc)
        raise AudioLoadError(f"{FILE_TRIES} noise files in a row could not be read (see the warnings)")

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """``(S,)`` speech plus ``(S,)`` noise at the drawn SNR."""
        source = self.sources[int(rng.integers(len(self.sources)))]
        snr = uniform(rng, self.snr_db)
        samples = len(signal.waveform)
        if source in COLOUR_EXPONENTS:
            noise, what = coloured_noise(samples, COLOUR_EXPONENTS[source], rng), source
        elif source == "babble":
            noise, what = self._babble(samples, rng, signal)
        else:
            noise, what = self._file(samples, rng)
        if not np.any(noise):
            return signal.with_audio(signal.waveform, f"noise: {what} was silent, none added")
        return signal.with_audio(mix_at_snr(signal.waveform, noise, snr), f"noise: {what} at {snr:.1f} dB SNR")


@hookimpl
def asr_s2s_register_augmentations():
    return [AdditiveNoise]
