"""The built-in augmentations (plugins/framing, noise, reverb, channel, perturb, specaugment): each keeps the
property it promises, on real speech from the fixture corpus and on tones."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch

from asr_s2s.audio import load_audio
from asr_s2s.augment import AugmentationChain
from asr_s2s.features import fbank
from asr_s2s.interfaces import AugmentationContext, Signal

RATE = 16_000


def build(registry, entry, utterances=(), seed=0):
    """The augmentation of one entry, as the chain builds it."""
    context = AugmentationContext(utterances=tuple(utterances), seed=seed)
    return AugmentationChain.from_config([entry], registry, context, seed=seed).steps[0].augmentation


@pytest.fixture(scope="module")
def speech(fixture_utterances):
    """The first fixture utterance, its samples and its Signal."""
    utt = fixture_utterances[0]
    return Signal(load_audio(utt.audio), utterance=utt)


def tone(hz: float, seconds: float = 1.0, level: float = 0.3) -> np.ndarray:
    return (level * np.sin(2 * np.pi * hz * np.arange(int(seconds * RATE)) / RATE)).astype(np.float32)


def peak_hz(wave: np.ndarray) -> float:
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    return float(np.argmax(spectrum) * RATE / len(wave))


def rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def snr_db(clean: np.ndarray, noisy: np.ndarray) -> float:
    clean, noise = clean.astype(np.float64), noisy.astype(np.float64) - clean
    return float(10 * np.log10(np.sum(clean**2) / np.sum(noise**2)))


# -- framing ------------------------------------------------------------------------------------------------------
def test_framing_adds_exactly_the_drawn_silence_around_the_untouched_speech(registry, speech):
    from asr_s2s_plugins.framing import trim_to_speech

    padded = np.concatenate([np.zeros(3000, np.float32), speech.waveform, np.zeros(5000, np.float32)])
    start, end = trim_to_speech(padded, 40.0)
    assert 3000 - 200 <= start <= 3000 + 200, "the cut lands at the speech, within an energy frame"
    framing = build(registry, {"name": "framing", "lead_s": [0.3, 0.3], "trail_s": [0.05, 0.05], "tight_prob": 0.0})
    out = framing.apply(Signal(padded), rng()).waveform
    assert len(out) == 4800 + (end - start) + 800
    np.testing.assert_array_equal(out[4800 : 4800 + end - start], padded[start:end])
    lead = out[:4800].astype(np.float64)
    assert 10 * np.log10(np.mean(lead**2)) < -50, "the new silence is a quiet noise floor"


def test_framing_tight_cuts_right_at_the_speech_and_draws_within_the_range(registry, speech):
    from asr_s2s_plugins.framing import trim_to_speech

    start, end = trim_to_speech(speech.waveform, 40.0)
    tight = build(registry, {"name": "framing", "lead_s": [0, 0], "trail_s": [0, 0]})
    np.testing.assert_array_equal(tight.apply(speech, rng()).waveform, speech.waveform[start:end])
    drawn = build(registry, {"name": "framing", "lead_s": [0.1, 0.5], "trail_s": [0.2, 0.2], "tight_prob": 0.5})
    leads = [(len(drawn.apply(speech, rng(seed)).waveform) - (end - start)) / RATE for seed in range(200)]
    extra = np.array(leads)
    assert np.isclose(extra, 0.2).mean() > 0.15 and np.isclose(extra, 0.0).mean() > 0.15, "tight edges happen"
    assert (extra <= 0.5 + 0.2 + 1e-3).all() and ((extra > 0.3) & (extra < 0.7)).mean() > 0.1


# -- noise --------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["white", "pink", "brown", "babble", "files"])
def test_noise_is_mixed_at_the_drawn_snr(registry, speech, fixture_utterances, source, tmp_path):
    folder = tmp_path / "noise"
    folder.mkdir()
    soundfile.write(folder / "hum.flac", tone(120, 0.7, 0.5) + tone(2000, 0.7, 0.1), 44_100)
    entry = {"name": "noise", "snr_db": [7.5, 7.5], "sources": [source]}
    if source == "files":
        entry["folder"] = str(folder)
    noise = build(registry, entry, fixture_utterances)
    out = noise.apply(speech, rng(3))
    assert len(out.waveform) == len(speech.waveform)
    assert abs(snr_db(speech.waveform, out.waveform) - 7.5) < 0.5
    assert out.notes[-1].endswith("at 7.5 dB SNR")


def test_noise_snr_draws_spread_over_the_range(registry, speech):
    noise = build(registry, {"name": "noise", "snr_db": [5, 25], "sources": ["white"]})
    measured = [snr_db(speech.waveform, noise.apply(speech, rng(seed)).waveform) for seed in range(30)]
    drawn = [float(noise.apply(speech, rng(seed)).notes[-1].split(" at ")[1].split(" dB")[0]) for seed in range(30)]
    assert np.allclose(measured, drawn, atol=0.5)
    assert min(drawn) < 10 and max(drawn) > 20


def test_coloured_noise_has_its_spectral_slope():
    from asr_s2s_plugins.noise import coloured_noise

    freqs = np.fft.rfftfreq(RATE, 1 / RATE)
    for colour, exponent in (("white", 0.0), ("pink", 1.0), ("brown", 2.0)):
        power = np.abs(np.fft.rfft(coloured_noise(RATE, exponent, rng()))) ** 2
        low, high = power[(freqs > 100) & (freqs < 200)].mean(), power[(freqs > 3200) & (freqs < 6400)].mean()
        slope_db_per_octave = 10 * np.log10(high / low) / np.log2(4800 / 150)
        assert abs(slope_db_per_octave + 3.0 * exponent) < 1.0, colour


def test_babble_never_uses_the_utterance_own_speaker(registry, fixture_utterances, tmp_path):
    """Two speakers, one talker per babble: the noise is always the other speaker's voice."""
    from dataclasses import replace

    voices = []
    for speaker, hz in (("own", 3000), ("other", 500)):
        path = tmp_path / f"{speaker}.wav"
        soundfile.write(path, tone(hz, 0.8), RATE)
        voices.append(replace(fixture_utterances[0], id=speaker, audio=str(path), speaker=speaker))
    noise = build(registry, {"name": "noise", "sources": ["babble"], "babble_speakers": [1, 1], "snr_db": [0, 0]},
                  voices)
    speech = Signal(tone(3000, 0.5), utterance=voices[0])
    for seed in range(8):
        out = noise.apply(speech, rng(seed))
        assert abs(peak_hz(out.waveform - speech.waveform) - 500) < 10
        assert out.notes[-1] == "noise: babble of 1 at 0.0 dB SNR"


