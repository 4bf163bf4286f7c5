"""Responses and errors in the shapes of OpenAI's audio API, so that its clients work unchanged.

``json``: ``{"text", "usage"}``; ``text``, ``srt``, ``vtt``: the documents of :mod:`asr_s2s.formats`;
``verbose_json``: ``{"task", "language", "duration", "text", "segments", "words", "usage"}`` with Whisper's
segment fields; ``stream=true``: server-sent events ``transcript.text.delta`` (one per segment with text) and
``transcript.text.done``. Errors: ``{"error": {"message", "type", "param", "code"}}``.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable, Iterable
from typing import Any

from asr_s2s.formats import to_srt, to_txt, to_vtt
from asr_s2s.transcription import Segment, Transcription

RESPONSE_FORMATS = ("json", "text", "srt", "vtt", "verbose_json")
GRANULARITIES = ("segment", "word")
LANGUAGE = "english"  # verbose_json's language: the models of this toolkit are trained on English
DOCUMENTS = {"txt": to_txt, "srt": to_srt, "vtt": to_vtt}  # what the page offers as downloads
MEDIA_TYPES = {"json": "application/json", "verbose_json": "application/json", "text": "text/plain; charset=utf-8",
               "srt": "text/plain; charset=utf-8", "vtt": "text/vtt; charset=utf-8"}


class ApiError(Exception):
    """An error a client sees: an HTTP status and OpenAI's error object. Never carries a traceback."""

    def __init__(self, status: int, message: str, *, type: str = "invalid_request_error", param: str | None = None,
                 code: str | None = None, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.type, self.param, self.code = status, message, type, param, code
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        return error_body(self.message, self.type, self.param, self.code)


def error_body(message: str, type: str, param: str | None = None, code: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: ``{"error": {"message", "type", "param", "code"}}``."""
    return {"error": {"message": message, "type": type, "param": param, "code": code}}


def _seconds(value: float) -> float:
    return round(float(value), 3)


def compression_ratio(text: str) -> float:
    """Whisper's ``compression_ratio``: the text's UTF-8 length over its zlib-compressed length (1.0 for '')."""
    data = text.encode("utf-8")
    return round(len(data) / len(zlib.compress(data)), 4) if data else 1.0


def spoken(segments: Iterable[Segment]) -> list[Segment]:
    """The segments with text, in order (subtitles and OpenAI's segment lists leave out silent ones)."""
    return [s for s in segments if s.text.strip()]


def segment_object(number: int, segment: Segment, tokens: list[int]) -> dict[str, Any]:
    """One entry of verbose_json's ``segments``, in Whisper's fields.

    ``avg_logprob`` is the search's score per output token (the end token counted), ``seek`` the segment's
    start in 10 ms frames, ``temperature`` 0 (beam search, no sampling) and ``no_speech_prob`` 0 (silence
    never reaches the decoder: voice activity detection cuts it out first).
    """
    return {
        "id": number, "seek": int(round(segment.start * 100)), "start": _seconds(segment.start),
        "end": _seconds(segment.end), "text": segment.text, "tokens": tokens, "temperature": 0.0,
        "avg_logprob": round(segment.score / (len(tokens) + 1), 4),
        "compression_ratio": compression_ratio(segment.text), "no_speech_prob": 0.0,
    }


def verbose_json(result: Transcription, granularities: Iterable[str], tokens_of: Callable[[str], list[int]],
                 ) -> dict[str, Any]:
    """verbose_json: ``segments`` unless only ``word`` granularity was asked for, ``words`` when it was."""
    granularities = set(granularities) or {"segment"}
    body: dict[str, Any] = {"task": "transcribe", "language": LANGUAGE, "duration": _seconds(result.duration),
                            "text": result.text}
    if "segment" in granularities:
        body["segments"] = [segment_object(i, s, tokens_of(s.text)) for i, s in enumerate(spoken(result.segments))]
    if "word" in granularities:
        body["words"] = [{"word": w.word, "start": _seconds(w.start), "end": _seconds(w.end),
                          "probability": round(w.probability, 4)} for w in result.words]
    body["usage"] = usage(result)
    return body


def usage(result: Transcription) -> dict[str, Any]:
    return {"type": "duration", "seconds": _seconds(result.duration)}


def response_body(result: Transcription, response_format: str, granularities: Iterable[str],
                  tokens_of: Callable[[str], list[int]]) -> tuple[str, str]:
    """The body of a finished transcription in ``response_format``, and its media type."""
    if response_format == "json":
        body = json.dumps({"text": result.text, "usage": usage(result)}, ensure_ascii=False)
    elif response_format == "verbose_json":
        body = json.dumps(verbose_json(result, granularities, tokens_of), ensure_ascii=False)
    elif response_format == "text":
        body = to_txt(result)
    elif response_format == "srt":
        body = to_srt(result)
    elif response_format == "vtt":
        body = to_vtt(result)
    else:
        raise ValueError(f"unknown response format {response_format!r}")
    return body, MEDIA_TYPES[response_format]


# -- server-sent events ---------------------------------------------------------------
def sse(data: dict[str, Any]) -> bytes:
    """One server-sent event carrying ``data`` as JSON."""
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def delta_event(number: int, segment: Segment, first: bool) -> dict[str, Any]:
    """``transcript.text.delta`` for one segment with text: OpenAI's ``delta`` (a space before all but the first,
    so that the deltas add up to the text) and ``segment_id``, and the segment's times (``segment``)."""
    return {
        "type": "transcript.text.delta", "delta": segment.text if first else " " + segment.text,
        "segment_id": str(number),
        "segment": {"id": number, "start": _seconds(segment.start), "end": _seconds(segment.end), "text": segment.text},
    }


def done_event(result: Transcription) -> dict[str, Any]:
    """``transcript.text.done``: OpenAI's ``text``, and the transcript as txt, srt and vtt (``documents``, made by
    the writers of ``response_format``; the page offers them as downloads) with its ``duration``."""
    return {"type": "transcript.text.done", "text": result.text, "duration": _seconds(result.duration),
            "documents": {name: write(result) for name, write in DOCUMENTS.items()}}
