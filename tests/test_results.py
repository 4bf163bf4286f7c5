"""asr_s2s.results and `asr-s2s results`: the best swept weights and the recipe's tables, from decode results."""

from __future__ import annotations

import json

import pytest

from asr_s2s.errors import ConfigError
from asr_s2s.results import best_weights, conditions_table, split_table, weights_label


def _decode(exp, name, wer, cer, utts=400, sub=10, dele=2, ins=3):
    (exp / f"decode_{name}.json").write_text(json.dumps({
        "set": name, "wer": wer, "cer": cer, "utterances": utts, "substitutions": sub, "deletions": dele, "insertions": ins,
    }))


@pytest.fixture
def exp(tmp_path):
    """A sweep, the test decodes and the condition decodes, as run.sh's stages 7-9 leave them."""
    sweep = {(0, 0, 0): (40, 20), (0, 0.2, 0): (38, 21), (0, 0.4, 0): (37, 19), (0.3, 0, 0): (39, 18),
             (0.3, 0.2, 0): (36, 17), (0.3, 0.4, 0): (36, 18), (0.3, 0, 0.8): (30, 15), (0.3, 0.2, 0.8): (31, 15)}
    for (ctc, lm, ngram), (wer, cer) in sweep.items():
        _decode(tmp_path, f"sweep_ctc{ctc:g}_lm{lm:g}_ngram{ngram:g}", wer, cer, utts=100)
    for name, wer in (("test_greedy", 70.0), ("test_beam", 60.0), ("test_beam_ctc", 58.0), ("test_beam_lm", 59.0),
                      ("test_beam_both", 55.0), ("test_beam_all", 46.234)):
        _decode(tmp_path, name, wer, wer / 2)
    for which, weights in (("ctc", "0.3 0 0"), ("lm", "0 0.4 0"), ("both", "0.3 0.2 0"), ("all", "0.3 0 0.8")):
        (tmp_path / f"decode_test_beam_{which}.weights").write_text(weights + "\n")
    for s, wer in (("tight", 47.0), ("noisy", 90.0), ("lead0", 42.8), ("lead0.15", 42.3), ("lead0.5", 42.9)):
        _decode(tmp_path, f"cond_{s}_best", wer, wer / 2)
        _decode(tmp_path, f"cond_{s}_greedy", wer + 20, wer / 2 + 10)
    return tmp_path


def test_best_weights_of_each_kind(exp):
    assert best_weights(exp, "all") == (0.3, 0.0, 0.8)
    assert best_weights(exp, "both") == (0.3, 0.2, 0.0)
    assert best_weights(exp, "lm") == (0.0, 0.4, 0.0)
    assert best_weights(exp, "ctc") == (0.3, 0.0, 0.0)
    with pytest.raises(ConfigError, match="one of ctc, lm, both, all"):
        best_weights(exp, "ngram")
    for path in exp.glob("decode_sweep_*ngram0.8.json"):
        path.unlink()
    with pytest.raises(ConfigError, match="the sweep has no decode for 'all'"):
        best_weights(exp, "all")


def test_weights_label_names_each_positive_weight():
    assert weights_label(0.3, 0.0, 0.8) == "beam 10 + ctc 0.3 + ngram 0.8"
    assert weights_label(0.0, 0.0, 0.0) == "beam 10"


def test_test_table_names_the_weights_each_row_used(exp):
    rows = split_table(exp).splitlines()
    assert rows[0] == "| set | search | utts | WER % | CER % | sub | del | ins |"
    assert [r.split(" | ")[1] for r in rows[2:]] == [
        "greedy", "beam 10", "beam 10 + ctc 0.3", "beam 10 + lm 0.4", "beam 10 + ctc 0.3 + lm 0.2", "beam 10 + ctc 0.3 + ngram 0.8"]
    assert rows[-1] == "| test | beam 10 + ctc 0.3 + ngram 0.8 | 400 | 46.23 | 23.12 | 10 | 2 | 3 |"


def test_conditions_table_and_the_framing_verdict(exp):
    table = conditions_table(exp, (0.3, 0.0, 0.8), ["tight", "noisy"], ["lead0", "lead0.15", "lead0.5"])
    assert "| tight (cut at the speech) | 400 | 67.00 / 33.50 | 47.00 / 23.50 |" in table
    assert "| clean | 400 | 70.00 / 35.00 | 46.23 / 23.12 |" in table
    assert table.endswith("WER spread 0.60 points: within 1 point.\n")
    _decode(exp, "cond_lead0.5_best", 44.0, 22.0)
    assert "WER spread 1.20 points: NOT within 1 point." in conditions_table(exp, (0.3, 0, 0.8), [], ["lead0", "lead0.5"])
    with pytest.raises(ConfigError, match="decode_cond_reverb_best.json: no such decode result"):
        conditions_table(exp, (0.3, 0.0, 0.8), ["reverb"], [])


def test_the_command_prints_weights_and_writes_the_tables(run_cli, exp):
    code, out, _ = run_cli("results", "best-weights", exp, "--kind", "all")
    assert code == 0 and out == "0.3 0 0.8\n"
    code, out, _ = run_cli("results", "test-table", exp)
    assert code == 0 and (exp / "results_test.md").read_text() == out == split_table(exp)
    code, out, _ = run_cli("results", "conditions-table", exp, "--weights", "0.3 0 0.8", "--sets", "tight noisy",
                           "--framing", "lead0 lead0.15 lead0.5")
    assert code == 0 and (exp / "results_conditions.md").read_text() == out
    code, _, err = run_cli("results", "conditions-table", exp, "--weights", "0.3", "--sets", "tight")
    assert code == 2 and "expected 'CTC LM NGRAM'" in err
