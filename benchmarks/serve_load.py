"""Load on ``asr-s2s serve``: requests per second and latency with 1, 4 and 16 concurrent clients, against
``asr-s2s transcribe`` once per file (process start included) and one ``transcribe`` of all the files.

Usage:
    python benchmarks/serve_load.py [--model DIR] [--files 32] [--seconds 5] [--clients 1 4 16] [--repeats 3]
                                    [--per-file 6] [--beam-size 1] [--threads 1]

The files are fixture utterances laid end to end with pauses over -60 dBFS noise (16 kHz FLAC, ``--seconds``
long, each with its own seed). The server runs in its own process (``asr-s2s serve --port 0``); each client
is a thread that posts the next file as soon as its previous answer came (a closed loop) until every file is
transcribed once; a run's requests/s is files / wall time, its latencies are each request's round trip. Each
client count runs ``--repeats`` times and the medians are printed. The baselines are the console command:
``--per-file`` runs of ``asr-s2s transcribe FILE`` (median seconds, process start and model load included),
and ``--repeats`` runs of ``asr-s2s transcribe`` over all the files at once. Every run uses the same decode
options (``--beam-size``; the model's scorers) and ``--threads`` torch threads.

The model defaults to the mini_librispeech recipe's package when it exists; otherwise the recipe config
(las_mini.yaml) with random weights is saved as a package (its transcripts are garbage, and its search runs
to the length limit: slower than a trained model's).
"""

from __future__ import annotations

import argparse
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests
import soundfile

ROOT = Path(__file__).resolve().parents[1]
FIXTURES = ROOT / "data" / "fixtures" / "LibriSpeech" / "test-fixture"
RECIPE_MODEL = ROOT / "recipes" / "mini_librispeech" / "exp" / "las_mini_4.5h" / "model"
RATE = 16_000


def write_files(folder: Path, count: int, seconds: float) -> list[Path]:
    utterances = [soundfile.read(f, dtype="float32")[0] for f in sorted(FIXTURES.rglob("*.flac"))]
    paths = []
    for seed in range(count):
        rng = np.random.default_rng(seed)
        parts, total = [], 0
        while total < seconds * RATE:
            parts += [np.zeros(int(rng.uniform(0.3, 0.8) * RATE), np.float32), utterances[rng.integers(len(utterances))]]
            total += len(parts[-2]) + len(parts[-1])
        wave = np.concatenate(parts)[: int(seconds * RATE)]
        paths.append(folder / f"{seed:03d}.flac")
        soundfile.write(paths[-1], wave + rng.normal(0, 1e-3, len(wave)).astype(np.float32), RATE)
    return paths


def random_recipe_package(folder: Path) -> Path:
    import torch

    from asr_s2s.config import load_config
    from asr_s2s.features import CMVNStats
    from asr_s2s.model import ASRModel
    from asr_s2s.package import save_package
    from asr_s2s.registry import Registry
    from asr_s2s.tokenizer import CharTokenizer

    config = load_config(ROOT / "recipes" / "mini_librispeech" / "conf" / "las_mini.yaml")
    torch.manual_seed(0)
    registry = Registry()
    model = ASRModel(config.model, CharTokenizer(), CMVNStats.identity(config.model.num_mel_bins), registry).eval()
    return save_package(model, config.decode, folder / "las_mini_random", registry)


def start_server(model: Path, options: list[str], log: Path) -> tuple[subprocess.Popen, str]:
    """``asr-s2s serve`` on a free port; returns the process and its URL once it answers /health."""
    out = open(log, "w")
    server = subprocess.Popen([sys.executable, "-m", "asr_s2s", "serve", "--model", str(model), "--port", "0",
                               "--queue-size", "64", *options], stderr=out, stdout=out)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        found = re.search(r"at (http://127\.0\.0\.1:\d+)/", log.read_text())
        if found:
            try:
                if requests.get(f"{found.group(1)}/health", timeout=5).ok:
                    return server, found.group(1)
            except requests.ConnectionError:
                pass
        if server.poll() is not None:
            break
        time.sleep(0.2)
    server.kill()
    raise SystemExit(f"the server did not start:\n{log.read_text()}")


