"""asr_s2s.formats: txt, json, srt, vtt and tsv documents, parsed back with standard parsers."""

from __future__ import annotations

import csv
import io
import json

import pytest
import srt
import webvtt

from asr_s2s.formats import FORMATS, format_transcription, to_json, to_srt, to_tsv, to_txt, to_vtt
from asr_s2s.transcriber import Segment, TranscribeOptions, Transcription, Word


@pytest.fixture
def result() -> Transcription:
    segments = (
        Segment(0, 0.25, 2.5, "THE CAT SAT", -1.5, {"decoder": -1.5},
                (Word("THE", 0.3, 0.5, 0.9), Word("CAT", 0.6, 1.0, 0.8), Word("SAT", 1.2, 2.0, 0.7))),
        Segment(1, 3.0, 3.4, "", -0.2, {"decoder": -0.2}),  # a segment in which nothing was recognised
        Segment(2, 3725.5, 3731.0049, "AN HOUR LATER", -3.0, {"decoder": -2.0, "ctc": -4.0}),
    )
    return Transcription("talk.flac", "THE CAT SAT AN HOUR LATER", segments, 3732.0, "model@sha256:0123",
                         TranscribeOptions().with_overrides(beam_size=4, hotwords=("CAT",), scorers={"hotwords": 2.0}))


def test_txt(result):
    assert to_txt(result) == "THE CAT SAT AN HOUR LATER\n"


def test_json_holds_segments_words_scores_model_and_options(result):
    doc = json.loads(to_json(result))
    assert doc["text"] == result.text and doc["model"] == "model@sha256:0123" and doc["source"] == "talk.flac"
    assert [s["text"] for s in doc["segments"]] == ["THE CAT SAT", "", "AN HOUR LATER"]
    assert doc["segments"][0]["words"][1] == {"word": "CAT", "start": 0.6, "end": 1.0, "probability": 0.8}
    assert doc["segments"][2]["scores"] == {"decoder": -2.0, "ctc": -4.0} and doc["segments"][2]["end"] == 3731.005
    assert doc["options"]["beam_size"] == 4 and doc["options"]["hotwords"] == ["CAT"]
    assert doc["options"]["scorers"] == {"decoder": 1.0, "hotwords": 2.0}
    assert "\n" not in to_json(result, indent=None).rstrip("\n")


def test_srt_parses(result):
    subs = list(srt.parse(to_srt(result)))
    assert [s.content for s in subs] == ["THE CAT SAT", "AN HOUR LATER"]  # no empty cue
    assert [s.index for s in subs] == [1, 2]
    assert subs[0].start.total_seconds() == 0.25 and subs[0].end.total_seconds() == 2.5
    assert subs[1].start.total_seconds() == 3725.5 and subs[1].end.total_seconds() == 3731.005
    assert "01:02:05,500 --> 01:02:11,005" in to_srt(result)


def test_vtt_parses(result):
    captions = list(webvtt.from_string(to_vtt(result)))
    assert [c.text for c in captions] == ["THE CAT SAT", "AN HOUR LATER"]
    assert captions[0].start == "00:00:00.250" and captions[0].end == "00:00:02.500"
    assert captions[1].start == "01:02:05.500"


def test_tsv_reads_as_a_table(result):
    rows = list(csv.DictReader(io.StringIO(to_tsv(result)), delimiter="\t"))
    assert [r["text"] for r in rows] == ["THE CAT SAT", "", "AN HOUR LATER"]
    assert float(rows[2]["start"]) == 3725.5 and float(rows[0]["end"]) == 2.5


def test_empty_transcription_is_still_a_valid_document():
    empty = Transcription("silence.wav", "", (), 5.0, "m", TranscribeOptions())
    assert list(srt.parse(to_srt(empty))) == []
    assert list(webvtt.from_string(to_vtt(empty))) == []
    assert json.loads(to_json(empty))["segments"] == []


def test_every_format_has_a_writer(result):
    for fmt in FORMATS:
        assert format_transcription(result, fmt).endswith("\n")
    with pytest.raises(ValueError, match="unknown format 'doc'"):
        format_transcription(result, "doc")
