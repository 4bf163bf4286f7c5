"""asr_s2s.dataset: utterances to padded feature/token batches; bad items reported, not dropped."""

from __future__ import annotations

import dataclasses

import pytest
import soundfile
import torch

from asr_s2s.audio import load_audio
from asr_s2s.dataset import IGNORE_ID, Example, SpeechDataset, collate, make_loader
from asr_s2s.errors import TokenizerError
from asr_s2s.features import fbank, num_frames
from asr_s2s.tokenizer import normalize_text


def test_items_hold_features_and_tokens(fixture_dataset, fixture_utterances, tokenizer):
    for i, utt in enumerate(fixture_utterances):
        item = fixture_dataset[i]
        assert isinstance(item, Example) and item.id == utt.id
        samples = len(load_audio(utt.audio))
        assert item.feats.shape == (num_frames(samples), 80)
        assert item.text == normalize_text(utt.text)
        assert tokenizer.decode(item.tokens.tolist()) == item.text
        assert item.tokens.dtype == torch.long


def test_collate_pads(fixture_examples):
    batch = collate(fixture_examples)
    n = len(fixture_examples)
    assert len(batch) == n and batch.ids == [e.id for e in fixture_examples] and not batch.failed
    assert batch.feats.shape == (n, max(e.feats.shape[0] for e in fixture_examples), 80)
    assert batch.tokens.shape == (n, max(len(e.tokens) for e in fixture_examples))
    for b, e in enumerate(fixture_examples):
        t, u = e.feats.shape[0], len(e.tokens)
        assert batch.feat_lengths[b] == t and batch.token_lengths[b] == u
        torch.testing.assert_close(batch.feats[b, :t], e.feats, atol=0, rtol=0)
        assert torch.all(batch.feats[b, t:] == 0)
        assert batch.tokens[b, :u].tolist() == e.tokens.tolist()
        assert torch.all(batch.tokens[b, u:] == IGNORE_ID)
    moved = batch.to("cpu")
    assert moved.ids == batch.ids and torch.equal(moved.feats, batch.feats)


def test_one_bad_file_in_a_batch_of_good_ones(tmp_path, fixture_utterances, tokenizer):
    missing = tmp_path / "gone.flac"
    empty = tmp_path / "empty.wav"
    empty.touch()
    utts = [
        fixture_utterances[0],
        dataclasses.replace(fixture_utterances[1], id="missing", audio=str(missing)),
        fixture_utterances[2],
        dataclasses.replace(fixture_utterances[3], id="empty", audio=str(empty)),
    ]
    dataset = SpeechDataset(utts, tokenizer)
    batch = collate([dataset[i] for i in range(len(dataset))])
    assert batch.ids == [fixture_utterances[0].id, fixture_utterances[2].id]
    assert batch.feats.shape[0] == 2 and batch.tokens.shape[0] == 2
    failed = dict(batch.failed)
    assert set(failed) == {"missing", "empty"}
    assert str(missing) in failed["missing"] and "no such file" in failed["missing"]
    assert str(empty) in failed["empty"] and "empty" in failed["empty"]


def test_all_items_failed_gives_an_empty_batch():
    batch = collate([("a", "broken"), ("b", "broken too")])
    assert len(batch) == 0 and batch.failed == [("a", "broken"), ("b", "broken too")]
    assert batch.feats.shape[0] == 0 and batch.feat_lengths.numel() == 0


def test_digits_in_training_text_name_the_utterances(fixture_utterances, tokenizer):
    utts = [
        fixture_utterances[0],
        dataclasses.replace(fixture_utterances[1], id="spk-ch-0042", text="ROOM 101"),
        dataclasses.replace(fixture_utterances[2], id="spk-ch-0043", text="A £5 NOTE"),
    ]
    with pytest.raises(TokenizerError) as info:
        SpeechDataset(utts, tokenizer)
    message = str(info.value)
    assert "2 transcript(s)" in message
    assert "spk-ch-0042" in message and "'1'" in message
    assert "spk-ch-0043" in message and "'5'" in message
    assert fixture_utterances[0].id not in message


def test_empty_transcript_is_an_error_when_text_is_required(fixture_utterances, tokenizer):
    utt = dataclasses.replace(fixture_utterances[0], text=" ... ")
    with pytest.raises(TokenizerError, match=f"{utt.id}: transcript is empty"):
        SpeechDataset([utt], tokenizer)
    item = SpeechDataset([utt], tokenizer, require_text=False)[0]
    assert isinstance(item, Example) and item.tokens.numel() == 0


def test_text_is_normalised_before_tokenising(fixture_utterances, tokenizer):
    utt = dataclasses.replace(fixture_utterances[0], text="The cat sat\u2014on the mat!")
    item = SpeechDataset([utt], tokenizer)[0]
    assert item.text == "THE CAT SAT ON THE MAT"


def test_loader_yields_every_utterance_once(fixture_dataset):
    loader = make_loader(fixture_dataset, max_batch_seconds=4.0, shuffle=True, seed=0)
    seen = []
    for batch in loader:
        assert len(batch) * batch.feat_lengths.max().item() / 100 <= 4.0 + 0.03 or len(batch) == 1
        seen += batch.ids
    assert sorted(seen) == sorted(u.id for u in fixture_dataset.utterances)


def test_loader_with_a_worker_process(fixture_dataset):
    loader = make_loader(fixture_dataset, max_batch_seconds=100.0, shuffle=False, num_workers=1)
    (batch,) = list(loader)
    assert sorted(batch.ids) == sorted(u.id for u in fixture_dataset.utterances)


def test_feature_cache_returns_the_same_features(tmp_path, fixture_utterances, tokenizer):
    path = tmp_path / "a.wav"
    soundfile.write(path, load_audio(fixture_utterances[0].audio), 16_000, subtype="FLOAT")
    utt = dataclasses.replace(fixture_utterances[0], audio=str(path))
    dataset = SpeechDataset([utt], tokenizer, cache=True)
    first = dataset[0]
    path.unlink()  # a cached item no longer needs its file
    second = dataset[0]
    assert isinstance(second, Example)
    torch.testing.assert_close(second.feats, first.feats, atol=0, rtol=0)
    torch.testing.assert_close(first.feats, fbank(load_audio(fixture_utterances[0].audio)), atol=0, rtol=0)
