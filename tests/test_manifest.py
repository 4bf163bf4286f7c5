"""asr_s2s.manifest: JSON-lines manifests and LibriSpeech-layout folders."""

from __future__ import annotations

import json
import logging
import shutil

import pytest
import soundfile

from asr_s2s.errors import ManifestError
from asr_s2s.manifest import Utterance, read_librispeech_dir, read_manifest, write_manifest

from conftest import FIXTURE_DIR


def test_read_librispeech_dir(fixture_utterances):
    by_id = {u.id: u for u in fixture_utterances}
    assert sorted(by_id) == [
        "1001-10-0000", "1001-10-0001", "1001-10-0002", "1002-20-0000", "1002-20-0001", "1002-20-0002",
        "1003-30-0000", "1003-30-0001",
    ]
    utt = by_id["1002-20-0000"]
    assert utt.text == "HE DIDN'T KNOW THE WAY"
    assert utt.speaker == "1002"
    assert utt.audio == str(FIXTURE_DIR.resolve() / "1002" / "20" / "1002-20-0000.flac")
    for u in fixture_utterances:
        assert u.duration == pytest.approx(soundfile.info(u.audio).duration)
        assert 0.5 < u.duration < 5


def test_librispeech_dir_errors(tmp_path):
    with pytest.raises(ManifestError, match="no such folder"):
        read_librispeech_dir(tmp_path / "missing", progress=False)
    with pytest.raises(ManifestError, match=r"trans\.txt"):
        read_librispeech_dir(tmp_path, progress=False)
    chapter = tmp_path / "7" / "1"
    chapter.mkdir(parents=True)
    (chapter / "7-1.trans.txt").write_text("7-1-0000 HELLO\n7-1-0001 MISSING AUDIO\n")
    shutil.copy(FIXTURE_DIR / "1001" / "10" / "1001-10-0001.flac", chapter / "7-1-0000.flac")
    with pytest.raises(ManifestError) as info:
        read_librispeech_dir(tmp_path, progress=False)
    assert f"{chapter / '7-1.trans.txt'}:2" in str(info.value) and "7-1-0001" in str(info.value)


def test_write_read_round_trip(tmp_path, fixture_utterances):
    path = tmp_path / "sub" / "train.jsonl"
    write_manifest(fixture_utterances, path)
    assert not list(path.parent.glob("*.tmp"))
    lines = path.read_text().splitlines()
    assert len(lines) == 8 and set(json.loads(lines[0])) == {"id", "audio", "duration", "text", "speaker"}
    assert read_manifest(path) == fixture_utterances


def test_relative_audio_resolved_against_manifest_folder(tmp_path, caplog):
    (tmp_path / "audio").mkdir()
    path = tmp_path / "m.jsonl"
    path.write_text(
        json.dumps({"id": "a", "audio": "audio/a.flac", "duration": 1.5, "text": "HI"}) + "\n\n"
        + json.dumps({"id": "b", "audio": "../elsewhere/b.flac", "duration": 2, "text": "HO"}) + "\n"
    )
    with caplog.at_level(logging.WARNING, logger="asr_s2s.manifest"):
        a, b = read_manifest(path)
    assert a == Utterance("a", str(tmp_path.resolve() / "audio" / "a.flac"), 1.5, "HI", "")
    assert b.duration == 2.0 and isinstance(b.duration, float)
    assert any("escapes" in r.getMessage() and "../elsewhere/b.flac" in r.getMessage() for r in caplog.records)


def test_text_optional_when_not_required(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_text(json.dumps({"id": "a", "audio": "/x.wav", "duration": 1}) + "\n")
    assert read_manifest(path, require_text=False)[0].text == ""
    with pytest.raises(ManifestError, match=r"m\.jsonl:1: missing field\(s\) text"):
        read_manifest(path)


GOOD = {"id": "u1", "audio": "/a.wav", "duration": 1.0, "text": "HELLO"}


@pytest.mark.parametrize(
    ("second_line", "expected"),
    [
        ('{"id": "u2", "audio": "/b.wav", "text": "X"}', r":2: missing field\(s\) duration"),
        ('{"audio": "/b.wav", "duration": 1, "text": "X"}', r":2: missing field\(s\) id"),
        (json.dumps(GOOD), r":2: duplicate id 'u1' \(first on line 1\)"),
        ('{"id": "u2", "audio": "/b.wav", "duration": -1.0, "text": "X"}', r":2: duration must be positive"),
        ('{"id": "u2", "audio": "/b.wav", "duration": 0, "text": "X"}', r":2: duration must be positive"),
        ('{"id": "u2", "audio": "/b.wav", "duration": NaN, "text": "X"}', r":2: duration must be positive"),
        ('{"id": "u2", "audio": "/b.wav", "duration": "long", "text": "X"}', r":2: duration 'long' is not a number"),
        ('{"id": "u2", "audio": "/b.wav", "duration": 1, "text": 5}', r":2: text must be a string"),
        ('{"id": "u2", "audio": "/b.wav", "duration": 1, "text": "X"', r":2: not valid JSON"),
        ("not json at all", r":2: not valid JSON"),
        ('["u2", "/b.wav", 1]', r":2: expected a JSON object"),
    ],
)
def test_malformed_lines_name_file_and_line(tmp_path, second_line, expected):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(GOOD) + "\n" + second_line + "\n")
    with pytest.raises(ManifestError, match=str(path).replace(".", r"\.") + expected):
        read_manifest(path)


def test_missing_or_empty_manifest(tmp_path):
    with pytest.raises(ManifestError, match="no such manifest"):
        read_manifest(tmp_path / "none.jsonl")
    empty = tmp_path / "empty.jsonl"
    empty.write_text("\n\n")
    with pytest.raises(ManifestError, match="no utterances"):
        read_manifest(empty)
