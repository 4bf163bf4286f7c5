"""Training throughput in audio-seconds per wall-second, peak memory, FLOPs and the share of the matmul peak.

Usage: python benchmarks/train_throughput.py [--models default,reference,las_100h] [--device cpu|cuda]
           [--batch 16] [--seconds 7.5] [--repeats 5] [--threads N] [--no-packed]

Each step is forward + backward + Adam on a batch of equal-length utterances
(the bucketing sampler keeps padding small) of synthetic features, with
15 characters per second; on CUDA under bf16 autocast with cuDNN's LSTM, as
``asr-s2s train`` runs there. Each model is measured in a fresh process, so
that its peak memory is its own: the peak resident set (``getrusage``) on the
CPU, the peak allocated by torch on CUDA.

FLOPs per audio-second of training are counted for the measured utterance
length: ``torch.utils.flop_counter.FlopCounterMode`` sees every matrix product
except those inside ``nn.LSTM`` (oneDNN and cuDNN run them as single opaque
kernels), so the BLSTM layers are counted analytically: per frame and
direction, ``2 * 4H * (I + H)`` forward, times 3 for forward + backward. The
share of the peak divides the FLOP rate reached by the rate of large matrix
products measured on the same device (fp32 2048^3 on the CPU, bf16 8192^3 on
CUDA). Also prints the fused-kernel vs packed-sequence BLSTM ratio.
"""

from __future__ import annotations

import argparse
import multiprocessing
import resource
import time
from pathlib import Path

import torch
from torch import nn

from common import build, machine_line, median_time, models

CHARS_PER_SECOND = 15
FRAMES_PER_SECOND = 100


def synthetic_batch(model, batch: int, seconds: float, device: torch.device):
    frames, chars = int(seconds * FRAMES_PER_SECOND), int(seconds * CHARS_PER_SECOND)
    feats = torch.randn(batch, frames, 80, device=device)
    feat_lengths = torch.full((batch,), frames, device=device)
    tokens = torch.randint(2, model.vocab_size, (batch, chars), device=device)
    token_lengths = torch.full((batch,), chars, device=device)
    return feats, feat_lengths, tokens, token_lengths


def train_step_fn(model, batch: int, seconds: float, device: torch.device = torch.device("cpu")):
    inputs = synthetic_batch(model, batch, seconds, device)
    optimizer = torch.optim.Adam(model.parameters(), 1e-4)
    model.train()
    bf16 = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            out = model(*inputs)
        optimizer.zero_grad()
        out.loss.backward()
        optimizer.step()
        if bf16:
            torch.cuda.synchronize()

    return step


def lstm_forward_flops(model, seconds: float) -> float:
    """Forward FLOPs of the encoder's ``nn.LSTM`` layers for one utterance of ``seconds``."""
    total = 0.0
    frames = int(seconds * FRAMES_PER_SECOND)
    encoder = model.encoder
    for i, layer in enumerate(encoder.layers):
        if i >= getattr(encoder, "base_layers", len(encoder.layers)):
            frames = (frames + 1) // 2
        for lstm in layer.modules():
            if isinstance(lstm, nn.LSTM):
                h, i_size = lstm.hidden_size, lstm.input_size
                total += frames * 2 * 4 * h * (i_size + h) * lstm.num_layers * (2 if lstm.bidirectional else 1)
    return total


def train_flops_per_audio_second(model, seconds: float, device: torch.device) -> float:
    """FLOPs of one training step (forward + backward) per audio-second, utterances of ``seconds``."""
    from torch.utils.flop_counter import FlopCounterMode

    batch = 2
    inputs = synthetic_batch(model, batch, seconds, device)
    model.train()
    with FlopCounterMode(display=False) as counter:
        model(*inputs).loss.backward()
    seen = counter.get_total_flops()
    with FlopCounterMode(display=False) as counter:  # what the counter saw of the encoder (nn.LSTM: nothing)
        states, _ = model.encoder(inputs[0], inputs[1])
        states.sum().backward()
    model.zero_grad(set_to_none=True)
    encoder_seen = counter.get_total_flops()
    return (seen - encoder_seen + 3 * batch * lstm_forward_flops(model, seconds)) / (batch * seconds)


