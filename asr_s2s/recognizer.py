"""Decoding with a trained model: scorers from config, then greedy or beam search."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from asr_s2s.progress import progress_bar

from asr_s2s.config import DecodeConfig, check_scorer_params
from asr_s2s.dataset import Batch, SpeechDataset, make_loader
from asr_s2s.interfaces import Scorer
from asr_s2s.manifest import Utterance
from asr_s2s.model import ASRModel
from asr_s2s.registry import Registry
from asr_s2s.search import BeamSearch, Hypothesis, greedy_search

log = logging.getLogger(__name__)

# An output with fewer characters than this per second of audio is far shorter than the speech
# could hold (read English runs at 12-16 characters a second): it is logged as a warning.
MIN_CHARS_PER_S = 2.0
SHORT_OUTPUT_MIN_S = 1.0  # audio shorter than this (seconds) is not checked
SHORT_OUTPUT_WARNINGS = 10  # per decode_utterances call, then one summary line


def output_warning(text: str, seconds: float, ended: bool = True) -> str | None:
    """Why an output looks cut short, or None: no hypothesis ended, or too few characters for ``seconds`` of audio."""
    if not ended:
        return ("the search ended with no finished hypothesis (every <eos> was ruled out by a scorer), "
                "so the text is empty; check the scorer weights")
    chars = len(text.replace(" ", ""))
    if seconds >= SHORT_OUTPUT_MIN_S and chars < MIN_CHARS_PER_S * seconds:
        return (f"{chars} character(s) for {seconds:.1f} s of audio (fewer than {MIN_CHARS_PER_S:g} a second): "
                "the search may have ended early: with a language model, set --eos-threshold 1.5 "
                "(decode.eos_threshold), or check the scorer weights (the length bonus) and the audio")
    return None


@dataclass(frozen=True)
class Recognition:
    """The result for one utterance: best text, its hypotheses, or why it failed."""

    id: str
    text: str = ""
    hypotheses: tuple[Hypothesis, ...] = ()
    error: str | None = None
    attention: np.ndarray | None = field(default=None, repr=False)  # (U, T') for greedy decoding


def build_scorers(model: ASRModel, registry: Registry, weights: Mapping[str, float], params: Mapping[str, Mapping[str, Any]]) -> dict[str, Scorer]:
    """Build each scorer with a positive weight by name.

    :raises PluginError: for an unknown scorer name. :raises ConfigError: for params of an unused scorer.
    """
    check_scorer_params(weights, params)
    scorers = {}
    for name, weight in weights.items():
        registry.get("scorer", name)  # unknown names fail even at weight 0
        if weight > 0:
            scorers[name] = registry.build("scorer", {"name": name, **params.get(name, {})}, f"decode.scorers.{name}", model=model)
    return scorers


class Recognizer:
    """Decodes feature batches with one model and one set of options."""

    def __init__(self, model: ASRModel, decode: DecodeConfig, registry: Registry, device: str | torch.device = "cpu") -> None:
        self.model = model.to(device).eval()
        self.decode = decode
        self.device = torch.device(device)
        self.options = decode.search_options()
        active = {n for n, w in decode.scorers.items() if w > 0}
        self.greedy = decode.beam_size == 1 and active == {"decoder"}
        scorers = build_scorers(model, registry, decode.scorers, decode.scorer_params)
        tok = model.tokenizer
        origins = {name: registry.origin("scorer", name) for name in scorers}
        self.search = None if self.greedy else BeamSearch(
            scorers, self.options, tok.sos_id, tok.eos_id, model.vocab_size, origins=origins
        )

    @torch.inference_mode()
    def encode(self, feats: torch.Tensor, lengths: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Encode raw features ``(B, T, F)`` with lengths ``(B,)`` at ``decode.precision``.

        :returns: fp32 states ``(B, T', D)`` and their lengths ``(B,)``, on this recognizer's device.
        """
        bf16 = self.decode.precision == "bf16"
        with torch.autocast(self.device.type, dtype=torch.bfloat16, enabled=bf16):
            states, state_lengths = self.model.encode(feats.to(self.device), lengths.to(self.device))
        return states.float(), state_lengths

    @torch.inference_mode()
    def decode_features(self, feats: torch.Tensor, lengths: torch.Tensor, ids: Sequence[str]) -> list[Recognition]:
        """Decode a padded batch of raw features ``(B, T, F)`` with lengths ``(B,)``."""
        return self.decode_states(*self.encode(feats, lengths), ids)

    @torch.inference_mode()
    def decode_states(self, states: torch.Tensor, state_lengths: torch.Tensor, ids: Sequence[str]) -> list[Recognition]:
        """Search a batch of encoder states ``(B, T', D)`` with lengths ``(B,)`` (from ``model.encode``)."""
        tok = self.model.tokenizer
        if self.greedy:
            hyps, attention = greedy_search(
                self.model.decoder, states, state_lengths, tok.sos_id, tok.eos_id,
                self.decode.max_length_ratio, self.decode.min_length_ratio,
            )
            out = []
            for b, (utt_id, hyp) in enumerate(zip(ids, hyps)):
                att = attention[b, : len(hyp.tokens) + 1, : int(state_lengths[b])].float().cpu().numpy()
                out.append(Recognition(utt_id, tok.decode(hyp.tokens), (hyp,), attention=att))
            return out
        nbest = self.search(states, state_lengths)
        return [Recognition(i, tok.decode(h[0].tokens) if h else "", tuple(h)) for i, h in zip(ids, nbest)]

    def decode_batch(self, batch: Batch) -> list[Recognition]:
        """Decode a :class:`Batch`; its failed items come back with their error."""
        results = self.decode_features(batch.feats, batch.feat_lengths, batch.ids) if len(batch) else []
        return results + [Recognition(utt_id, error=reason) for utt_id, reason in batch.failed]

    def decode_utterances(self, utterances: Sequence[Utterance], num_workers: int = 0, progress: bool = True) -> list[Recognition]:
        """Decode manifest entries in duration-bucketed batches, in manifest order."""
        dataset = SpeechDataset(utterances, self.model.tokenizer, require_text=False)
        loader = make_loader(dataset, self.decode.batch_seconds, shuffle=False, num_workers=num_workers)
        by_id: dict[str, Recognition] = {}
        with progress_bar(total=len(utterances), desc="decoding", unit="utt", disable=not progress) as bar:
            for batch in loader:
                for result in self.decode_batch(batch):
                    by_id[result.id] = result
                bar.update(len(batch) + len(batch.failed))
        results = [by_id[u.id] for u in utterances]
        short = [(u, why) for u, r in zip(utterances, results) if r.error is None
                 and (why := output_warning(r.text, u.duration, ended=bool(r.hypotheses))) is not None]
        for u, why in short[:SHORT_OUTPUT_WARNINGS]:
            log.warning("%s (%s): %s", u.id, u.audio, why)
        if len(short) > SHORT_OUTPUT_WARNINGS:
            log.warning("... and %d more utterance(s) whose output looks cut short (%d of %d in all)",
                        len(short) - SHORT_OUTPUT_WARNINGS, len(short), len(utterances))
        return results