def test_a_noise_file_that_breaks_later_is_skipped_with_a_warning(registry, speech, tmp_path, caplog):
    import logging

    folder = tmp_path / "noise"
    folder.mkdir()
    for name in ("a.wav", "b.wav"):
        soundfile.write(folder / name, tone(300, 0.5), RATE)
    noise = build(registry, {"name": "noise", "sources": ["files"], "folder": str(folder), "snr_db": [10, 10]})
    (folder / "a.wav").write_bytes(b"RIFF broken")  # after the scan, as when a disk fails mid-run
    with caplog.at_level(logging.WARNING):
        notes = [noise.apply(speech, rng(seed)).notes[-1] for seed in range(6)]
    assert all("b.wav at 10.0 dB" in note for note in notes)
    assert any("noise file skipped" in r.message and "a.wav" in r.message for r in caplog.records)


# -- reverberation ------------------------------------------------------------------------------------------------
def test_reverb_keeps_the_length_the_direct_path_and_the_level(registry, speech):
    reverb = build(registry, {"name": "reverb", "rooms": 2, "rt60_s": [0.5, 0.7]})
    out = reverb.apply(speech, rng(1))
    x, y = speech.waveform.astype(np.float64), out.waveform.astype(np.float64)
    assert len(y) == len(x)
    lags = np.arange(-400, 401)
    corr = [np.dot(x[max(0, -k) : len(x) - max(0, k)], y[max(0, k) : len(y) - max(0, -k)]) for k in lags]
    assert lags[int(np.argmax(corr))] == 0, "the direct path is not delayed"
    assert np.sqrt(np.mean(y**2)) == pytest.approx(np.sqrt(np.mean(x**2)), rel=1e-3)
    assert not np.allclose(x, y), "the room is heard"


def test_reverb_rooms_have_the_drawn_reverberation_time_and_repeat_from_their_seed(registry):
    import pyroomacoustics as pra

    reverb = build(registry, {"name": "reverb", "rooms": 3, "rt60_s": [0.6, 0.6], "seed": 5})
    again = build(registry, {"name": "reverb", "rooms": 3, "rt60_s": [0.6, 0.6], "seed": 5})
    rir, name = reverb.response(rng(2))
    np.testing.assert_array_equal(again.response(rng(2))[0], rir)
    assert rir[0] == 1.0
    assert pra.experimental.measure_rt60(rir, fs=RATE) == pytest.approx(0.6, rel=0.35)
    other = build(registry, {"name": "reverb", "rooms": 3, "rt60_s": [0.6, 0.6], "seed": 6})
    assert not np.array_equal(other.response(rng(2))[0][:100], rir[:100])


def test_reverb_from_a_folder_of_recorded_responses(registry, speech, tmp_path):
    folder = tmp_path / "rirs"
    folder.mkdir()
    response = np.zeros(800, np.float32)
    response[[20, 300]] = [0.8, 0.4]  # 20 samples of pre-delay, then an echo 280 samples later
    soundfile.write(folder / "room.wav", response, RATE)
    reverb = build(registry, {"name": "reverb", "folder": str(folder)})
    out = reverb.apply(speech, rng()).waveform.astype(np.float64)
    x = speech.waveform.astype(np.float64)
    expected = x.copy()
    expected[280:] += 0.5 * x[:-280]
    expected *= np.sqrt(np.mean(x**2) / np.mean(expected**2))
    np.testing.assert_allclose(out, expected, atol=1e-5)
    assert reverb.apply(speech, rng()).notes[-1] == "reverb: room.wav"


