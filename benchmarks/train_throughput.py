"""Training throughput in audio-seconds per wall-second, for the default and reference models.

Usage: python benchmarks/train_throughput.py [--batch 16] [--seconds 7.5] [--repeats 5] [--threads N]

Each step is forward + backward + Adam on a batch of equal-length utterances
(the bucketing sampler keeps padding small) of synthetic features, with
15 characters per second. Prints the median step time, audio-s/s, the
estimated FLOP rate and the fused-kernel vs packed-sequence ratio.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import torch
from torch import nn

from common import build, median_time, models

CHARS_PER_SECOND = 15
FRAMES_PER_SECOND = 100


def train_step_fn(model, batch: int, seconds: float):
    frames, chars = int(seconds * FRAMES_PER_SECOND), int(seconds * CHARS_PER_SECOND)
    feats = torch.randn(batch, frames, 80)
    feat_lengths = torch.full((batch,), frames)
    tokens = torch.randint(2, model.vocab_size, (batch, chars))
    token_lengths = torch.full((batch,), chars)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    model.train()

    def step():
        out = model(feats, feat_lengths, tokens, token_lengths)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()

    return step


class PackedBLSTMEncoder(nn.Module):
    """The packed-sequence alternative, for the ratio: same sizes, nn.LSTM(bidirectional) on packed input."""

    def __init__(self, sizes: list[int], hidden: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.LSTM(s, hidden, batch_first=True, bidirectional=True) for s in sizes)

    def forward(self, x, lengths):
        for layer in self.layers:
            packed = nn.utils.rnn.pack_padded_sequence(x, lengths, batch_first=True, enforce_sorted=False)
            x, _ = nn.utils.rnn.pad_packed_sequence(layer(packed)[0], batch_first=True)
        return x


def encoder_ratio(batch: int, seconds: float, repeats: int) -> tuple[float, float]:
    """Seconds per forward+backward of 3 BLSTM layers: masked/fused vs packed."""
    from asr_s2s_plugins.blstm import MaskedBLSTM

    frames = int(seconds * FRAMES_PER_SECOND)
    x = torch.randn(batch, frames, 80)
    lengths = torch.full((batch,), frames) - torch.arange(batch) * 3  # unequal, as in real batches
    masked = nn.ModuleList([MaskedBLSTM(80, 256), MaskedBLSTM(512, 256), MaskedBLSTM(512, 256)])
    packed = PackedBLSTMEncoder([80, 512, 512], 256)

    def run_masked():
        y = x
        for layer in masked:
            y = layer(y, lengths)
        y.sum().backward()

    def run_packed():
        packed(x, lengths).sum().backward()

    return median_time(run_masked, repeats), median_time(run_packed, max(1, repeats // 2))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=7.5, help="utterance length")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    root = str(Path(__file__).resolve().parent.parent)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} CPUs")
    print(f"batch {args.batch} x {args.seconds:.1f} s utterances; median of {args.repeats} steps")
    for name, (config, tokens) in models(root).items():
        model = build(config, tokens)
        n_params = sum(p.numel() for p in model.parameters()) / 1e6
        step = median_time(train_step_fn(model, args.batch, args.seconds), args.repeats)
        audio = args.batch * args.seconds
        print(f"{name:10s} {n_params:5.2f}M params  {step:6.2f} s/step  {audio / step:6.1f} audio-s/s")
    fused, packed = encoder_ratio(args.batch, args.seconds, args.repeats)
    print(f"3-layer BLSTM fwd+bwd: fused+masked {fused:.2f} s, packed {packed:.2f} s -> {packed / fused:.1f}x faster")


if __name__ == "__main__":
    main()
