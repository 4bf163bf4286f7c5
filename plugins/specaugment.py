"""Augmentation ``specaugment``: frequency and time masks on one utterance's features (Park et al. 2019).

It runs in the data workers on the raw log-mel features, before global CMVN,
and fills each mask with the utterance's mean, as ESPnet does before its
normalisation. Mask positions are drawn from the utterance's own generator
(torchaudio's masking draws from torch's global one, which would make the
masks depend on the worker and the batch order), so each epoch's masks repeat.
"""

from __future__ import annotations

import numpy as np
import torch

from asr_s2s.hookspecs import hookimpl
from asr_s2s.interfaces import Augmentation


class SpecAugment(Augmentation):
    """Frequency and time masks.

    :param freq_masks: how many frequency masks.
    :param freq_mask_bins: the widest frequency mask, in mel bins (widths are uniform in ``[0, this]``).
    :param time_masks: how many time masks.
    :param time_mask_frames: the widest time mask, in frames (10 ms).
    :param time_mask_max_ratio: and at most this share of the utterance's frames.
    """

    name = "specaugment"
    stage = "features"

    def __init__(
        self, freq_masks: int = 2, freq_mask_bins: int = 27, time_masks: int = 2, time_mask_frames: int = 40,
        time_mask_max_ratio: float = 0.2,
    ) -> None:
        for key, value in (("freq_masks", freq_masks), ("freq_mask_bins", freq_mask_bins), ("time_masks", time_masks),
                           ("time_mask_frames", time_mask_frames)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"{key} must be a non-negative integer, got {value!r}")
        if not 0.0 <= time_mask_max_ratio <= 1.0:
            raise ValueError(f"time_mask_max_ratio must be in [0, 1], got {time_mask_max_ratio}")
        self.freq_masks, self.freq_mask_bins = freq_masks, freq_mask_bins
        self.time_masks, self.time_mask_frames = time_masks, time_mask_frames
        self.time_mask_max_ratio = float(time_mask_max_ratio)

    @staticmethod
    def _mask(out: torch.Tensor, dim: int, widest: int, rng: np.random.Generator, fill: float) -> None:
        """Fill a band of ``[0, widest]`` rows (dim 0: frames) or columns (dim 1: bins) of ``out`` with ``fill``."""
        size = out.shape[dim]
        width = int(rng.integers(0, min(widest, size) + 1))
        start = int(rng.integers(0, size - width + 1))
        out.narrow(dim, start, width).fill_(fill)

    def apply_features(self, feats: torch.Tensor, rng: np.random.Generator) -> torch.Tensor:
        """``(T, F)`` features with masked bands and spans: ``(T, F)`` (a new tensor)."""
        out = feats.clone()
        mean = float(feats.mean())
        for _ in range(self.freq_masks):
            self._mask(out, 1, self.freq_mask_bins, rng, mean)
        widest_time = min(self.time_mask_frames, int(self.time_mask_max_ratio * out.shape[0]))
        for _ in range(self.time_masks):
            self._mask(out, 0, widest_time, rng, mean)
        return out


@hookimpl
def asr_s2s_register_augmentations():
    return [SpecAugment]
