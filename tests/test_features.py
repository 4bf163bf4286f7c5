"""asr_s2s.features: Kaldi fbank, global CMVN and SpecAugment in the Frontend."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile
import torch
import torchaudio

from asr_s2s.audio import load_audio
from asr_s2s.errors import CMVNError
from asr_s2s.features import (
    FRAMES_PER_SECOND,
    NUM_MEL_BINS,
    CMVNStats,
    Frontend,
    SpecAugmentConfig,
    fbank,
    num_frames,
)

from conftest import FIXTURE_DIR

FLAC = FIXTURE_DIR / "1002" / "20" / "1002-20-0001.flac"


@pytest.mark.parametrize("samples", [400, 401, 559, 560, 561, 16_000, 16_159, 16_160])
def test_fbank_shape(samples):
    wav = np.random.default_rng(samples).uniform(-0.5, 0.5, samples).astype(np.float32)
    feats = fbank(wav)
    assert feats.shape == (1 + (samples - 400) // 160, NUM_MEL_BINS)
    assert feats.dtype == torch.float32 and torch.isfinite(feats).all()
    assert num_frames(samples) == feats.shape[0]


def test_num_frames_below_one_window():
    assert num_frames(399) == 0 and num_frames(0) == 0
    assert FRAMES_PER_SECOND == 100


def test_fbank_equals_kaldi_fbank_on_int16_scale():
    pcm, rate = soundfile.read(FLAC, dtype="int16")
    reference = torchaudio.compliance.kaldi.fbank(
        torch.from_numpy(pcm.astype(np.float32)).unsqueeze(0),
        num_mel_bins=80, frame_length=25.0, frame_shift=10.0, dither=0.0, energy_floor=0.0,
        sample_frequency=rate,
    )
    ours = fbank(load_audio(FLAC))
    assert ours.shape == reference.shape == (1 + (len(pcm) - 400) // 160, 80)
    torch.testing.assert_close(ours, reference, atol=1e-4, rtol=1e-5)


def test_fbank_is_log_mel_energy():
    """A louder signal shifts every bin by 2*log(gain) (log power)."""
    wav = load_audio(FLAC)
    quiet, loud = fbank(wav * 0.25), fbank(wav * 0.5)
    shift = (loud - quiet)[quiet > 5.0]  # bins well above the numerical floor
    torch.testing.assert_close(shift, torch.full_like(shift, 2 * np.log(2.0)), atol=1e-3, rtol=0)


# -- CMVN -----------------------------------------------------------------------------
def test_cmvn_matches_numpy_over_all_frames(fixture_examples, cmvn):
    frames = np.concatenate([e.feats.numpy().astype(np.float64) for e in fixture_examples])
    assert cmvn.frames == len(frames)
    np.testing.assert_allclose(cmvn.mean, frames.mean(0), rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(cmvn.std, frames.std(0), rtol=1e-6)


def test_normalised_features_have_zero_mean_unit_std(fixture_batch, cmvn):
    frontend = Frontend(cmvn, specaug=None).eval()
    out = frontend(fixture_batch.feats, fixture_batch.feat_lengths)
    valid = torch.cat([out[b, :n] for b, n in enumerate(fixture_batch.feat_lengths.tolist())]).double()
    torch.testing.assert_close(valid.mean(0), torch.zeros(80, dtype=torch.float64), atol=1e-4, rtol=0)
    torch.testing.assert_close(valid.std(0, unbiased=False), torch.ones(80, dtype=torch.float64), atol=1e-4, rtol=0)
    for b, n in enumerate(fixture_batch.feat_lengths.tolist()):
        assert torch.all(out[b, n:] == 0), "padding frames must be zero"


def test_cmvn_save_load_round_trip(tmp_path, cmvn):
    path = tmp_path / "cmvn.json"
    cmvn.save(path)
    assert CMVNStats.load(path) == cmvn


def test_cmvn_load_rejects_bad_stats(tmp_path):
    path = tmp_path / "cmvn.json"
    CMVNStats((0.0, 0.0), (1.0, 0.0), 5).save(path)
    with pytest.raises(CMVNError, match="cmvn.json"):
        CMVNStats.load(path)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "no such CMVN file"),
        ("", "not a CMVN JSON file"),
        ("[1, 2]", "expected a JSON object"),
        ('{"mean": [0.0], "frames": 3}', "missing key(s) std"),
        ('{"mean": ["a"], "std": [1.0], "frames": 3}', "lists of numbers"),
        ('{"mean": [0.0, 1.0], "std": [1.0], "frames": 3}', "mean has 2 values but std has 1"),
        ('{"mean": [NaN], "std": [1.0], "frames": 3}', "all values finite"),
    ],
)
def test_cmvn_file_errors_name_the_file(tmp_path, content, fragment):
    path = tmp_path / "cmvn.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(CMVNError) as info:
        CMVNStats.load(path)
    assert str(path) in str(info.value) and fragment in str(info.value)


def test_cmvn_needs_frames():
    with pytest.raises(CMVNError, match="no frames"):
        CMVNStats.accumulate([])


def test_identity_cmvn_leaves_features_alone(fixture_batch):
    frontend = Frontend(CMVNStats.identity(80), None)
    b = fixture_batch
    out = frontend(b.feats, b.feat_lengths)
    torch.testing.assert_close(out, b.feats)  # padding already zero


# -- SpecAugment ------------------------------------------------------------------------
def test_specaugment_masks_only_in_train_mode(fixture_batch, cmvn):
    b = fixture_batch
    plain = Frontend(cmvn, None).eval()(b.feats, b.feat_lengths)
    frontend = Frontend(cmvn, SpecAugmentConfig())

    frontend.eval()
    for _ in range(3):
        torch.testing.assert_close(frontend(b.feats, b.feat_lengths), plain, atol=0, rtol=0)

    frontend.train()
    torch.manual_seed(0)
    augmented = frontend(b.feats, b.feat_lengths)
    changed = augmented != plain
    assert changed.any(), "train mode must apply masks"
    assert torch.all(augmented[changed] == 0), "SpecAugment only masks (to zero), never alters other values"
    for i, n in enumerate(b.feat_lengths.tolist()):
        assert torch.all(augmented[i, n:] == 0)
        # every masked cell lies in a fully masked frequency band or a fully masked time span
        rows, cols = changed[i, :n].nonzero(as_tuple=True)
        for t, f in zip(rows.tolist(), cols.tolist()):
            assert torch.all(augmented[i, :n, f] == 0) or torch.all(augmented[i, t] == 0)

    frontend.eval()
    torch.testing.assert_close(frontend(b.feats, b.feat_lengths), plain, atol=0, rtol=0)
