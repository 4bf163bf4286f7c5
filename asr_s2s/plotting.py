"""Pictures people would rather look at than read: loss curves and attention alignments."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_curves(log_path: str | Path, out_path: str | Path) -> None:
    """Plot train loss per logged step and valid loss/CER per epoch from a training JSONL log."""
    steps, losses, epochs, valid_loss, valid_cer = [], [], [], [], []
    for line in Path(log_path).read_text().splitlines():
        row = json.loads(line)
        if row.get("kind") == "step":
            steps.append(row["step"])
            losses.append(row["loss"])
        elif row.get("kind") == "epoch":
            epochs.append(row["step"])
            valid_loss.append(row["valid_loss"])
            valid_cer.append(row["valid_cer"])
    plt = _pyplot()
    fig, (ax_loss, ax_cer) = plt.subplots(1, 2, figsize=(11, 4))
    ax_loss.plot(steps, losses, label="train", alpha=0.7)
    ax_loss.plot(epochs, valid_loss, "o-", label="valid")
    ax_loss.set(xlabel="step", ylabel="loss", title="Loss")
    ax_loss.legend()
    ax_cer.plot(epochs, valid_cer, "o-", color="C2")
    ax_cer.set(xlabel="step", ylabel="CER %", title="Valid greedy CER")
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)


def plot_attention(weights: np.ndarray, out_path: str | Path, title: str = "", labels: str | None = None) -> None:
    """Plot an alignment ``(U, T')``: output tokens down, encoder frames across."""
    plt = _pyplot()
    u, t = weights.shape
    fig, ax = plt.subplots(figsize=(max(4.0, t / 12), max(3.0, u / 6)))
    ax.imshow(weights, aspect="auto", origin="lower", interpolation="nearest", cmap="viridis")
    ax.set(xlabel="encoder frame", ylabel="output token", title=title)
    if labels is not None:
        ticks = list(labels) + ["</s>"]
        ax.set_yticks(range(min(u, len(ticks))))
        ax.set_yticklabels([c if c != " " else "_" for c in ticks[:u]], fontsize=6)
    fig.tight_layout()
    fig.savefig(out_path, dpi=100)
    plt.close(fig)