# -- channel ------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("codec, kbps", [("mp3", 16), ("mp3", 48), ("opus", 12), ("opus", 32)])
def test_a_codec_round_trip_keeps_the_length_and_the_timing(registry, speech, codec, kbps):
    step = build(registry, {"name": "codec", "codecs": [codec], "kbps": [kbps, kbps]})
    out = step.apply(speech, rng())
    assert len(out.waveform) == len(speech.waveform)
    real = float(out.notes[-1].split()[2])
    assert 0.6 * kbps <= real <= 1.6 * kbps + 4, out.notes[-1]
    assert snr_db(speech.waveform, out.waveform) > 3, "aligned to the input: the codec's delay is removed"
    assert not np.array_equal(out.waveform, speech.waveform)


def test_the_telephone_channel_removes_the_wide_band(registry):
    wide = tone(500) + tone(6000)
    out = build(registry, {"name": "telephone"}).apply(Signal(wide), rng()).waveform
    assert len(out) == len(wide)
    spectrum = np.abs(np.fft.rfft(out[800:-800]))
    freqs = np.fft.rfftfreq(len(out) - 1600, 1 / RATE)
    assert spectrum[np.abs(freqs - 6000) < 20].max() < 0.01 * spectrum[np.abs(freqs - 500) < 20].max()


# -- perturbations ------------------------------------------------------------------------------------------------
def test_gain_scales_by_the_drawn_decibels_and_clips_at_full_scale(registry, speech):
    out = build(registry, {"name": "gain", "gain_db": [-6, -6]}).apply(speech, rng()).waveform
    np.testing.assert_allclose(out, speech.waveform * 10 ** (-6 / 20), rtol=1e-6)
    loud = build(registry, {"name": "gain", "gain_db": [30, 30]}).apply(speech, rng()).waveform
    assert np.abs(loud).max() == 1.0


def test_speed_shifts_tempo_and_pitch_together_like_sox_speed(registry):
    from asr_s2s_plugins.perturb import change_speed

    wave = tone(1000)
    assert change_speed(wave, 1.0) is wave
    for factor in (0.9, 1.1):
        out = build(registry, {"name": "speed", "factors": [factor]}).apply(Signal(wave), rng()).waveform
        assert out.dtype == np.float32 and abs(len(out) - RATE / factor) <= 1
        assert abs(peak_hz(out[200:-200]) - 1000 * factor) < 5, factor
    with pytest.raises(ValueError, match="positive"):
        change_speed(wave, 0.0)


def test_pitch_shifts_the_pitch_and_keeps_the_length(registry):
    wave = tone(440)
    out = build(registry, {"name": "pitch", "semitones": [3, 3]}).apply(Signal(wave), rng()).waveform
    assert len(out) == len(wave)
    assert abs(peak_hz(out[2000:-2000]) - 440 * 2 ** (3 / 12)) < 8


def test_tempo_changes_the_length_and_keeps_the_pitch(registry):
    wave = tone(440, 2.0)
    out = build(registry, {"name": "tempo", "factor": [1.25, 1.25]}).apply(Signal(wave), rng()).waveform
    assert abs(len(out) - len(wave) / 1.25) <= 512
    assert abs(peak_hz(out[2000:-2000]) - 440) < 8


def test_vtlp_warps_the_filterbank_and_a_factor_of_one_is_the_identity(registry, speech, fixture_utterances, tokenizer):
    from asr_s2s.dataset import SpeechDataset

    for warp, same in ((1.0, True), (1.1, False)):
        chain = AugmentationChain.from_config([{"name": "vtlp", "warp": [warp, warp]}], registry, AugmentationContext())
        example = SpeechDataset(fixture_utterances[:1], tokenizer, augment=chain)[0]
        assert torch.equal(example.feats, fbank(speech.waveform)) is same
        assert example.augment_notes == (f"vtlp: warp {warp:.3f}",)
    out = build(registry, {"name": "vtlp"}).apply(speech, rng())
    assert out.waveform is speech.waveform and 0.9 <= out.vtln_warp <= 1.1


# -- specaugment --------------------------------------------------------------------------------------------------
def test_specaugment_masks_bands_and_spans_with_the_mean_within_their_bounds(registry, speech):
    feats = fbank(speech.waveform)
    step = build(registry, {"name": "specaugment", "freq_masks": 1, "freq_mask_bins": 10, "time_masks": 1,
                            "time_mask_frames": 15})
    before = feats.clone()
    for seed in range(20):
        out = step.apply_features(feats, rng(seed))
        assert out.shape == feats.shape and torch.equal(feats, before), "the input is never changed in place"
        masked = out != feats
        bins, frames = masked.all(0).sum().item(), masked.all(1).sum().item()
        assert bins <= 10 and frames <= 15
        assert torch.all(out[masked] == feats.mean())
    torch.testing.assert_close(step.apply_features(feats, rng(4)), step.apply_features(feats, rng(4)), atol=0, rtol=0)
