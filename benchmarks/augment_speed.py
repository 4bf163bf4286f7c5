"""Augmentation cost: milliseconds per audio-second of each built-in augmentation, next to the fbank's.

Usage: python benchmarks/augment_speed.py [--config recipes/mini_librispeech/conf/las_mini.yaml] [--seconds 3]
                                          [--repeats 20]

Each entry of the config's train.augment list is timed alone (prob 1) on a
synthetic utterance of --seconds (a chirp in pink noise), after warm-up
calls that build any bank (reverb's simulated rooms). Babble needs other
utterances: it draws from copies of the same utterance under other speakers.
The last block weighs each entry by its prob: the expected augmentation cost
of one training utterance, as a ratio to its fbank (the work the data workers
do anyway) and to the recipe's training step (--train-audio-s-per-s, measured
by train_throughput.py).
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from common import machine_line, median_time

from asr_s2s.augment import AugmentationChain
from asr_s2s.audio import SAMPLE_RATE_HZ
from asr_s2s.config import load_config
from asr_s2s.features import fbank
from asr_s2s.interfaces import AugmentationContext, Signal
from asr_s2s.manifest import Utterance
from asr_s2s.registry import Registry

REPO = Path(__file__).resolve().parents[1]
WARM_UP_CALLS = 60  # enough draws to build every room of a 16-room reverb bank (all but 1 in 250 runs)


def utterance(seconds: float) -> np.ndarray:
    """A speech-like test signal: a 150-3000 Hz chirp over quiet pink noise."""
    t = np.arange(int(seconds * SAMPLE_RATE_HZ)) / SAMPLE_RATE_HZ
    chirp = 0.3 * np.sin(2 * np.pi * (150 + 950 * t / seconds) * t)
    spectrum = np.fft.rfft(np.random.default_rng(0).standard_normal(len(t)))
    pink = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.fft.rfftfreq(len(t)), 1e-3)), len(t))
    return (chirp + 0.01 * pink / pink.std()).astype(np.float32)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(REPO / "recipes" / "mini_librispeech" / "conf" / "las_mini.yaml"))
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--train-audio-s-per-s", type=float, default=100.0,
                        help="training throughput to compare with (audio-s per s; default: 100, the recipe model's)")
    args = parser.parse_args()
    print(machine_line())
    entries = load_config(args.config).train.augment
    wave = utterance(args.seconds)
    registry = Registry()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "u.flac"
        soundfile.write(path, wave, SAMPLE_RATE_HZ)
        others = tuple(Utterance(f"s{k}-u", str(path), args.seconds, "", f"s{k}") for k in range(8))
        context = AugmentationContext(utterances=others)
        signal = Signal(wave, utterance=others[0])
        t_fbank = median_time(lambda: fbank(wave), args.repeats)
        per_s = lambda t: t / args.seconds * 1000  # noqa: E731 - ms per audio-second
        print(f"{'entry':<28} {'ms per audio-s':>15} {'x fbank':>8}")
        print(f"{'fbank (reference)':<28} {per_s(t_fbank):15.2f} {1.0:8.2f}")
        expected = 0.0
        for position, entry in enumerate(entries):
            entry = dict(entry)
            prob = float(entry.pop("prob", 1.0))
            step = AugmentationChain.from_config([entry], registry, context).steps[0].augmentation
            rng = np.random.default_rng(position)
            if step.stage == "features":
                feats = fbank(wave)
                run = lambda: step.apply_features(feats, rng)  # noqa: E731
            else:
                run = lambda: step.apply(signal, rng)  # noqa: E731
            for _ in range(WARM_UP_CALLS):  # builds banks (reverb's rooms), imports libraries
                run()
            seconds = median_time(run, args.repeats)
            expected += prob * seconds
            label = f"{entry['name']} (p={prob:g})"
            print(f"{label:<28} {per_s(seconds):15.2f} {seconds / t_fbank:8.2f}")
    train_s = args.seconds / args.train_audio_s_per_s
    print(f"\nexpected augmentation cost per utterance: {per_s(expected):.2f} ms per audio-s = "
          f"{expected / t_fbank:.2f}x its fbank = {expected / train_s:.1%} of its training step "
          f"at {args.train_audio_s_per_s:g} audio-s/s")


if __name__ == "__main__":
    main()
