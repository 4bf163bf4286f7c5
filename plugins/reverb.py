"""Augmentation ``reverb``: convolve with a room impulse response.

The responses are simulated with pyroomacoustics (the image-source method in
shoebox rooms whose wall absorption is set by Sabine's formula for a drawn
reverberation time), or read from a folder of measured RIR files. Simulation
costs a few hundred milliseconds per room, so each process builds a fixed bank
of ``rooms`` responses once, lazily, from ``seed``; every utterance draws one.
Each response is cut to start at its direct path and the result is scaled back
to the input's level, so the speech keeps its timing, length and loudness.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
import torchaudio

from asr_s2s.augment import audio_folder, check_range, read_audio
from asr_s2s.errors import AudioLoadError
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Augmentation, AugmentationContext, Signal

log = logging.getLogger(__name__)

SAMPLE_RATE_HZ = 16_000
WALL_MARGIN_M = 0.5  # source and microphone keep this far from every wall
MIN_DISTANCE_M = 0.5  # between source and microphone
ROOM_TRIES = 20  # draws per room before giving up on its parameters
MAX_RIR_S = 2.0  # a response is cut to this length
PEAK_LIMIT = 0.99  # a result that would clip is scaled down


def direct_path_aligned(rir: np.ndarray) -> np.ndarray:
    """``rir`` from its strongest tap (the direct path) on, scaled to a unit direct path, at most ``MAX_RIR_S`` long."""
    start = int(np.argmax(np.abs(rir)))
    out = rir[start : start + int(MAX_RIR_S * SAMPLE_RATE_HZ)]
    return (out / out[0]).astype(np.float32)


class Reverberation(Augmentation):
    """Convolve with a simulated (or recorded) room impulse response.

    :param rt60_s: ``[min, max]`` reverberation time (seconds to decay by 60 dB) of the simulated rooms.
    :param room_m: ``[[min, max] length, [min, max] width, [min, max] height]`` in metres.
    :param rooms: how many rooms the bank holds.
    :param seed: the bank's seed (default: the run's ``train.seed``); another seed gives other rooms.
    :param folder: measured RIR files to use instead of simulated rooms.
    """

    name = "reverb"
    stage = "audio"

    def __init__(
        self, rt60_s=(0.2, 0.8), room_m=((3.0, 10.0), (3.0, 8.0), (2.4, 4.0)), rooms: int = 32,
        seed: int | None = None, folder: str | None = None, *, context: AugmentationContext | None = None,
    ) -> None:
        self.rt60_s = check_range("rt60_s", rt60_s, 0.05, 3.0)
        if len(room_m) != 3:
            raise ValueError(f"room_m must hold 3 [min, max] ranges (length, width, height), got {room_m!r}")
        self.room_m = tuple(check_range(f"room_m[{i}]", r, 1.5, 100.0) for i, r in enumerate(room_m))
        if not 1 <= rooms <= 10_000:
            raise ValueError(f"rooms must be in [1, 10000], got {rooms}")
        self.rooms = int(rooms)
        self.seed = int(seed if seed is not None else context.seed if context is not None else 0)
        self.files = audio_folder(folder, "RIR") if folder is not None else []
        self._bank: dict[int, np.ndarray | None] = {}  # built lazily, in each worker process

    def _simulate(self, room: int) -> np.ndarray:
        """The response of bank room ``room``, drawn from ``(seed, room)``."""
        import pyroomacoustics as pra

        rng = np.random.default_rng([self.seed, room])
        for _ in range(ROOM_TRIES):
            dims = np.array([rng.uniform(*r) for r in self.room_m])
            rt60 = rng.uniform(*self.rt60_s) if self.rt60_s[0] < self.rt60_s[1] else self.rt60_s[0]
            source, mic = (rng.uniform(WALL_MARGIN_M, dims - WALL_MARGIN_M) for _ in range(2))
            if np.linalg.norm(source - mic) < MIN_DISTANCE_M:
                continue
            try:
                absorption, max_order = pra.inverse_sabine(rt60, dims)
            except ValueError:  # the room is too small for so long a reverberation time: draw again
                continue
            shoebox = pra.ShoeBox(dims, fs=SAMPLE_RATE_HZ, materials=pra.Material(absorption), max_order=max_order)
            shoebox.add_source(source)
            shoebox.add_microphone(mic)
            shoebox.compute_rir()
            return direct_path_aligned(np.asarray(shoebox.rir[0][0], dtype=np.float64))
        raise RuntimeError(f"no valid room in {ROOM_TRIES} draws for rt60_s {self.rt60_s} and room_m {self.room_m}")

    def _recorded(self, index: int) -> np.ndarray | None:
        try:
            return direct_path_aligned(read_audio(self.files[index]).astype(np.float64))
        except AudioLoadError as exc:
            log.warning("RIR file skipped: %s", exc)
            return None

    def response(self, rng: np.random.Generator) -> tuple[np.ndarray, str]:
        """A drawn response ``(R,)`` starting at its unit direct path, and its name."""
        count = len(self.files) or self.rooms
        for _ in range(3):
            index = int(rng.integers(count))
            if index not in self._bank:
                self._bank[index] = self._recorded(index) if self.files else self._simulate(index)
            if self._bank[index] is not None:
                return self._bank[index], self.files[index].name if self.files else f"room {index}"
        raise AudioLoadError("3 RIR files in a row could not be read (see the warnings)")

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """``(S,)`` convolved with a response, cut to ``(S,)``, at the input's RMS level."""
        rir, what = self.response(rng)
        speech = torch.from_numpy(signal.waveform)
        wet = torchaudio.functional.fftconvolve(speech, torch.from_numpy(rir))[: len(speech)].numpy()
        gain = np.sqrt(np.mean(signal.waveform.astype(np.float64) ** 2) / max(np.mean(wet.astype(np.float64) ** 2), 1e-20))
        wet = wet * gain
        peak = float(np.abs(wet).max())
        return signal.with_audio(wet * (PEAK_LIMIT / peak) if peak > PEAK_LIMIT else wet, f"reverb: {what}")


@hookimpl
def asr_s2s_register_augmentations():
    return [Reverberation]
