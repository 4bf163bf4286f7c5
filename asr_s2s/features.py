"""Log-mel filterbank features, global CMVN and SpecAugment."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torchaudio
from torch import nn

from asr_s2s.audio import SAMPLE_RATE_HZ
from asr_s2s.files import write_text_atomically
from asr_s2s.errors import CMVNError

NUM_MEL_BINS = 80
FRAME_LENGTH_MS = 25.0
FRAME_SHIFT_MS = 10.0
FRAMES_PER_SECOND = 1000.0 / FRAME_SHIFT_MS
_INT16_SCALE = 32768.0  # Kaldi computes fbank on integer-scaled samples


def fbank(waveform: np.ndarray | torch.Tensor, num_mel_bins: int = NUM_MEL_BINS, vtln_warp: float = 1.0) -> torch.Tensor:
    """Kaldi-compatible log-mel filterbank of a 16 kHz waveform.

    :param waveform: ``(S,)`` float samples in [-1, 1] at 16 kHz.
    :param vtln_warp: Kaldi's piecewise-linear VTLN warp factor of the mel filters (VTLP when drawn
        at random in training): frequencies are scaled by ``1 / vtln_warp`` between 100 Hz and
        Nyquist - 500 Hz, linearly joined to 0 Hz and Nyquist; 1 leaves the filters as they are.
    :returns: ``(T, num_mel_bins)`` float32, ``T = 1 + (S - 400) // 160``, 100 frames per second.
    """
    wav = torch.as_tensor(waveform, dtype=torch.float32).reshape(1, -1) * _INT16_SCALE
    return torchaudio.compliance.kaldi.fbank(
        wav,
        num_mel_bins=num_mel_bins,
        frame_length=FRAME_LENGTH_MS,
        frame_shift=FRAME_SHIFT_MS,
        dither=0.0,
        energy_floor=0.0,
        sample_frequency=SAMPLE_RATE_HZ,
        vtln_warp=vtln_warp,
    )


def num_frames(num_samples: int) -> int:
    """Frames :func:`fbank` yields for ``num_samples`` samples (Kaldi's snip_edges)."""
    window = int(SAMPLE_RATE_HZ * FRAME_LENGTH_MS / 1000)
    shift = int(SAMPLE_RATE_HZ * FRAME_SHIFT_MS / 1000)
    return 0 if num_samples < window else 1 + (num_samples - window) // shift


@dataclass(frozen=True)
class CMVNStats:
    """Global per-bin mean and standard deviation of the training features."""

    mean: tuple[float, ...]
    std: tuple[float, ...]
    frames: int

    @classmethod
    def accumulate(cls, feature_batches) -> CMVNStats:
        """Compute stats from an iterable of ``(T, F)`` tensors, in float64."""
        total = sq = None
        count = 0
        for feats in feature_batches:
            f = feats.to(torch.float64)
            s, q = f.sum(0), (f * f).sum(0)
            total, sq = (s, q) if total is None else (total + s, sq + q)
            count += f.shape[0]
        if count == 0:
            raise CMVNError("no frames to compute CMVN statistics from")
        mean = total / count
        var = (sq / count - mean * mean).clamp_min(1e-10)
        return cls(tuple(mean.tolist()), tuple(var.sqrt().tolist()), count)

    def save(self, path: str | Path) -> None:
        write_text_atomically(path, json.dumps({"mean": self.mean, "std": self.std, "frames": self.frames}) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> CMVNStats:
        """Read stats written by :meth:`save`.

        :raises CMVNError: naming the file (and the key) if it is missing, not JSON or malformed.
        """
        try:
            raw = json.loads(Path(path).read_text())
        except FileNotFoundError:
            raise CMVNError(f"{path}: no such CMVN file; write one with `asr-s2s compute-cmvn`") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CMVNError(f"{path}: not a CMVN JSON file ({exc})") from None
        if not isinstance(raw, dict):
            raise CMVNError(f"{path}: expected a JSON object with keys mean, std, frames")
        missing = [k for k in ("mean", "std", "frames") if k not in raw]
        if missing:
            raise CMVNError(f"{path}: missing key(s) {', '.join(missing)}")
        try:
            stats = cls(tuple(float(x) for x in raw["mean"]), tuple(float(x) for x in raw["std"]), int(raw["frames"]))
        except (TypeError, ValueError):
            raise CMVNError(f"{path}: mean and std must be lists of numbers, frames an integer") from None
        if len(stats.mean) != len(stats.std):
            raise CMVNError(f"{path}: mean has {len(stats.mean)} values but std has {len(stats.std)}")
        if not all(math.isfinite(x) for x in stats.mean) or not all(math.isfinite(x) and x > 0 for x in stats.std):
            raise CMVNError(f"{path}: malformed CMVN statistics (std must be positive, all values finite)")
        return stats

    @classmethod
    def identity(cls, dim: int) -> CMVNStats:
        return cls((0.0,) * dim, (1.0,) * dim, 0)


@dataclass(frozen=True)
class SpecAugmentConfig:
    """SpecAugment (Park et al. 2019) masks; applied in training only."""

    freq_masks: int = 2
    freq_mask_bins: int = 27
    time_masks: int = 2
    time_mask_frames: int = 40
    time_mask_max_ratio: float = 0.2  # upper bound on a mask's share of the frames


class Frontend(nn.Module):
    """Applies global CMVN, then SpecAugment while training.

    Stats live in buffers so that they travel with the model.
    """

    def __init__(self, cmvn: CMVNStats, specaug: SpecAugmentConfig | None) -> None:
        super().__init__()
        self.cmvn = cmvn  # kept as given, so that packages store the exact statistics
        self.register_buffer("mean", torch.tensor(cmvn.mean, dtype=torch.float32), persistent=False)
        self.register_buffer("inv_std", 1.0 / torch.tensor(cmvn.std, dtype=torch.float32), persistent=False)
        self.specaug = specaug
        if specaug is not None:
            self.freq_mask = torchaudio.transforms.FrequencyMasking(specaug.freq_mask_bins, iid_masks=True)
            self.time_mask = torchaudio.transforms.TimeMasking(
                specaug.time_mask_frames, iid_masks=True, p=specaug.time_mask_max_ratio
            )

    def forward(self, feats: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Normalise (and augment) features.

        :param feats: ``(B, T, F)`` raw log-mel features.
        :param lengths: ``(B,)`` valid frames; padding is set to zero.
        :returns: ``(B, T, F)`` normalised features.
        """
        x = (feats - self.mean) * self.inv_std
        if self.training and self.specaug is not None:
            spec = x.transpose(1, 2)  # torchaudio masks expect (..., freq, time)
            for _ in range(self.specaug.freq_masks):
                spec = self.freq_mask(spec)
            for _ in range(self.specaug.time_masks):
                spec = self.time_mask(spec)
            x = spec.transpose(1, 2)
        mask = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
        return x * mask.unsqueeze(-1)
