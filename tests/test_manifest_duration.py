"""The manifest's duration is checked against the decoded audio: batching trusts it, so an entry far from the
real length fails that utterance (and decoding stops as soon as the audio runs past what the manifest allows)."""

from __future__ import annotations

import dataclasses
import re

import numpy as np
import soundfile

from asr_s2s.dataset import SpeechDataset, collate


def test_a_manifest_duration_far_from_the_audio_fails_only_that_utterance(fixture_utterances, tokenizer):
    good, near, longer, shorter = fixture_utterances[:4]
    near = dataclasses.replace(near, id="near", duration=near.duration + 0.2)  # header estimates and codec padding pass
    claims_longer = dataclasses.replace(longer, id="claims-longer", duration=longer.duration * 4)
    claims_shorter = dataclasses.replace(shorter, id="claims-shorter", duration=0.4)
    dataset = SpeechDataset([good, near, claims_longer, claims_shorter], tokenizer)
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch.ids == [good.id, "near"]
    failed = dict(batch.failed)
    assert set(failed) == {"claims-longer", "claims-shorter"}
    for utt in (claims_longer, claims_shorter):
        message = failed[utt.id]
        assert utt.audio in message and "manifest" in message and f"{utt.duration:.2f} s" in message
    assert f"{longer.duration:.2f} s" in failed["claims-longer"]


def test_decoding_stops_once_the_audio_runs_past_its_manifest_duration(tmp_path, fixture_utterances, tokenizer):
    """A manifest entry of 0.5 s whose file holds 6 s of 8-channel 384 kHz audio: decoding stops after one block."""
    path = tmp_path / "wide.flac"
    with soundfile.SoundFile(path, "w", 384_000, 8, subtype="PCM_16", format="FLAC") as out:
        for _ in range(6):
            out.write(np.zeros((384_000, 8), dtype=np.int16))
    utt = dataclasses.replace(fixture_utterances[0], id="wide", audio=str(path), duration=0.5)
    item = SpeechDataset([utt], tokenizer)[0]
    assert isinstance(item, tuple) and item[0] == "wide"
    assert str(path) in item[1] and "0.50 s" in item[1]
    decoded = float(re.search(r"over ([\d.]+) s", item[1]).group(1))
    assert decoded < 6
