"""Shared set-up for the benchmarks: model configs, synthetic batches, timing and the machine line."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from pathlib import Path

import torch

from asr_s2s.config import ModelConfig, load_config
from asr_s2s.features import CMVNStats
from asr_s2s.model import ASRModel
from asr_s2s.registry import Registry
from asr_s2s.tokenizer import CharTokenizer

# The scorer issue's reference model: 4 BLSTM layers of 320 units per direction with
# 8x time reduction, a 1-layer 320-unit decoder with location attention (10
# channels, kernel 201), 32 output tokens.
REFERENCE = ModelConfig(
    encoder={"name": "pblstm", "hidden_size": 320, "base_layers": 1, "pyramid_layers": 3, "dropout": 0.0},
    decoder={"name": "attention", "hidden_size": 320, "embed_dim": 320, "attention_dim": 320,
             "conv_channels": 10, "conv_kernel": 201, "dropout": 0.0},
    ctc_weight=0.3, label_smoothing=0.0, specaug=None,
)
REFERENCE_TOKENS = 32
DEFAULT_CONFIG = "recipes/mini_librispeech/conf/las_mini.yaml"
LAS_100H_CONFIG = "recipes/librispeech/conf/las_100h.yaml"  # the LibriSpeech recipe's 100 h model
LAS_960H_CONFIG = "recipes/librispeech/conf/las_960h.yaml"  # and its 960 h model
# CPU flags that decide which kernels run: AVX2/AVX-512 matmuls, bf16 dot products, AMX tiles.
CPU_FLAGS = ("avx2", "avx512f", "avx512_bf16", "amx_tile", "amx_bf16")


def cpu_info(path: str = "/proc/cpuinfo") -> tuple[str, set[str]]:
    """The CPU's model name and flags, from ``/proc/cpuinfo`` (``platform.processor()`` and no flags elsewhere)."""
    model, flags = "", set()
    try:
        text = Path(path).read_text()
    except OSError:
        text = ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "model name" and not model:
            model = value.strip()
        elif key.strip() == "flags" and not flags:
            flags = set(value.split())
    return model or platform.processor() or platform.machine(), flags


def machine_line(threads: int | None = None, device: str = "cpu") -> str:
    """One line naming the machine a benchmark ran on: CPU model, the kernel-deciding flags, torch, threads.

    :param threads: the torch thread count the timed work uses (default: this process's).
    :param device: a CUDA device adds its name.
    """
    model, flags = cpu_info()
    present = " ".join(f for f in CPU_FLAGS if f in flags) or "none"
    absent = " ".join(f for f in CPU_FLAGS if f not in flags)
    shown = f"flags {present}" + (f", no {absent}" if absent else "")
    line = (f"machine: {model}, {os.cpu_count()} CPUs ({shown}), torch {torch.__version__}, "
            f"{threads or torch.get_num_threads()} threads")
    if device.startswith("cuda") and torch.cuda.is_available():
        line += f", {torch.cuda.get_device_name(torch.device(device))}"
    return line


def build(config: ModelConfig, num_tokens: int | None = None) -> ASRModel:
    tokenizer = CharTokenizer()
    if num_tokens is not None and num_tokens > len(tokenizer):
        tokenizer = CharTokenizer(tokenizer.tokens + [f"<extra{i}>" for i in range(num_tokens - len(tokenizer))])
    torch.manual_seed(0)
    return ASRModel(config, tokenizer, CMVNStats.identity(config.num_mel_bins), Registry())


def models(root: str, names: tuple[str, ...] = ("default", "reference")) -> dict[str, tuple[ModelConfig, int | None]]:
    """Benchmark models by name: the default recipe model, the reference model, LibriSpeech ``las_100h`` and ``las_960h``."""
    known = {
        "default": lambda: (load_config(f"{root}/{DEFAULT_CONFIG}").model, None),
        "reference": lambda: (REFERENCE, REFERENCE_TOKENS),
        "las_100h": lambda: (load_config(f"{root}/{LAS_100H_CONFIG}").model, None),
        "las_960h": lambda: (load_config(f"{root}/{LAS_960H_CONFIG}").model, None),
    }
    return {name: known[name]() for name in names}


def median_time(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` runs after ``warmup`` runs."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)
