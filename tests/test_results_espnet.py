"""asr_s2s.results.espnet_results and `asr-s2s results show-asr-result`: the LibriSpeech recipe's RESULTS.md.

The input is what the recipe's stages 4 and 6 leave: ``model_avg/average.json`` and
``decode_SET_{beam,beam_lm}.json`` as ``asr-s2s evaluate --json`` prints them (here
scored by :func:`asr_s2s.metrics.error_rates` on real sentences).
"""

from __future__ import annotations

import datetime
import json
import platform
from importlib.metadata import version

import pytest

from asr_s2s.metrics import error_rates
from asr_s2s.results import espnet_results

CONFIG = """# a LAS for the test
model:
  ctc_weight: 0.3
decode:
  beam_size: 10
  scorers: {decoder: 1.0, ctc: 0.3}
"""
COMMAND = "bash recipes/librispeech/run.sh --nproc 4 --lm-weight 0.5 \n"
NOW = datetime.datetime(2024, 3, 5, 14, 7, 9, tzinfo=datetime.timezone.utc)
REFERENCES = ["HE HOPED THERE WOULD BE STEW FOR DINNER", "TURNIPS AND CARROTS AND BRUISED POTATOES",
              "STUFF IT INTO YOU HIS BELLY COUNSELLED HIM"]
DECODES = {  # decode name -> hypotheses of REFERENCES
    "dev-clean_beam": ["HE HOPED THERE WOULD BE STU FOR DINNER", "TURNIPS AND CARROTS AND BRUISED POTATOES",
                       "STUFF IT IN TO YOU HIS BELLY COUNSELED"],
    "dev-clean_beam_lm": ["HE HOPED THERE WOULD BE STEW FOR DINNER", "TURNIPS AND CARROTS AND BRUISED POTATOES",
                          "STUFF IT INTO YOU HIS BELLY COUNSELLED"],
    "test-other_beam": ["HE HOPE THERE WOULD BE", "TURNIPS AN CARROTS AND BRUISED POTATOES", ""],
}  # test-other has no beam_lm decode (no LM), test-clean no decode at all: both are left out


@pytest.fixture
def exp(tmp_path):
    exp = tmp_path / "las_100h"
    (exp / "model_avg").mkdir(parents=True)
    (exp / "model_avg" / "average.json").write_text(json.dumps({"epochs": [6, 8, 9], "best_by": "valid_cer", "avg": 3}))
    for name, hypotheses in DECODES.items():
        scored = {"set": name.rsplit("_beam", 1)[0], **error_rates(REFERENCES, hypotheses).as_dict(), "failed": 0}
        (exp / f"decode_{name}.json").write_text(json.dumps(scored))
    (tmp_path / "las_100h.yaml").write_text(CONFIG)
    return exp


def _rows(tables: str, unit: str) -> list[list[str]]:
    section = tables.split(f"### {unit}\n\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert section[:2] == ["|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|", "|---|---|---|---|---|---|---|---|---|"]
    return [row.split("|")[1:-1] for row in section[2:]]


def _percent(x: int, n: int) -> float:
    return round(100 * x / n, 1)


def test_the_environment_and_the_model_head_the_tables(exp):
    tables, _ = espnet_results(exp, exp.parent / "las_100h.yaml", COMMAND, "0.5", ["dev-clean"], now=NOW)
    lines = tables.splitlines()
    assert lines[:2] == ["# RESULTS", "## Environments"]
    date = lines[2].removeprefix("- date: `").removesuffix("`")
    assert datetime.datetime.strptime(date, "%a %b %d %H:%M:%S UTC %Y") == NOW.replace(tzinfo=None)
    assert lines[3:7] == [f"- python version: `{platform.python_version()}`",
                          f"- asr-s2s version: `asr-s2s {version('asr-s2s')}`",
                          f"- pytorch version: `pytorch {version('torch')}`", f"- command: `{COMMAND.strip()}`"]
    assert lines[7:9] == ["", "## las_100h: model_avg (average of epoch(s) 6, 8, 9, best by valid_cer)"]
    assert tables.endswith("|\n\n"), "the CER table ends with a blank line"


@pytest.mark.parametrize("unit, fields", [
    ("WER", ("words", "substitutions", "deletions", "insertions", "wer")),
    ("CER", ("characters", "char_substitutions", "char_deletions", "char_insertions", "cer")),
])
def test_each_decode_has_a_row_of_counts_and_percentages(exp, unit, fields):
    sets = ["dev-clean", "test-clean", "test-other"]
    tables, _ = espnet_results(exp, exp.parent / "las_100h.yaml", COMMAND, "0.5", sets, now=NOW)
    rows = _rows(tables, unit)
    search = "beam 10, decoder 1.0, ctc 0.3"
    assert [row[0] for row in rows] == [f"decode_dev-clean_beam ({search})", f"decode_dev-clean_beam_lm ({search}, lm 0.5)",
                                        f"decode_test-other_beam ({search})"]
    for row, (name, hypotheses) in zip(rows, DECODES.items()):
        scored = json.loads((exp / f"decode_{name}.json").read_text())
        n, sub, dele, ins, rate = (scored[f] for f in fields)
        assert row[1:3] == [str(len(REFERENCES)), str(n)]
        corr, s, d, i, err, sentence_err = map(float, row[3:])
        assert (corr, s, d, i) == (_percent(n - sub - dele, n), _percent(sub, n), _percent(dele, n), _percent(ins, n))
        assert err == round(rate, 1), "Err is the error rate evaluate scored"
        wrong = sum(r != h for r, h in zip(REFERENCES, hypotheses))
        assert sentence_err == _percent(wrong, len(REFERENCES))


def test_the_config_follows_the_tables_verbatim(exp):
    config = exp.parent / "las_100h.yaml"
    tables, section = espnet_results(exp, config, COMMAND, "0.5", ["dev-clean"], now=NOW)
    assert section == f"## Config: `{config}`\n\n```yaml\n{CONFIG.rstrip()}\n```\n"
    assert "## Config" not in tables


def test_a_config_without_a_decode_section_names_beam_10(exp):
    config = exp.parent / "bare.yaml"
    config.write_text("model: {ctc_weight: 0.3}\n")
    tables, _ = espnet_results(exp, config, COMMAND, "0.3", ["dev-clean"], now=NOW)
    assert _rows(tables, "WER")[0][0].startswith("decode_dev-clean_beam (beam 10")


def test_the_command_writes_results_md_and_prints_the_tables(run_cli, exp):
    config = exp.parent / "las_100h.yaml"
    code, out, _ = run_cli("results", "show-asr-result", exp, "--config", config, "--command", COMMAND,
                           "--lm-weight", "0.5", "--sets", "dev-clean test-clean test-other")
    assert code == 0
    written = (exp / "RESULTS.md").read_text()
    assert written.startswith(out) and written[len(out):].startswith(f"## Config: `{config}`\n")
    assert written.endswith("```\n")
    assert len(_rows(out, "WER")) == len(_rows(out, "CER")) == 3
    code, _, err = run_cli("results", "show-asr-result", exp, "--config", config, "--command", COMMAND, "--sets", "x")
    assert code == 2 and "--lm-weight" in err
