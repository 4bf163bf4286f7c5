"""An asr-s2s augmentation plugin: lose 20 ms packets of audio, as a VoIP call without concealment does.

Each packet of the utterance is lost (set to silence) independently with a
probability drawn per utterance from ``loss``; ``burst`` makes a lost packet's
successor more likely to be lost too (the bursty losses of real networks).
"""

from __future__ import annotations

import numpy as np

from asr_s2s.augment import check_range, uniform
from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Augmentation, Signal

SAMPLE_RATE_HZ = 16_000


class PacketLoss(Augmentation):
    """Zero whole packets of ``packet_ms`` at a drawn loss rate.

    :param loss: ``[min, max]`` share of packets lost.
    :param packet_ms: packet length in milliseconds (20 ms is usual for speech codecs).
    :param burst: probability that the packet after a lost one is lost too.
    """

    name = "packet_loss"
    stage = "audio"

    def __init__(self, loss=(0.02, 0.1), packet_ms: float = 20.0, burst: float = 0.3) -> None:
        self.loss = check_range("loss", loss, 0.0, 0.9)
        if not 5.0 <= packet_ms <= 200.0:
            raise ValueError(f"packet_ms must be in [5, 200], got {packet_ms}")
        if not 0.0 <= burst < 1.0:
            raise ValueError(f"burst must be in [0, 1), got {burst}")
        self.packet = round(packet_ms * SAMPLE_RATE_HZ / 1000)
        self.burst = float(burst)

    def apply(self, signal: Signal, rng: np.random.Generator) -> Signal:
        """``(S,)`` with lost packets silenced: ``(S,)``."""
        rate = uniform(rng, self.loss)
        packets = -(-len(signal.waveform) // self.packet)
        draws = rng.random(packets)
        lost = np.zeros(packets, dtype=bool)
        for i in range(packets):
            lost[i] = draws[i] < (self.burst if i and lost[i - 1] else rate)
        keep = np.repeat(~lost, self.packet)[: len(signal.waveform)]
        return signal.with_audio(signal.waveform * keep, f"packet_loss: {lost.sum()} of {packets} packets")


@hookimpl
def asr_s2s_register_augmentations():
    return [PacketLoss]
