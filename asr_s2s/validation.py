"""Validation during training: the teacher-forced loss and the greedy CER over the validation set,
each rank scoring its share, the shares merged; and one utterance's attention, to plot."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from asr_s2s import distributed
from asr_s2s.metrics import error_rates
from asr_s2s.model import ASRModel
from asr_s2s.optimization import autocast
from asr_s2s.search import greedy_search
from asr_s2s.training_data import report_failed


@dataclass
class ValidationShare:
    """What one rank's share of the validation set gave."""

    loss_sum: float  # the loss of each batch times its size, summed
    refs: list[str]  # reference texts
    hyps: list[str]  # greedy transcripts, in the same order
    example: tuple[str, str, np.ndarray] | None  # the first utterance's id, transcript and attention weights


@torch.inference_mode()
def validate_share(model: ASRModel, loader, device: torch.device, bf16: bool) -> ValidationShare:
    """Score ``model`` (in eval mode, then back in train mode) on every batch of ``loader``."""
    model.eval()
    losses, refs, hyps = [], [], []
    tok = model.tokenizer
    example = None
    for batch in loader:
        report_failed(batch)
        if len(batch) == 0:
            continue
        batch = batch.to(device)
        with autocast(device, bf16):
            states, lengths = model.encode(batch.feats, batch.feat_lengths)
            out = model.loss(states, lengths, batch.tokens, batch.token_lengths)
        states = states.float()
        losses.append(float(out.loss) * len(batch))
        found, attention = greedy_search(model.decoder, states, lengths, tok.sos_id, tok.eos_id)
        if example is None:
            text = tok.decode(found[0].tokens)
            weights = attention[0, : len(found[0].tokens) + 1, : int(lengths[0])].float().cpu().numpy()
            example = (batch.ids[0], text, weights)
        refs += batch.texts
        hyps += [tok.decode(h.tokens) for h in found]
    model.train()
    return ValidationShare(sum(losses), refs, hyps, example)


def merged_scores(share: ValidationShare, world_size: int) -> tuple[float, float]:
    """Validation loss per utterance and CER in percent over every rank's share (NaN, NaN without any utterance)."""
    losses, refs, hyps = [share.loss_sum], share.refs, share.hyps
    if world_size > 1:
        shares = distributed.all_gather_objects((share.loss_sum, refs, hyps))
        losses, refs, hyps = [s[0] for s in shares], [r for s in shares for r in s[1]], [h for s in shares for h in s[2]]
    if not refs:
        return float("nan"), float("nan")
    return sum(losses) / len(refs), error_rates(refs, hyps).cer
