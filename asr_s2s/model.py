"""The recogniser: frontend, encoder plugin, optional CTC head and decoder plugin."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from asr_s2s.config import ModelConfig
from asr_s2s.dataset import IGNORE_ID
from asr_s2s.errors import ConfigError
from asr_s2s.features import CMVNStats, Frontend
from asr_s2s.interfaces import Decoder, Encoder
from asr_s2s.registry import Registry
from asr_s2s.tokenizer import CharTokenizer


@dataclass(frozen=True)
class LossOutput:
    """Training losses of one batch (scalars)."""

    loss: torch.Tensor
    attention_loss: torch.Tensor
    ctc_loss: torch.Tensor | None
    accuracy: torch.Tensor  # teacher-forced token accuracy


class ASRModel(nn.Module):
    """Composes components by name; it knows only their interfaces."""

    def __init__(self, config: ModelConfig, tokenizer: CharTokenizer, cmvn: CMVNStats, registry: Registry) -> None:
        super().__init__()
        if not 0.0 <= config.ctc_weight <= 1.0:
            raise ConfigError(f"model.ctc_weight must be in [0, 1], got {config.ctc_weight}")
        if len(cmvn.mean) != config.num_mel_bins:
            raise ConfigError(f"CMVN stats have {len(cmvn.mean)} bins but model.num_mel_bins is {config.num_mel_bins}")
        self.config = config
        self.tokenizer = tokenizer
        self.vocab_size = len(tokenizer)
        self.frontend = Frontend(cmvn, config.specaug)
        self.encoder: Encoder = registry.build("encoder", config.encoder, "model.encoder", input_dim=config.num_mel_bins)
        self.decoder: Decoder = registry.build(
            "decoder", config.decoder, "model.decoder",
            encoder_dim=self.encoder.output_dim, vocab_size=self.vocab_size, sos_id=tokenizer.sos_id,
        )
        self.ctc = nn.Linear(self.encoder.output_dim, self.vocab_size) if config.ctc_weight > 0 else None

    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalise and encode raw features.

        :param feats: ``(B, T, F)`` raw log-mel features. :param lengths: ``(B,)``.
        :returns: states ``(B, T', D)`` and lengths ``(B,)``.
        """
        return self.encoder(self.frontend(feats, lengths), lengths)

    def ctc_log_probs(self, states: torch.Tensor) -> torch.Tensor:
        """:param states: ``(B, T', D)``. :returns: ``(B, T', V)`` CTC log-probabilities."""
        if self.ctc is None:
            raise RuntimeError("this model has no CTC head (model.ctc_weight is 0)")
        return torch.log_softmax(self.ctc(states), dim=-1)

    def forward(
        self, feats: torch.Tensor, feat_lengths: torch.Tensor, tokens: torch.Tensor, token_lengths: torch.Tensor
    ) -> LossOutput:
        """Joint CTC-attention loss of a batch.

        :param feats: ``(B, T, F)``; :param feat_lengths: ``(B,)``;
        :param tokens: ``(B, U)`` targets padded with ``IGNORE_ID``; :param token_lengths: ``(B,)``.
        """
        states, state_lengths = self.encode(feats, feat_lengths)
        return self.loss(states, state_lengths, tokens, token_lengths)

    def loss(
        self, states: torch.Tensor, state_lengths: torch.Tensor, tokens: torch.Tensor, token_lengths: torch.Tensor
    ) -> LossOutput:
        """Joint loss from encoder states ``(B, T', D)`` with lengths ``(B,)`` (see :meth:`forward`)."""
        batch = tokens.shape[0]
        sos = torch.full((batch, 1), self.tokenizer.sos_id, dtype=tokens.dtype, device=tokens.device)
        tokens_in = torch.cat([sos, tokens.clamp_min(0)], dim=1)  # (B, U+1)
        targets = torch.cat([tokens, torch.full_like(sos, IGNORE_ID)], dim=1)
        targets[torch.arange(batch, device=tokens.device), token_lengths] = self.tokenizer.eos_id
        logits, _ = self.decoder(states, state_lengths, tokens_in, token_lengths + 1)
        att_loss = F.cross_entropy(
            logits.transpose(1, 2), targets, ignore_index=IGNORE_ID, label_smoothing=self.config.label_smoothing
        )
        valid = targets != IGNORE_ID
        accuracy = ((logits.argmax(-1) == targets) & valid).sum() / valid.sum().clamp_min(1)
        ctc_loss = None
        loss = att_loss
        if self.ctc is not None:
            log_probs = self.ctc_log_probs(states).transpose(0, 1)  # (T', B, V)
            ctc_loss = F.ctc_loss(
                log_probs, tokens.clamp_min(0), state_lengths, token_lengths,
                blank=self.tokenizer.blank_id, reduction="sum", zero_infinity=True,
            ) / batch
            weight = self.config.ctc_weight
            loss = (1 - weight) * att_loss + weight * ctc_loss / token_lengths.float().mean()
        return LossOutput(loss, att_loss, ctc_loss, accuracy)