def matmul_peak_flops(device: torch.device, repeats: int = 10) -> float:
    """Best rate of large matrix products: fp32 2048^3 on the CPU, bf16 8192^3 on CUDA."""
    n, dtype = (8192, torch.bfloat16) if device.type == "cuda" else (2048, torch.float32)
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(10 if device.type == "cuda" else 1):
            torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        best = min(best, (time.perf_counter() - start) / (10 if device.type == "cuda" else 1))
    return 2 * n**3 / best


def measure(name: str, args: argparse.Namespace) -> dict:
    """One model's figures, measured in this (fresh) process."""
    if args.threads:
        torch.set_num_threads(args.threads)
    root = str(Path(__file__).resolve().parent.parent)
    device = torch.device(args.device)
    config, tokens = models(root, (name,))[name]
    model = build(config, tokens).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # torch and the model, before training
    flops = train_flops_per_audio_second(model, args.seconds, device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    step = median_time(train_step_fn(model, args.batch, args.seconds, device), args.repeats)
    peak = torch.cuda.max_memory_allocated() if device.type == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"name": name, "params": n_params, "step_s": step, "audio_per_s": args.batch * args.seconds / step,
            "peak_bytes": peak, "baseline_bytes": baseline, "flops_per_audio_s": flops, "reduction": model.encoder.time_reduction}


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
    from asr_s2s.layers import MaskedBLSTM

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


def _peak_in_child(args: argparse.Namespace) -> float:
    if args.threads:
        torch.set_num_threads(args.threads)
    return matmul_peak_flops(torch.device(args.device))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="default,reference,las_100h", help="comma-separated: default, reference, las_100h, las_960h")
    parser.add_argument("--device", default="cpu", help="cpu or cuda")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=7.5, help="utterance length")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--no-packed", action="store_true", help="skip the fused vs packed BLSTM ratio")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line(device=args.device))
    print(f"batch {args.batch} x {args.seconds:.1f} s utterances; median of {args.repeats} steps"
          f"{'; bf16 autocast, cuDNN LSTM' if args.device.startswith('cuda') else '; fp32'}")
    context = multiprocessing.get_context("spawn")  # a fresh process per figure: peak memory is the model's own
    with context.Pool(1, maxtasksperchild=1) as pool:
        peak = pool.apply(_peak_in_child, (args,))
    unit = "bf16 8192^3" if args.device.startswith("cuda") else "fp32 2048^3"
    print(f"matmul peak ({unit}): {peak / 1e9:.1f} GFLOP/s")
    for name in args.models.split(","):
        with context.Pool(1, maxtasksperchild=1) as pool:
            r = pool.apply(measure, (name, args))
        rate = r["flops_per_audio_s"] * r["audio_per_s"]
        memory = "peak GPU memory" if args.device.startswith("cuda") else f"peak RSS (from {r['baseline_bytes'] / 2**20:.0f})"
        print(f"{name:10s} {r['params'] / 1e6:5.2f}M params {r['reduction']}x  {r['step_s']:6.2f} s/step  "
              f"{r['audio_per_s']:7.1f} audio-s/s  {memory} {r['peak_bytes'] / 2**20:6.0f} MiB  "
              f"{r['flops_per_audio_s'] / 1e9:5.2f} GFLOP/audio-s  {rate / 1e9:7.1f} GFLOP/s = {100 * rate / peak:4.1f}% of matmul peak")
    if not args.no_packed and not args.device.startswith("cuda"):
        fused, packed = encoder_ratio(args.batch, args.seconds, args.repeats)
        print(f"3-layer BLSTM fwd+bwd: fused+masked {fused:.2f} s, packed {packed:.2f} s -> {packed / fused:.1f}x faster")


if __name__ == "__main__":
    main()
