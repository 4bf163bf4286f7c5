"""The form fields of ``POST /v1/audio/transcriptions``, checked: OpenAI's, and the decode options a client may set.

Every problem is a 400 (OpenAI's ``invalid_request_error``) naming the field; an unknown field is refused
(with the closest known name) rather than silently ignored, so that a misspelt option is never lost.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from asr_s2s.errors import did_you_mean
from asr_s2s.server.openai_schema import GRANULARITIES, RESPONSE_FORMATS, ApiError

# OpenAI's fields: model (any name: the server has one model), prompt (accepted, ignored), temperature
# (accepted, ignored: the search is deterministic), include[] and chunking_strategy (accepted, ignored)
OPENAI_FIELDS = ("file", "model", "response_format", "timestamp_granularities[]", "timestamp_granularities",
                 "language", "prompt", "temperature", "stream", "include[]", "include", "chunking_strategy")
REPEATABLE = ("timestamp_granularities[]", "timestamp_granularities", "include[]", "include", "scorer", "hotword")
ENGLISH = ("", "en", "english", "en-us", "en-gb")
CLIENT_MAX_BEAM = 32  # the widest beam a client may ask for (the server's own --beam-size may be wider)
# what a client may not set: paths on the server's disk, and the server's use of memory and cores
SERVER_ONLY = {"lm": "--lm", "scorer_param": "--scorer-param", "batch_seconds": "--batch-seconds",
               "precision": "--precision", "max_segment_s": "--max-segment-s", "min_pause_s": "--min-pause-s",
               "word_timestamps": "--word-timestamps"}


def _number(kind: type, low: float | None = None) -> Callable[[str, str], Any]:
    def parse(name: str, text: str):
        try:
            value = kind(text)
        except ValueError:
            raise ApiError(400, f"{name}: expected {'an integer' if kind is int else 'a number'}, got {text!r}",
                           param=name) from None
        if isinstance(value, float) and math.isnan(value) or low is not None and value < low:
            raise ApiError(400, f"{name}: expected a number of at least {low:g}, got {text!r}", param=name)
        return value
    return parse


def _boolean(name: str, text: str) -> bool:
    value = text.strip().lower()
    if value in ("true", "1", "yes", "on"):
        return True
    if value in ("false", "0", "no", "off", ""):
        return False
    raise ApiError(400, f"{name}: expected true or false, got {text!r}", param=name)


def _optional_number(name: str, text: str) -> float | None:
    """A number, or none/inf (end_margin, eos_threshold: off)."""
    if text.strip().lower() in ("none", "null", "off", "inf"):
        return math.inf if name == "end_margin" else None
    return _number(float, 0.0)(name, text)


def _beam_size(name: str, text: str) -> int:
    beam = _number(int, 1)(name, text)
    if beam > CLIENT_MAX_BEAM:
        raise ApiError(400, f"{name}: at most {CLIENT_MAX_BEAM} on this server, got {beam}", param=name)
    return beam


# the decode options a client may set, by field name (the keywords of Transcriber.transcribe)
DECODE_FIELDS: dict[str, Callable[[str, str], Any]] = {
    "beam_size": _beam_size, "max_length_ratio": _number(float, 0.0), "min_length_ratio": _number(float, 0.0),
    "length_normalize": _boolean, "end_margin": _optional_number, "pre_beam_ratio": _number(float, 1.0),
    "eos_threshold": _optional_number,
}
KNOWN_FIELDS = (*OPENAI_FIELDS, *DECODE_FIELDS, "scorer", "hotword")


@dataclass(frozen=True)
class TranscriptionRequest:
    """What a client asked for: the response's form, and the decode options it changes (``overrides``)."""

    response_format: str = "json"
    granularities: tuple[str, ...] = ()
    stream: bool = False
    overrides: dict[str, Any] = field(default_factory=dict)


def _check_names(fields: dict[str, list[str]]) -> None:
    for name, values in fields.items():
        if name in SERVER_ONLY:
            raise ApiError(400, f"{name}: set by the server, not per request (asr-s2s serve {SERVER_ONLY[name]} ...)",
                           param=name)
        if name not in KNOWN_FIELDS:
            hint = " The audio goes in field 'file'." if name in ("audio", "audio_file", "upload", "data") else ""
            raise ApiError(400, f"unknown field {name!r}.{did_you_mean(name, KNOWN_FIELDS)}{hint} Fields: "
                                f"{', '.join(KNOWN_FIELDS)}", param=name, code="unknown_parameter")
        if len(values) > 1 and name not in REPEATABLE:
            raise ApiError(400, f"field {name!r} is given {len(values)} times; give it once", param=name)


def _scorers(values: list[str]) -> dict[str, float]:
    weights = {}
    for item in values:
        name, sep, weight = item.partition("=")
        name = name.strip()
        try:
            value = float(weight)
        except ValueError:
            value = math.nan
        if not (sep and name and math.isfinite(value)):
            raise ApiError(400, f"scorer: expected NAME=WEIGHT, e.g. scorer=ctc=0.3, got {item!r}", param="scorer")
        weights[name] = value
    return weights


def _check_openai_values(one: Callable[[str], str | None]) -> None:
    language = (one("language") or "").strip().lower()
    if language not in ENGLISH:
        raise ApiError(400, f"language {one('language')!r}: this model transcribes English only; send language=en "
                            "or leave the field out", param="language", code="unsupported_language")
    temperature = one("temperature")
    if temperature is not None and temperature.strip() and not 0 <= _number(float)("temperature", temperature) <= 1:
        raise ApiError(400, f"temperature: expected a number from 0 to 1, got {temperature!r}", param="temperature")


def parse_request(fields: dict[str, list[str]]) -> TranscriptionRequest:
    """Check a form's fields (the file aside) and say what the client asked for.

    :raises ApiError: 400 naming the field, for an unknown, repeated or server-only field or a bad value.
    """
    _check_names(fields)

    def one(name: str) -> str | None:
        return fields[name][0] if name in fields else None

    response_format = (one("response_format") or "json").strip() or "json"
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format {response_format!r}: choose one of {', '.join(RESPONSE_FORMATS)}",
                       param="response_format")
    granularities = [g.strip() for g in (*fields.get("timestamp_granularities[]", ()),
                                         *fields.get("timestamp_granularities", ())) if g.strip()]
    for value in granularities:
        if value not in GRANULARITIES:
            raise ApiError(400, f"timestamp_granularities[] {value!r}: choose segment and/or word",
                           param="timestamp_granularities[]")
    if granularities and response_format != "verbose_json":
        raise ApiError(400, "timestamp_granularities[] needs response_format=verbose_json",
                       param="timestamp_granularities[]")
    _check_openai_values(one)
    overrides: dict[str, Any] = {name: parse(name, one(name)) for name, parse in DECODE_FIELDS.items() if name in fields}
    if "scorer" in fields:
        overrides["scorers"] = _scorers(fields["scorer"])
    if "hotword" in fields:
        overrides["hotwords"] = [h for h in fields["hotword"] if h.strip()]
    if "word" in granularities:
        overrides["word_timestamps"] = True
    stream = _boolean("stream", one("stream")) if "stream" in fields else False
    return TranscriptionRequest(response_format, tuple(dict.fromkeys(granularities)), stream, overrides)
