"""Decoding real-time factor: greedy and beam search, batched and one utterance at a time.

Usage: python benchmarks/decode_speed.py [--model DIR] [--utterances 8] [--min-seconds 5] [--max-seconds 10]

RTF = decode wall time / audio time, encoder included (lower is faster).

Without --model it decodes random features with two randomly initialised
models: the default recipe model, and the scorer issue's reference model with
<eos> suppressed (max_length_ratio 1 and min_length_ratio 1), so that every
utterance runs as many steps as it has encoder frames, as the peers were
measured. With --model it decodes that trained package on the same features.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch

from common import build, median_time, models

from asr_s2s.config import DecodeConfig
from asr_s2s.package import load_package
from asr_s2s.plugins import Registry
from asr_s2s.recognizer import Recognizer


def features(count: int, min_s: float, max_s: float) -> tuple[torch.Tensor, torch.Tensor, float]:
    generator = torch.Generator().manual_seed(0)
    seconds = torch.linspace(min_s, max_s, count)
    lengths = (seconds * 100).long()
    feats = torch.randn(count, int(lengths.max()), 80, generator=generator) * 3 + 10
    return feats, lengths, float(seconds.sum())


def rtf(recognizer: Recognizer, feats, lengths, audio_s: float, batched: bool, repeats: int) -> float:
    ids = [str(i) for i in range(len(lengths))]

    def run():
        if batched:
            recognizer.decode_features(feats, lengths, ids)
        else:
            for i in range(len(lengths)):
                recognizer.decode_features(feats[i : i + 1, : lengths[i]], lengths[i : i + 1], ids[i : i + 1])

    return median_time(run, repeats) / audio_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained model package (default: random models)")
    parser.add_argument("--utterances", type=int, default=8)
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--beam-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    registry = Registry()
    feats, lengths, audio_s = features(args.utterances, args.min_seconds, args.max_seconds)
    print(f"{args.utterances} utterances, {audio_s:.1f} s of audio, {torch.get_num_threads()} threads; RTF (lower is faster)")
    if args.model:
        model, config = load_package(args.model, registry)
        setups = {Path(args.model).name: (model, config.decode)}
    else:
        root = str(Path(__file__).resolve().parent.parent)
        suppress_eos = DecodeConfig(max_length_ratio=1.0, min_length_ratio=1.0)
        setups = {name: (build(cfg, tokens), suppress_eos) for name, (cfg, tokens) in models(root).items()}
    for name, (model, decode) in setups.items():
        greedy = dataclasses.replace(decode, beam_size=1, scorers={"decoder": 1.0}, min_length_ratio=0.0)
        beam = dataclasses.replace(decode, beam_size=args.beam_size, scorers={"decoder": 1.0})
        rows = {}
        for label, cfg, batched in [
            ("greedy, batch", greedy, True),
            ("greedy, one at a time", greedy, False),
            (f"beam {args.beam_size}, batch", beam, True),
            (f"beam {args.beam_size}, one at a time", beam, False),
        ]:
            rows[label] = rtf(Recognizer(model, cfg, registry), feats, lengths, audio_s, batched, args.repeats)
        base = rows[f"beam {args.beam_size}, batch"]
        print(f"\n{name}:")
        for label, value in rows.items():
            print(f"  {label:28s} RTF {value:.4f}   ({value / base:.2f}x the batched beam's time)")


if __name__ == "__main__":
    main()
