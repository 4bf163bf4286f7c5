"""Decoding real-time factor: greedy and beam search with scorers, batched and one utterance at a time.

Usage:
    python benchmarks/decode_speed.py [--utterances 8] [--min-seconds 5] [--max-seconds 10] [--peers [--setup-peers]]
    python benchmarks/decode_speed.py --model DIR --manifest test.jsonl [--lm DIR] [--limit N]

RTF = decode wall time / audio time, encoder included, features precomputed
(lower is faster). Each figure is the median of ``--repeats`` runs. The
reference rows end with the encoder alone on the batch ("encoder only"), the
part of every row that search cannot speed up.

Without --model: the scorer issue's reference model (random weights, <eos>
suppressed so that every utterance runs as many steps as it has encoder
frames) decodes random features of 8 utterances of 5-10 s; then the default
recipe model, also random, with decoder-only beams.

With --peers, SpeechBrain decodes the same features with the same model built
from its own modules (benchmarks/peers/speechbrain_reference.py, in the
environment benchmarks/peers/setup.sh makes; --setup-peers runs that first),
right after our reference rows, with the same thread count and repeats; the
peer's RTFs and the ratios printed are from this run only.

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
import json
import os
import subprocess
import tempfile
from pathlib import Path

import torch
from torch.nn.utils.rnn import pad_sequence

from common import REFERENCE, REFERENCE_TOKENS, build, machine_line, median_time, models

from asr_s2s.batching import BucketBatchSampler
from asr_s2s.config import DecodeConfig
from asr_s2s.dataset import SpeechDataset
from asr_s2s.manifest import read_manifest
from asr_s2s.package import load_package
from asr_s2s.registry import Registry
from asr_s2s.recognizer import Recognizer

FRAMES_PER_SECOND = 100
ENCODER_ROW = "encoder only, batch"
BF16 = ", bf16 encoder"  # label suffix of the rows decoded with decode.precision "bf16"
PEERS_DIR = Path(__file__).resolve().parent / "peers"
PEER_PYTHON = PEERS_DIR / ".venv" / "bin" / "python"
PEER_SETUP = PEERS_DIR / "setup.sh"
SPEECHBRAIN_SCRIPT = PEERS_DIR / "speechbrain_reference.py"


@dataclasses.dataclass(frozen=True)
class Item:
    feats: torch.Tensor  # (T, F)
    seconds: float


def random_items(count: int, min_s: float, max_s: float) -> list[Item]:
    generator = torch.Generator().manual_seed(0)
    frames = [int(s * FRAMES_PER_SECOND) for s in torch.linspace(min_s, max_s, count).tolist()]
    return [Item(torch.randn(t, 80, generator=generator) * 3 + 10, t / FRAMES_PER_SECOND) for t in frames]


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


def rtf(recognizer: Recognizer, items: list[Item], groups: list[list[int]] | None, repeats: int,
        encoder_only: bool = False) -> float:
    """Median RTF; ``groups`` None decodes one utterance at a time; ``encoder_only`` stops after the encoder."""
    padded = []
    for group in groups or [[i] for i in range(len(items))]:
        feats = pad_sequence([items[i].feats for i in group], batch_first=True)
        lengths = torch.tensor([items[i].feats.shape[0] for i in group])
        padded.append((feats, lengths, [str(i) for i in group]))

    def run():
        for feats, lengths, ids in padded:
            if encoder_only:
                recognizer.encode(feats, lengths)
            else:
                recognizer.decode_features(feats, lengths, ids)

    return median_time(run, repeats) / sum(i.seconds for i in items)


def report(title: str, rows: dict[str, float], base: str) -> None:
    print(f"\n{title}:")
    for label, value in rows.items():
        print(f"  {label:36s} RTF {value:.4f}   {rows[base] and value / rows[base]:5.2f}x the time of '{base}'")


def reference_spec() -> dict:
    """The reference model's sizes (benchmarks/common.py's REFERENCE) as speechbrain_reference.py's ``--spec``."""
    encoder, decoder = REFERENCE.encoder, REFERENCE.decoder
    return {
        "features": REFERENCE.num_mel_bins, "encoder_hidden": encoder["hidden_size"],
        "base_layers": encoder["base_layers"], "pyramid_layers": encoder["pyramid_layers"],
        "decoder_hidden": decoder["hidden_size"], "embed_dim": decoder["embed_dim"],
        "attention_dim": decoder["attention_dim"], "conv_channels": decoder["conv_channels"],
        "conv_kernel": decoder["conv_kernel"], "tokens": REFERENCE_TOKENS,
    }


