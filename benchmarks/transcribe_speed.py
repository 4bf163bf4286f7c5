"""Transcribing long recordings: real-time factor, and peak memory as the recording grows.

Usage:
    python benchmarks/transcribe_speed.py [--model DIR] [--rtf-minutes 10] [--memory-minutes 1 10 30]
                                          [--batch-seconds S] [--threads N]

Recordings are made by laying the fixture utterances (data/fixtures) end to
end with 0.4-1.2 s pauses over -60 dBFS noise, as 16 kHz FLAC files, and are
transcribed from the file exactly as ``asr-s2s transcribe`` does: streamed,
cut at pauses, decoded in batches of ``--batch-seconds`` padded audio, with
word times from CTC forced alignment.

RTF = transcription wall time / audio duration (model loading excluded) for
the ``--rtf-minutes`` recording, greedy (beam 1, decoder alone) and beam 10
with the package's scorers. Memory: each recording length is transcribed
(greedy) in a fresh process, which reports its RSS after loading the model and
its peak RSS (``ru_maxrss``); the difference is what the recording costs.

The model defaults to the mini_librispeech recipe's package when it exists;
otherwise the recipe config with random weights (whose transcripts are
garbage and whose greedy search runs to its length limit: slower than a
trained model's).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "data" / "fixtures" / "LibriSpeech" / "test-fixture"
RECIPE_MODEL = ROOT / "recipes" / "mini_librispeech" / "exp" / "las_mini_4.5h" / "model"
SAMPLE_RATE_HZ = 16_000


def write_recording(path: Path, minutes: float, seed: int = 0) -> float:
    """Write fixture utterances with pauses, block by block, until ``minutes``; returns the duration in seconds."""
    rng = np.random.default_rng(seed)
    utterances = [soundfile.read(f, dtype="float32")[0] for f in sorted(FIXTURES.rglob("*.flac"))]
    total = int(minutes * 60 * SAMPLE_RATE_HZ)
    written = 0
    with soundfile.SoundFile(path, "w", SAMPLE_RATE_HZ, 1, format="FLAC") as out:
        while written < total:
            pause = np.zeros(int(rng.uniform(0.4, 1.2) * SAMPLE_RATE_HZ), np.float32)
            block = np.concatenate([pause, utterances[rng.integers(len(utterances))]])[: total - written]
            out.write(block + rng.normal(0, 1e-3, len(block)).astype(np.float32))
            written += len(block)
    return written / SAMPLE_RATE_HZ


def rss_mb() -> float:
    """Current resident set size in MiB (Linux)."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def load(model_dir: str | None):
    import asr_s2s
    from asr_s2s.config import load_config
    from asr_s2s.features import CMVNStats
    from asr_s2s.model import ASRModel
    from asr_s2s.registry import Registry
    from asr_s2s.tokenizer import CharTokenizer
    from asr_s2s.transcriber import TranscribeOptions, Transcriber

    if model_dir:
        return asr_s2s.load_model(model_dir)
    import torch

    config = load_config(ROOT / "recipes" / "mini_librispeech" / "conf" / "las_mini.yaml")
    torch.manual_seed(0)
    registry = Registry()
    model = ASRModel(config.model, CharTokenizer(), CMVNStats.identity(config.model.num_mel_bins), registry)
    return Transcriber(model, registry, TranscribeOptions(decode=config.decode), model_id="random")


def child(args) -> None:
    """Transcribe one file; print one JSON line of timings and memory."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    transcriber = load(args.model)
    changes = {"beam_size": args.beam}
    if args.beam == 1:
        changes["scorers"] = {name: 0.0 for name in transcriber.options.decode.scorers if name != "decoder"}
    if args.batch_seconds:
        changes["batch_seconds"] = args.batch_seconds
    transcriber.transcribe(soundfile.read(args.child, frames=10 * SAMPLE_RATE_HZ)[0], SAMPLE_RATE_HZ, **changes)  # warm-up
    loaded = rss_mb()
    start = time.perf_counter()
    result = transcriber.transcribe(args.child, **changes)
    wall = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps({"audio_s": result.duration, "wall_s": wall, "rss_loaded_mb": loaded, "peak_rss_mb": peak,
                      "segments": len(result.segments), "words": len(result.words),
                      "batch_seconds": result.options.decode.batch_seconds, "scorers": result.options.decode.scorers}))


def run_child(args, path: Path, beam: int) -> dict:
    command = [sys.executable, __file__, "--child", str(path), "--beam", str(beam)]
    for flag, value in (("--model", args.model), ("--batch-seconds", args.batch_seconds), ("--threads", args.threads)):
        if value:
            command += [flag, str(value)]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=str(RECIPE_MODEL) if RECIPE_MODEL.is_dir() else None,
                        help="model package (default: the mini_librispeech recipe's, if built)")
    parser.add_argument("--rtf-minutes", type=float, default=10.0)
    parser.add_argument("--memory-minutes", type=float, nargs="+", default=[1.0, 10.0, 30.0])
    parser.add_argument("--batch-seconds", type=float, help="padded audio seconds per batch (default: the package's)")
    parser.add_argument("--threads", type=int,
                        help="torch threads (default: torch's choice; use 1 when other processes share the cores, "
                             "where OpenMP spin-waits can slow small ops tenfold)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--beam", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    from common import machine_line

    print(machine_line(threads=args.threads))
    print(f"model: {args.model or 'recipe config, random weights'}")
    with tempfile.TemporaryDirectory() as tmp:
        files = {m: Path(tmp) / f"{m:g}min.flac" for m in sorted({args.rtf_minutes, *args.memory_minutes})}
        for minutes, path in files.items():
            write_recording(path, minutes)
        print(f"\nreal-time factor, {args.rtf_minutes:g}-minute recording (lower is faster)")
        for beam, label in ((1, "greedy"), (10, "beam 10")):
            r = run_child(args, files[args.rtf_minutes], beam)
            print(f"  {label:8s} RTF {r['wall_s'] / r['audio_s']:.4f}  ({r['wall_s']:.1f} s for {r['audio_s']:.0f} s; "
                  f"{r['segments']} segments, {r['words']} words; scorers {r['scorers']}; batch {r['batch_seconds']:g} s)")
        print("\npeak memory by recording length (greedy, fresh process each)")
        print("  minutes  RSS after load  peak RSS  growth")
        for minutes in args.memory_minutes:
            r = run_child(args, files[minutes], 1)
            print(f"  {minutes:7g}  {r['rss_loaded_mb']:11.0f} MB  {r['peak_rss_mb']:5.0f} MB  {r['peak_rss_mb'] - r['rss_loaded_mb']:+5.0f} MB")


if __name__ == "__main__":
    main()
