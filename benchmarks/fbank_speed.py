"""Feature extraction speed: audio seconds of 80-dim fbank computed per wall second.

Usage: python benchmarks/fbank_speed.py [--seconds 10] [--repeats 20]

Times asr_s2s.features.fbank (torchaudio's Kaldi-compatible fbank) and, for
scale, audio decoding of a FLAC file plus fbank, as the DataLoader does.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
import soundfile

from common import machine_line, median_time

from asr_s2s.audio import SAMPLE_RATE_HZ, load_audio
from asr_s2s.features import fbank


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()
    print(machine_line())
    rng = np.random.default_rng(0)
    wave = (0.1 * rng.standard_normal(int(args.seconds * SAMPLE_RATE_HZ))).astype(np.float32)
    t_fbank = median_time(lambda: fbank(wave), args.repeats)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "noise.flac"
        soundfile.write(path, wave, SAMPLE_RATE_HZ, subtype="PCM_16")
        t_load = median_time(lambda: fbank(load_audio(path)), args.repeats)
        soundfile.write(path.with_suffix(".wav"), wave, 44_100 // 2)
        t_resample = median_time(lambda: fbank(load_audio(path.with_suffix(".wav"))), args.repeats)
    print(f"fbank alone:                 {args.seconds / t_fbank:8.0f} audio-s per s")
    print(f"FLAC decode + fbank:         {args.seconds / t_load:8.0f} audio-s per s")
    print(f"22.05 kHz wav resample + fbank: {args.seconds / t_resample:5.0f} audio-s per s")


if __name__ == "__main__":
    main()
