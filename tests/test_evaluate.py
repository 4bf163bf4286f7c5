"""``asr-s2s evaluate`` scores honestly: every utterance counts, references as written, outputs replaced whole."""

from __future__ import annotations

import dataclasses
import json
import re

import jiwer
import pytest

from asr_s2s.manifest import write_manifest

OUTPUTS = ("hyp.trn", "alignments.txt", "results.json")


def _evaluate(run_cli, package, utterances, tmp_path, name, *extra):
    """Run ``evaluate --json`` on ``utterances``; returns (exit code, result, stderr + logs, output dir)."""
    manifest, out_dir = tmp_path / f"{name}.jsonl", tmp_path / f"decode_{name}"
    write_manifest(utterances, manifest)
    code, out, err = run_cli("evaluate", "--model", package, "--manifest", manifest, "--output-dir", out_dir,
                             "--num-workers", "0", "--quiet", "--json", *extra)
    return code, json.loads(out) if out.strip() else None, err, out_dir


def _hypotheses(out_dir) -> dict[str, str]:
    lines = (out_dir / "hyp.trn").read_text().splitlines()
    return {m.group(2): m.group(1) for m in (re.fullmatch(r"(.*) \((\S+)\)", line) for line in lines)}


def _lost(fixture_utterances, tmp_path, utt_id="lost", text="GONE FOR GOOD"):
    return dataclasses.replace(fixture_utterances[0], id=utt_id, audio=str(tmp_path / f"{utt_id}.flac"), text=text)


def test_an_utterance_that_fails_to_load_counts_as_all_deletions(run_cli, trained_package, fixture_utterances, tmp_path):
    code, base, _, _ = _evaluate(run_cli, trained_package, fixture_utterances, tmp_path, "base")
    assert code == 0 and base["failed"] == 0
    code, result, err, out_dir = _evaluate(
        run_cli, trained_package, [*fixture_utterances, _lost(fixture_utterances, tmp_path)], tmp_path, "with_lost")
    assert code == 1, "a failed input still exits 1"
    assert result["failed"] == 1 and result["utterances"] == base["utterances"] + 1 == 9
    assert result["words"] == base["words"] + 3 and result["deletions"] == base["deletions"] + 3
    assert (result["substitutions"], result["insertions"]) == (base["substitutions"], base["insertions"])
    errors = base["substitutions"] + base["deletions"] + base["insertions"] + 3
    assert result["wer"] == pytest.approx(100 * errors / (base["words"] + 3))
    assert result["characters"] == base["characters"] + len("GONE FOR GOOD")
    assert result["char_deletions"] == base["char_deletions"] + len("GONE FOR GOOD")
    assert result["sentence_errors"] == base["sentence_errors"] + 1
    assert re.search(r"not decoded: lost; 1 of 9 utterances .* 3 reference words count as deletions", err), err
    assert _hypotheses(out_dir)["lost"] == ""
    alignments = (out_dir / "alignments.txt").read_text()
    assert "=== lost (WER 100.0%) ===" in alignments and "REF: GONE FOR GOOD" in alignments
    assert json.loads((out_dir / "results.json").read_text()) == result


def test_the_table_says_how_many_utterances_failed(run_cli, trained_package, fixture_utterances, tmp_path):
    manifest = tmp_path / "m.jsonl"
    write_manifest([*fixture_utterances[:2], _lost(fixture_utterances, tmp_path)], manifest)
    code, out, err = run_cli("evaluate", "--model", trained_package, "--manifest", manifest,
                             "--output-dir", tmp_path / "d", "--num-workers", "0", "--quiet")
    assert code == 1
    lines = out.strip().splitlines()
    assert lines[2].startswith("| m | 3 |"), "the failed utterance is one of the scored"
    assert "1 of 3 utterances failed" in out and "lost" in err


def test_when_every_utterance_fails_the_wer_is_100(run_cli, trained_package, fixture_utterances, tmp_path):
    lost = [_lost(fixture_utterances, tmp_path, f"lost{i}", "GONE") for i in range(2)]
    code, result, err, out_dir = _evaluate(run_cli, trained_package, lost, tmp_path, "all_lost")
    assert code == 1 and "no utterance could be decoded" in err
    assert result["wer"] == 100.0 and result["deletions"] == 2 and result["failed"] == 2
    assert _hypotheses(out_dir) == {"lost0": "", "lost1": ""}


def test_references_are_scored_as_written(run_cli, trained_package, fixture_utterances, tmp_path):
    quoted = dataclasses.replace(fixture_utterances[0], text=f"'{fixture_utterances[0].text}'")
    spaced = dataclasses.replace(fixture_utterances[1], text="  " + "\t ".join(fixture_utterances[1].text.lower().split()))
    utterances = [quoted, spaced, *fixture_utterances[2:]]
    code, result, _, out_dir = _evaluate(run_cli, trained_package, utterances, tmp_path, "as_written")
    assert code == 0
    hyps = _hypotheses(out_dir)
    assert not hyps[quoted.id].startswith("'") and not hyps[quoted.id].endswith("'")
    refs = [" ".join(u.text.upper().split()) for u in utterances]  # upper case and whitespace, nothing else
    expected = jiwer.process_words(refs, [hyps[u.id] for u in utterances])
    assert (result["substitutions"], result["deletions"], result["insertions"]) == (
        expected.substitutions, expected.deletions, expected.insertions)
    assert result["wer"] == pytest.approx(100 * expected.wer)
    alignments = (out_dir / "alignments.txt").read_text()
    assert f"REF: {quoted.text}\n" in alignments, "the alignment shows the reference as written"
    first, last = fixture_utterances[0].text.split()[0], fixture_utterances[0].text.split()[-1]
    if hyps[quoted.id].split()[:1] == [first] and hyps[quoted.id].split()[-1:] == [last]:
        assert result["substitutions"] >= 2, "'WORD and WORD' are not WORD"


@pytest.mark.parametrize("output", OUTPUTS)
def test_outputs_are_replaced_whole_never_rewritten_in_place(run_cli, trained_package, fixture_utterances, tmp_path, output):
    out_dir = tmp_path / "decode_atomic"
    out_dir.mkdir()
    for name in OUTPUTS:
        (out_dir / name).write_text(f"old {name}\n")
    with (out_dir / output).open() as reader:  # a reader of the previous run's file
        code, result, _, _ = _evaluate(run_cli, trained_package, fixture_utterances[:3], tmp_path, "atomic")
        assert code == 0
        assert reader.read() == f"old {output}\n", "a file open before the run still reads whole and unchanged"
    assert json.loads((out_dir / "results.json").read_text()) == result
    assert len(_hypotheses(out_dir)) == 3
    assert sorted(p.name for p in out_dir.iterdir()) == sorted(OUTPUTS), "no temporary file is left behind"
