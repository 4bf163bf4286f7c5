"""Writers for transcriptions: plain text, JSON, SubRip (srt), WebVTT (vtt) and TSV.

Each writer turns a :class:`~asr_s2s.transcriber.Transcription` into the
text of one document. Times are seconds from the start of the audio.
"""

from __future__ import annotations

import json
from collections.abc import Callable

from asr_s2s.transcriber import Transcription

FORMATS = ("txt", "json", "srt", "vtt", "tsv")


def to_txt(result: Transcription) -> str:
    """The text on one line."""
    return result.text + "\n"


def to_json(result: Transcription, indent: int | None = 2) -> str:
    """Everything: source, model, options, text, segments with scores and words."""
    return json.dumps(result.to_dict(), indent=indent, ensure_ascii=False) + "\n"


def _timestamp(seconds: float, decimal: str) -> str:
    """``HH:MM:SS,mmm`` (srt) or ``HH:MM:SS.mmm`` (vtt)."""
    ms = max(0, round(seconds * 1000))
    hours, ms = divmod(ms, 3_600_000)
    minutes, ms = divmod(ms, 60_000)
    secs, ms = divmod(ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{ms:03d}"


def _cues(result: Transcription):
    """Segments worth a subtitle: those with text."""
    return [s for s in result.segments if s.text.strip()]


def to_srt(result: Transcription) -> str:
    """SubRip subtitles: one numbered cue per segment with text."""
    blocks = [
        f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n"
        for i, s in enumerate(_cues(result), start=1)
    ]
    return "\n".join(blocks)


def to_vtt(result: Transcription) -> str:
    """WebVTT subtitles: one cue per segment with text."""
    blocks = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in _cues(result)]
    return "WEBVTT\n\n" + "\n".join(blocks)


def to_tsv(result: Transcription) -> str:
    """``start<TAB>end<TAB>text`` per segment (seconds, 3 decimals), with a header line."""
    rows = ["start\tend\ttext"] + [f"{s.start:.3f}\t{s.end:.3f}\t{s.text}" for s in result.segments]
    return "\n".join(rows) + "\n"


WRITERS: dict[str, Callable[[Transcription], str]] = {
    "txt": to_txt, "json": to_json, "srt": to_srt, "vtt": to_vtt, "tsv": to_tsv,
}


def format_transcription(result: Transcription, fmt: str) -> str:
    """The document of ``result`` in format ``fmt`` (one of :data:`FORMATS`)."""
    try:
        return WRITERS[fmt](result)
    except KeyError:
        raise ValueError(f"unknown format {fmt!r}; choose one of {', '.join(FORMATS)}") from None
