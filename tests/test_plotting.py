"""asr_s2s.plotting: training curves and attention alignments as PNG files."""

from __future__ import annotations

import json

import numpy as np

from asr_s2s.plotting import plot_attention, plot_training_curves

PNG = b"\x89PNG\r\n\x1a\n"


def test_training_curves(tmp_path):
    log = tmp_path / "train_log.jsonl"
    rows = [{"kind": "step", "step": s, "epoch": 1 + s // 3, "loss": 3.0 / s} for s in range(1, 7)]
    rows += [{"kind": "epoch", "epoch": e, "step": 3 * e, "valid_loss": 2.0 / e, "valid_cer": 50.0 / e} for e in (1, 2)]
    log.write_text("".join(json.dumps(r) + "\n" for r in rows))
    plot_training_curves(log, tmp_path / "curves.png")
    assert (tmp_path / "curves.png").read_bytes()[:8] == PNG


def test_attention_of_a_real_decode(trained_model, fixture_batch, registry, tmp_path):
    from asr_s2s.config import DecodeConfig
    from asr_s2s.recognizer import Recognizer

    (result, *_) = Recognizer(trained_model, DecodeConfig(beam_size=1), registry).decode_batch(fixture_batch)
    assert result.attention.ndim == 2 and np.allclose(result.attention.sum(1), 1.0, atol=1e-5)
    plot_attention(result.attention, tmp_path / "att.png", title=result.id, labels=result.text)
    assert (tmp_path / "att.png").read_bytes()[:8] == PNG
