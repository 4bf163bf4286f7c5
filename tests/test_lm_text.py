"""`asr-s2s lm-text`: the transcripts of manifests, one a line (the LibriSpeech recipe's default LM text)."""

from __future__ import annotations

import json

UTTERANCES = [  # (id, text) as `asr-s2s prepare` writes them: LibriSpeech's upper-case transcripts, and one with
    ("1272-128104-0000", "MISTER QUILTER IS THE APOSTLE OF THE MIDDLE CLASSES"),  # non-ASCII characters
    ("1272-128104-0001", "NOR IS MISTER QUILTER'S MANNER LESS INTERESTING THAN HIS MATTER"),
    ("1272-128104-0002", "HE TELLS US THAT AT THIS FESTIVE SEASON OF THE YEAR WITH CHRISTMAS AND ROAST BEEF"),
    ("84-121123-0000", "CAFÉ  NAÏVE  text kept as written "),
]


def _manifest(path, utterances):
    rows = [json.dumps({"id": i, "audio": f"{i}.flac", "duration": 2.5, "text": t, "speaker": i.split("-")[0]},
                       ensure_ascii=False) for i, t in utterances]
    path.write_text("\n".join(rows[:2]) + "\n\n" + "\n".join(rows[2:]) + "\n", encoding="utf-8")  # a blank line too
    return path


def test_each_transcript_on_its_own_line_in_manifest_order(run_cli, tmp_path):
    manifest = _manifest(tmp_path / "train.jsonl", UTTERANCES)
    out = tmp_path / "dump" / "train_text.txt"
    code, printed, _ = run_cli("lm-text", "--manifest", manifest, "--out", out)
    assert code == 0
    expected = [json.loads(line)["text"] for line in manifest.read_text(encoding="utf-8").splitlines() if line.strip()]
    assert out.read_text(encoding="utf-8").split("\n") == [*expected, ""], "unnormalised, one a line, newline-terminated"
    assert printed == f"{out}: {len(UTTERANCES)} transcripts from 1 manifest(s)\n"


def test_several_manifests_are_joined_in_order(run_cli, tmp_path):
    first = _manifest(tmp_path / "a.jsonl", UTTERANCES[:3])
    second = _manifest(tmp_path / "b.jsonl", UTTERANCES[3:])
    out = tmp_path / "text.txt"
    assert run_cli("lm-text", "--manifest", first, second, "--out", out)[0] == 0
    assert out.read_text(encoding="utf-8").splitlines() == [t for _, t in UTTERANCES]


def test_a_manifest_without_text_is_an_error_naming_the_line(run_cli, tmp_path):
    manifest = tmp_path / "bad.jsonl"
    manifest.write_text(json.dumps({"id": "a", "audio": "a.flac", "duration": 1.0}) + "\n")
    code, _, err = run_cli("lm-text", "--manifest", manifest, "--out", tmp_path / "text.txt")
    assert code == 2 and "bad.jsonl:1: missing field(s) text" in err
    assert not (tmp_path / "text.txt").exists()
