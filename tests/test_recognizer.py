"""asr_s2s.recognizer: scorers from config, greedy or beam search, batches of files."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch
import pytest
from torch.nn.utils.rnn import pad_sequence

from asr_s2s.audio import load_audio
from asr_s2s.config import DecodeConfig
from asr_s2s.errors import ConfigError, PluginError
from asr_s2s.features import fbank
from asr_s2s.recognizer import Recognizer, build_scorers
from asr_s2s.search import BeamSearch
from asr_s2s.tokenizer import normalize_text


def _recognizer(model, registry, **decode) -> Recognizer:
    return Recognizer(model, DecodeConfig(**decode), registry)


def test_build_scorers(random_model, registry):
    scorers = build_scorers(random_model, registry, {"decoder": 1.0, "length_bonus": 0.0}, {})
    assert list(scorers) == ["decoder"]
    with pytest.raises(PluginError, match="unknown scorer 'ctx'. Did you mean 'ctc'.*Known scorers: coverage, ctc"):
        build_scorers(random_model, registry, {"decoder": 1.0, "ctx": 0.0}, {})
    with pytest.raises(ConfigError, match="'length_bonus' has params but no weight"):
        build_scorers(random_model, registry, {"decoder": 1.0}, {"length_bonus": {}})


def test_greedy_is_used_only_for_beam_one_with_the_decoder_alone(random_model, registry):
    assert _recognizer(random_model, registry, beam_size=1).greedy
    assert _recognizer(random_model, registry, beam_size=1, scorers={"decoder": 1.0, "length_bonus": 0.0}).greedy
    assert not _recognizer(random_model, registry, beam_size=2).greedy
    assert not _recognizer(random_model, registry, beam_size=1, scorers={"decoder": 1.0, "length_bonus": 0.5}).greedy
    assert _recognizer(random_model, registry, beam_size=1, min_length_ratio=0.1).greedy


@pytest.mark.parametrize("min_length_ratio", [0.0, 1.0])
@pytest.mark.parametrize("model_name", ["random_model", "trained_model"])
def test_greedy_and_beam_one_paths_agree(request, registry, fixture_batch, model_name, min_length_ratio):
    """The greedy path gives what beam search at beam 1 gives, with and without a minimum length."""
    model = request.getfixturevalue(model_name)
    greedy = _recognizer(model, registry, beam_size=1, min_length_ratio=min_length_ratio)
    found = greedy.decode_batch(fixture_batch)
    search = BeamSearch(build_scorers(model, registry, {"decoder": 1.0}, {}), greedy.options,
                        model.tokenizer.sos_id, model.tokenizer.eos_id, model.vocab_size)
    states, lengths = greedy.encode(fixture_batch.feats, fixture_batch.feat_lengths)
    beam = [hyps[0] for hyps in search(states, lengths)]
    assert [r.hypotheses[0].tokens for r in found] == [b.tokens for b in beam]
    for g, b, length in zip(found, beam, lengths.tolist()):
        assert g.hypotheses[0].score == pytest.approx(b.score, abs=1e-4)
        assert g.attention is not None and g.attention.shape[0] == len(g.hypotheses[0].tokens) + 1
        assert np.allclose(g.attention.sum(-1), 1.0, atol=1e-5)
        if min_length_ratio == 1.0:  # <eos> forbidden until the last frame, forced there
            assert len(g.hypotheses[0].tokens) == length


def _decode_waves(recognizer, waves):
    """Decode 16 kHz waveforms ``(S,)``, given as ``(id, samples)``, as one padded batch."""
    if not waves:
        return []
    feats = [fbank(w) for _, w in waves]
    lengths = torch.tensor([f.shape[0] for f in feats])
    return recognizer.decode_features(pad_sequence(feats, batch_first=True), lengths, [i for i, _ in waves])


@pytest.mark.parametrize("beam_size", [1, 3])
def test_waveforms_decode_the_same_alone_and_together(trained_model, registry, fixture_utterances, beam_size):
    recognizer = _recognizer(trained_model, registry, beam_size=beam_size, nbest=beam_size)
    waves = [(u.id, load_audio(u.audio)) for u in fixture_utterances]
    together = _decode_waves(recognizer, waves)
    assert [r.id for r in together] == [u.id for u in fixture_utterances]
    for wave, result in zip(waves, together):
        (alone,) = _decode_waves(recognizer, [wave])
        assert alone.text == result.text
        assert [h.tokens for h in alone.hypotheses] == [h.tokens for h in result.hypotheses]
        for a, b in zip(alone.hypotheses, result.hypotheses):
            assert a.score == pytest.approx(b.score, abs=1e-4)


def test_decode_utterances_keeps_manifest_order_and_reports_failures(trained_model, registry, fixture_utterances, tmp_path):
    missing = dataclasses.replace(fixture_utterances[0], id="missing", audio=str(tmp_path / "missing.flac"))
    utterances = [fixture_utterances[5], missing, *fixture_utterances[:3]]
    recognizer = _recognizer(trained_model, registry, beam_size=1, batch_seconds=100.0)
    results = recognizer.decode_utterances(utterances, progress=False)
    assert [r.id for r in results] == [u.id for u in utterances]
    assert results[1].error is not None and "missing.flac" in results[1].error and results[1].text == ""
    for utt, result in zip(utterances, results):
        if result.id != "missing":
            assert result.error is None
            assert result.text == normalize_text(utt.text), "the overfit model reproduces its training transcripts"


def test_empty_waveform_list(random_model, registry):
    assert _decode_waves(_recognizer(random_model, registry), []) == []


@pytest.mark.parametrize("beam_size", [1, 4])
def test_all_silence_decodes_without_error(trained_model, registry, beam_size):
    """Digital silence is not an error: it decodes to some (usually empty) text of vocabulary characters."""
    (result,) = _decode_waves(_recognizer(trained_model, registry, beam_size=beam_size), [("silence", np.zeros(32_000, np.float32))])
    assert result.error is None and set(result.text) <= set(" 'ABCDEFGHIJKLMNOPQRSTUVWXYZ")
    print(f"silence -> {result.text!r}")


def test_all_silence_transcribes_to_empty_text(trained_package, registry, tmp_path):
    """Through the transcriber (what `asr-s2s transcribe` uses), silence has no speech segments: empty text."""
    import soundfile

    from asr_s2s.transcriber import load_model

    path = tmp_path / "silence.wav"
    soundfile.write(path, np.zeros(3 * 16_000, np.int16), 16_000)
    result = load_model(trained_package, registry=registry).transcribe(path)
    assert result.text == "" and not result.segments


def test_bf16_encoder_gives_fp32_states_and_close_results(trained_model, registry, fixture_batch):
    """bf16 keeps about 3 significant digits, so hypotheses may differ where fp32's scores nearly tie
    (4 of 400 on the bundled test split); the overfit model's greedy transcripts survive it."""
    exact = _recognizer(trained_model, registry, beam_size=3)
    fast = _recognizer(trained_model, registry, beam_size=3, precision="bf16")
    states, lengths = exact.encode(fixture_batch.feats, fixture_batch.feat_lengths)
    bf16_states, bf16_lengths = fast.encode(fixture_batch.feats, fixture_batch.feat_lengths)
    assert bf16_states.dtype == states.dtype == torch.float32
    assert torch.equal(bf16_lengths, lengths)
    assert ((bf16_states - states).norm() / states.norm()).item() < 0.05
    for e, f in zip(exact.decode_batch(fixture_batch), fast.decode_batch(fixture_batch)):
        assert f.hypotheses[0].score == pytest.approx(e.hypotheses[0].score, abs=1.0)
    greedy = _recognizer(trained_model, registry, beam_size=1, precision="bf16").decode_batch(fixture_batch)
    assert [r.text for r in greedy] == list(fixture_batch.texts)


def test_unknown_precision_is_an_error():
    with pytest.raises(ConfigError, match="decode.precision must be 'bf16' or 'fp32', got 'fp16'"):
        DecodeConfig(precision="fp16")
