"""The LAS speller: an LSTM decoder with location-aware or content-based attention."""

from __future__ import annotations

from asr_s2s.hookspecs import hookimpl

from .attention import ATTENTION_TYPES, TOEPLITZ_MAX_ELEMENTS, TOEPLITZ_MAX_SPAN, Attention
from .decoder import AttentionDecoder

__all__ = ["ATTENTION_TYPES", "TOEPLITZ_MAX_ELEMENTS", "TOEPLITZ_MAX_SPAN", "Attention", "AttentionDecoder"]


@hookimpl
def asr_s2s_register_decoders() -> list[type]:
    return [AttentionDecoder]
