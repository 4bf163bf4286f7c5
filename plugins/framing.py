"""Augmentation ``framing``: cut an utterance at its speech, then give it new leading and trailing silence.

Recorded and synthesised training audio usually has a little silence at both
ends; audio in the wild often starts right at the first word. A model that has
only ever heard the first kind fails on the second, so this trims the edges
(librosa's energy trim) and pads each end with a drawn length of quiet noise,
from none at all ("cut right at the speech") up to half a second.
"""

from __future__ import annotations

import numpy as np

from asr_s2s.augment import check_range, uniform
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Augmentation, Signal

SAMPLE_RATE_HZ = 16_000
TRIM_FRAME_SAMPLES = 512  # 32 ms energy frames for the trim
TRIM_HOP_SAMPLES = 128  # 8 ms: the precision of the cut
MAX_EDGE_S = 5.0


def trim_to_speech(waveform: np.ndarray, trim_db: float) -> tuple[int, int]:
    """``(start, end)`` sample indices of the speech: frames within ``trim_db`` of the loudest frame.

    :param waveform: ``(S,)`` samples.
    """
    import librosa  # slow to import; only the workers that augment need it

    _, (start, end) = librosa.effects.trim(
        waveform, top_db=trim_db, frame_length=TRIM_FRAME_SAMPLES, hop_length=TRIM_HOP_SAMPLES
    )
    return int(start), int(end)


class EdgeFraming(Augmentation):
    """Trim the edge silence, then pad ``lead_s`` and ``trail_s`` seconds of quiet noise.

    :param lead_s: ``[min, max]`` seconds of silence before the speech (uniform).
    :param trail_s: ``[min, max]`` seconds after it.
    :param tight_prob: each edge is instead cut right at the speech (0 s) with this probability,
        since files that start at the first word are common and a uniform draw rarely gives 0.
    :param trim_db: the speech is where frames are within this many dB of the loudest frame.
    :param floor_dbfs: ``[min, max]`` level (dB full scale) of the white noise that fills the new
        silence, like a recording's noise floor; ``null`` pads digital zeros.
    """

    name = "framing"
    stage = "audio"

    def __init__(
        self, lead_s=(0.0, 0.5), trail_s=(0.0, 0.5), tight_prob: float = 0.3, trim_db: float = 40.0,
        floor_dbfs=(-80.0, -55.0),
    ) -> None:
        self.lead_s = check_range("lead_s", lead_s, 0.0, MAX_EDGE_S)
        self.trail_s = check_range("trail_s", trail_s, 0.0, MAX_EDGE_S)
        if not 0.0 <= tight_prob <= 1.0:
            raise ValueError(f"tight_prob must be in [0, 1], got {tight_prob}")
        if not 10.0 <= trim_db <= 100.0:
            raise ValueError(f"trim_db must be in [10, 100] dB, got {trim_db}")
        self.tight_prob = float(tight_prob)
        self.trim_db = float(trim_db)
        self.floor_dbfs = None if floor_dbfs is None else check_range("floor_dbfs", floor_dbfs, -120.0, -20.0)

    def _edge(self, rng: np.random.Generator, bounds: tuple[float, float]) -> int:
        seconds = 0.0 if rng.random() < self.tight_prob else uniform(rng, bounds)
        return round(seconds * SAMPLE_RATE_HZ)

    def _silence(self, rng: np.random.Generator, samples: int, level_dbfs: float | None) -> np.ndarray:
        if level_dbfs is None or samples == 0:
            return np.zeros(samples, dtype=np.float32)
        return (rng.standard_normal(samples) * 10 ** (level_dbfs / 20)).astype(np.float32)

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """Trim ``(S,)`` to its speech ``(S_speech,)``, then pad: ``(lead + S_speech + trail,)``."""
        lead, trail = self._edge(rng, self.lead_s), self._edge(rng, self.trail_s)
        level = None if self.floor_dbfs is None else uniform(rng, self.floor_dbfs)
        start, end = trim_to_speech(signal.waveform, self.trim_db)
        speech = signal.waveform[start:end]
        out = np.concatenate([self._silence(rng, lead, level), speech, self._silence(rng, trail, level)])
        rate = SAMPLE_RATE_HZ
        note = (f"framing: cut {start / rate:.3f} s + {(len(signal.waveform) - end) / rate:.3f} s, "
                f"lead {lead / rate:.3f} s, trail {trail / rate:.3f} s")
        return signal.with_audio(out, note)


@hookimpl
def asr_s2s_register_augmentations():
    return [EdgeFraming]
