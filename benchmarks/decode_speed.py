"""Decoding real-time factor: greedy and beam search with scorers, batched and one utterance at a time.

Usage:
    python benchmarks/decode_speed.py [--utterances 8] [--min-seconds 5] [--max-seconds 10]
    python benchmarks/decode_speed.py --model DIR --manifest test.jsonl [--lm DIR] [--limit N]

RTF = decode wall time / audio time, encoder included, features precomputed
(lower is faster). Each figure is the median of ``--repeats`` runs.

Without --model: the scorer issue's reference model (random weights, <eos>
suppressed so that every utterance runs as many steps as it has encoder
frames, as the peers were measured) decodes random features of 8 utterances
of 5-10 s, next to ESPnet's and SpeechBrain's figures measured on this machine;
then the default recipe model, also random, with decoder-only beams.

With --model and --manifest: a trained package decodes a test set (say the
bundled test split) with beam 10 and ``decoder`` + ``ctc`` 0.3 (+ ``lm`` 0.3
with --lm), in duration-bucketed batches of --batch-seconds and one utterance
at a time, against batched greedy decoding.

Unless --no-bf16, the batched rows (with --model, every row) are timed again
with ``decode.precision`` "bf16": the encoder under bf16 autocast, the search
in fp32. That pays on CPUs with AMX (Sapphire Rapids and later); on CUDA the
search is launch-bound and bf16 changes little.
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from common import build, median_time, models

from asr_s2s.batching import BucketBatchSampler
from asr_s2s.config import DecodeConfig
from asr_s2s.dataset import SpeechDataset
from asr_s2s.manifest import read_manifest
from asr_s2s.package import load_package
from asr_s2s.registry import Registry
from asr_s2s.recognizer import Recognizer

FRAMES_PER_SECOND = 100
BF16 = ", bf16 encoder"  # label suffix of the rows decoded with decode.precision "bf16"
# Real-time factors of the peers on the reference setting, measured on this machine (scorer issue).
PEERS = {
    "beam 10 + ctc 0.3, one at a time": {"ESPnet": 0.44, "SpeechBrain": 0.17},
    "beam 10 + ctc 0.3, batch": {"ESPnet": 0.11, "SpeechBrain": 0.105},
    "greedy, batch": {"ESPnet": 0.032, "SpeechBrain": 0.026},
}


@dataclasses.dataclass(frozen=True)
class Item:
    feats: torch.Tensor  # (T, F)
    seconds: float


def random_items(count: int, min_s: float, max_s: float) -> list[Item]:
    generator = torch.Generator().manual_seed(0)
    seconds = torch.linspace(min_s, max_s, count).tolist()
    return [Item(torch.randn(int(s * FRAMES_PER_SECOND), 80, generator=generator) * 3 + 10, s) for s in seconds]


def manifest_items(path: str, limit: int | None, tokenizer) -> list[Item]:
    utterances = read_manifest(path, require_text=False)[:limit]
    dataset = SpeechDataset(utterances, tokenizer, require_text=False)
    return [Item(dataset[i].feats, u.duration) for i, u in enumerate(utterances)]


def batches(items: list[Item], batch_seconds: float | None) -> list[list[int]]:
    """All items in one batch (None), or duration-bucketed batches as ``evaluate`` forms them."""
    if batch_seconds is None:
        return [list(range(len(items)))]
    sampler = BucketBatchSampler([i.seconds for i in items], batch_seconds, shuffle=False)
    return list(sampler)


def rtf(recognizer: Recognizer, items: list[Item], groups: list[list[int]] | None, repeats: int) -> float:
    """Median RTF; ``groups`` None decodes one utterance at a time."""
    padded = []
    for group in groups or [[i] for i in range(len(items))]:
        feats = pad_sequence([items[i].feats for i in group], batch_first=True)
        lengths = torch.tensor([items[i].feats.shape[0] for i in group])
        padded.append((feats, lengths, [str(i) for i in group]))

    def run():
        for feats, lengths, ids in padded:
            recognizer.decode_features(feats, lengths, ids)

    return median_time(run, repeats) / sum(i.seconds for i in items)


def report(title: str, rows: dict[str, float], base: str, peers: dict | None = None) -> None:
    print(f"\n{title}:")
    for label, value in rows.items():
        line = f"  {label:36s} RTF {value:.4f}   {rows[base] and value / rows[base]:5.2f}x the time of '{base}'"
        for peer, figure in (peers or {}).get(label.removesuffix(BF16), {}).items():
            line += f"   {peer} {figure:.3f} ({figure / value:.1f}x slower)"
        print(line)


def reference(args, registry: Registry) -> None:
    root = str(Path(__file__).resolve().parent.parent)
    items = random_items(args.utterances, args.min_seconds, args.max_seconds)
    print(f"{len(items)} utterances, {sum(i.seconds for i in items):.1f} s of random features, "
          f"{torch.get_num_threads()} threads, {args.device}")
    suppress_eos = DecodeConfig(max_length_ratio=1.0, min_length_ratio=1.0)
    for name, (config, tokens) in models(root).items():
        model = build(config, tokens)
        greedy = dataclasses.replace(suppress_eos, beam_size=1, scorers={"decoder": 1.0}, min_length_ratio=0.0)
        beam = dataclasses.replace(suppress_eos, beam_size=args.beam_size, scorers={"decoder": 1.0})
        ctc = dataclasses.replace(beam, scorers={"decoder": 0.7, "ctc": 0.3})
        k = args.beam_size
        setups = [("greedy, batch", greedy, True), (f"beam {k}, batch", beam, True), (f"beam {k}, one at a time", beam, False)]
        if model.ctc is not None:
            setups += [(f"beam {k} + ctc 0.3, batch", ctc, True), (f"beam {k} + ctc 0.3, one at a time", ctc, False)]
        bf16 = [(label + BF16, dataclasses.replace(cfg, precision="bf16"), batched)
                for label, cfg, batched in setups if batched]
        setups += bf16 if args.bf16 else []
        rows = {
            label: rtf(Recognizer(model, cfg, registry, args.device), items, batches(items, None) if batched else None, args.repeats)
            for label, cfg, batched in setups
        }
        base = f"beam {k} + ctc 0.3, batch" if model.ctc is not None else f"beam {k}, batch"
        report(f"{name} model (random weights, <eos> suppressed)", rows, base, PEERS if name == "reference" else None)


def trained(args, registry: Registry) -> None:
    model, config = load_package(args.model, registry)
    items = manifest_items(args.manifest, args.limit, model.tokenizer)
    print(f"{Path(args.model)} on {args.manifest}: {len(items)} utterances, "
          f"{sum(i.seconds for i in items) / 60:.1f} min of audio, {torch.get_num_threads()} threads, {args.device}")
    weights = {"decoder": 1.0, "ctc": 0.3} if model.ctc is not None else {"decoder": 1.0}
    params = {}
    if args.lm:
        weights["lm"], params["lm"] = 0.3, {"path": args.lm}
    name = " + ".join(f"{n} {w:g}" for n, w in weights.items())
    beam = dataclasses.replace(config.decode, beam_size=args.beam_size, scorers=weights, scorer_params=params)
    greedy = dataclasses.replace(config.decode, beam_size=1, scorers={"decoder": 1.0}, scorer_params={})
    grouped = batches(items, args.batch_seconds)
    setups = [
        ("greedy, batch", greedy, grouped),
        (f"beam {args.beam_size}, {name}, batch", beam, grouped),
        (f"beam {args.beam_size}, {name}, one at a time", beam, None),
    ]
    rows = {}
    for precision, suffix in [("fp32", "")] + ([("bf16", BF16)] if args.bf16 else []):
        for label, cfg, groups in setups:
            recognizer = Recognizer(model, dataclasses.replace(cfg, precision=precision), registry, args.device)
            rows[label + suffix] = rtf(recognizer, items, groups, args.repeats)
    report(f"batches of at most {args.batch_seconds:g} padded seconds", rows, f"beam {args.beam_size}, {name}, batch")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained model package (default: the random reference model)")
    parser.add_argument("--manifest", help="with --model: the utterances to decode")
    parser.add_argument("--lm", help="with --model: a language-model package, fused with weight 0.3")
    parser.add_argument("--limit", type=int, help="with --model: decode only the first N utterances")
    parser.add_argument("--batch-seconds", type=float, default=600.0, help="with --model: padded seconds per batch")
    parser.add_argument("--utterances", type=int, default=8)
    parser.add_argument("--min-seconds", type=float, default=5.0)
    parser.add_argument("--max-seconds", type=float, default=10.0)
    parser.add_argument("--beam-size", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cuda (default: cpu)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the batched rows with the encoder under bf16 autocast "
                             "(decode.precision: bf16; pays on CPUs with AMX)")
    args = parser.parse_args()
    if bool(args.model) != bool(args.manifest):
        parser.error("--model and --manifest go together")
    registry = Registry()
    (trained if args.model else reference)(args, registry)


if __name__ == "__main__":
    main()