def load_run(url: str, paths: list[Path], clients: int) -> tuple[float, list[float]]:
    """Every file once through ``clients`` closed-loop clients: (requests per second, latencies in seconds)."""
    todo = list(reversed(paths))
    lock = threading.Lock()
    latencies: list[float] = []
    failures: list[str] = []

    def client() -> None:
        session = requests.Session()
        while True:
            with lock:
                if not todo:
                    return
                path = todo.pop()
            start = time.perf_counter()
            with open(path, "rb") as audio:
                response = session.post(f"{url}/v1/audio/transcriptions", files={"file": (path.name, audio)},
                                        data={"model": "asr-s2s"}, timeout=600)
            with lock:
                latencies.append(time.perf_counter() - start)
                if response.status_code != 200:
                    failures.append(f"{path.name}: {response.status_code} {response.text[:200]}")

    threads = [threading.Thread(target=client) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    if failures:
        raise SystemExit("requests failed: " + "; ".join(failures[:5]))
    return len(paths) / wall, latencies


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def transcribe_s(model: Path, paths: list[Path], options: list[str]) -> float:
    """Wall seconds of one ``asr-s2s transcribe`` process over ``paths`` (start and model load included)."""
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "asr_s2s", "transcribe", "--model", str(model), *options, "--quiet",
                    *map(str, paths)], check=True, capture_output=True)
    return time.perf_counter() - start


def metrics(url: str) -> dict[str, float]:
    from asr_s2s.server.metrics import parse

    return parse(requests.get(f"{url}/metrics", timeout=10).text)


def serve_rows(args, model: Path, paths: list[Path], options: list[str], log: Path) -> None:
    server, url = start_server(model, options, log)
    try:
        load_run(url, paths[:2], 1)  # warm the connection pool and the decoder's first calls
        print(f"\nasr-s2s serve ({url}), {len(paths)} files of {args.seconds:g} s, medians of {args.repeats} runs")
        print("  clients  requests/s  audio-s/s  p50 latency  p95 latency  rounds/run  requests/round")
        for clients in args.clients:
            rates, p50s, p95s, rounds = [], [], [], []
            for _ in range(args.repeats):
                before = metrics(url)
                rate, latencies = load_run(url, paths, clients)
                after = metrics(url)
                rates.append(rate)
                p50s.append(percentile(latencies, 50))
                p95s.append(percentile(latencies, 95))
                rounds.append(after["asr_s2s_decode_rounds_total"] - before["asr_s2s_decode_rounds_total"])
            rate, per_run = statistics.median(rates), statistics.median(rounds)
            print(f"  {clients:7d}  {rate:10.2f}  {rate * args.seconds:9.1f}  {statistics.median(p50s):9.3f} s  "
                  f"{statistics.median(p95s):9.3f} s  {per_run:10.0f}  {len(paths) / per_run:14.1f}")
        rtf = metrics(url)['asr_s2s_real_time_factor{window="all"}']
        print(f"  decoding RTF over all runs (the server's /metrics): {rtf:.4f}")
    finally:
        server.terminate()
        server.wait(30)


def cli_rows(args, model: Path, paths: list[Path], options: list[str]) -> None:
    per_file = [transcribe_s(model, [path], options) for path in paths[: args.per_file]]
    whole = [transcribe_s(model, paths, options) for _ in range(args.repeats)]
    one, all_s = statistics.median(per_file), statistics.median(whole)
    print("\nasr-s2s transcribe (a new process: start, model load, decoding)")
    print(f"  once per file:      {one:.2f} s per file (median of {len(per_file)}) = {1 / one:.2f} files/s")
    print(f"  once for all {len(paths)} files: {all_s:.2f} s (median of {len(whole)}) = {len(paths) / all_s:.2f} files/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="model package (default: the mini_librispeech recipe's if built, else its "
                                        "config with random weights)")
    parser.add_argument("--files", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--per-file", type=int, default=6, help="runs of transcribe on a single file")
    parser.add_argument("--beam-size", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1, help="torch threads of the server and of transcribe")
    args = parser.parse_args()
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from common import machine_line

    print(machine_line(threads=args.threads))
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        model = Path(args.model) if args.model else RECIPE_MODEL if RECIPE_MODEL.is_dir() else None
        print(f"model: {model or 'mini_librispeech recipe config (las_mini.yaml), random weights'}; "
              f"beam {args.beam_size}, the package's scorers; {args.threads} torch thread(s)")
        model = model or random_recipe_package(folder)
        paths = write_files(folder, args.files, args.seconds)
        options = ["--beam-size", str(args.beam_size), "--threads", str(args.threads)]
        serve_rows(args, model, paths, options, folder / "server.log")
        cli_rows(args, model, paths, options)


if __name__ == "__main__":
    main()