def setup_peers() -> None:
    """Create or update the peers' environment (benchmarks/peers/setup.sh)."""
    subprocess.run(["bash", str(PEER_SETUP)], check=True)


def run_speechbrain(args, items: list[Item]) -> dict:
    """Time SpeechBrain on ``items`` in its own environment; returns its JSON (rows, versions, ...)."""
    with tempfile.TemporaryDirectory() as tmp:
        features = Path(tmp) / "features.pt"
        torch.save([i.feats for i in items], features)
        command = [str(PEER_PYTHON), str(SPEECHBRAIN_SCRIPT), str(features), "--threads", str(torch.get_num_threads()),
                   "--repeats", str(args.repeats), "--beam-size", str(args.beam_size), "--spec", json.dumps(reference_spec())]
        out = subprocess.run(command, check=True, stdout=subprocess.PIPE, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def report_peer(name: str, peer: dict, rows: dict[str, float]) -> None:
    """Our rows next to the peer's rows of this run; bf16 rows face the peer's fp32 row of the same search."""
    v = peer["versions"]
    print(f"\n{name} {v[name.lower()]} (torch {v['torch']}, {peer['threads']} threads, "
          f"{peer['parameters'] / 1e6:.2f}M parameters), same features, this run:")
    print(f"  {'row':47s} {'asr-s2s RTF':>11s} {name + ' RTF':>15s}   {name} / asr-s2s")
    for label, ours in rows.items():
        theirs = peer["rows"].get(label.removesuffix(BF16))
        if theirs is not None:
            print(f"  {label:47s} {ours:11.4f} {theirs:15.4f}   {theirs / ours:6.2f}x")


def reference(args, registry: Registry) -> None:
    root = str(Path(__file__).resolve().parent.parent)
    items = random_items(args.utterances, args.min_seconds, args.max_seconds)
    print(f"{len(items)} utterances, {sum(i.seconds for i in items):.1f} s of random features, "
          f"{torch.get_num_threads()} threads, {args.device}")
    suppress_eos = DecodeConfig(max_length_ratio=1.0, min_length_ratio=1.0)
    for name, (config, tokens) in models(root).items():
        model = build(config, tokens)
        greedy = dataclasses.replace(suppress_eos, beam_size=1, scorers={"decoder": 1.0})
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
        # the encoder alone: the same math on both sides, so what no search speed-up can go below
        rows[ENCODER_ROW] = rtf(Recognizer(model, greedy, registry, args.device), items, batches(items, None),
                                args.repeats, encoder_only=True)
        base = f"beam {k} + ctc 0.3, batch" if model.ctc is not None else f"beam {k}, batch"
        report(f"{name} model (random weights, <eos> suppressed)", rows, base)
        if name == "reference" and args.peers:
            report_peer("SpeechBrain", run_speechbrain(args, items), rows)


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
    parser.add_argument("--threads", type=int, help="torch threads, the peers' too (default: torch's choice)")
    parser.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=True,
                        help="also time the batched rows with the encoder under bf16 autocast "
                             "(decode.precision: bf16; pays on CPUs with AMX)")
    parser.add_argument("--peers", action="store_true",
                        help="without --model: also time SpeechBrain on the reference model, in this run "
                             "(needs benchmarks/peers/.venv: bash benchmarks/peers/setup.sh, or --setup-peers)")
    parser.add_argument("--setup-peers", action="store_true",
                        help="create or update benchmarks/peers/.venv first (implies --peers)")
    args = parser.parse_args()
    if bool(args.model) != bool(args.manifest):
        parser.error("--model and --manifest go together")
    args.peers = args.peers or args.setup_peers
    if args.peers and (args.model or args.device != "cpu"):
        parser.error("--peers compares the reference model on the CPU only; leave out --model and --device")
    if args.peers and not args.setup_peers and not PEER_PYTHON.exists():
        parser.error(f"--peers: {PEER_PYTHON} not found; create the peers' environment with "
                     f"'bash {os.path.relpath(PEER_SETUP)}' (or add --setup-peers)")
    if args.threads:
        torch.set_num_threads(args.threads)
    print(machine_line(device=args.device))
    if args.setup_peers:
        setup_peers()
    registry = Registry()
    (trained if args.model else reference)(args, registry)


if __name__ == "__main__":
    main()
