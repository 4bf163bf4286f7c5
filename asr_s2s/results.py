"""A recipe's results: the best swept scorer weights, and its WER/CER tables in Markdown.

Every ``asr-s2s evaluate --json`` decode of a recipe leaves ``EXP_DIR/decode_NAME.json``
(``wer``, ``cer`` in percent, ``utterances``, ``substitutions``, ``deletions``,
``insertions``). The dev sweep's decodes are named ``sweep_ctcC_lmL_ngramN``; the
test decodes ``test_greedy``, ``test_beam`` and ``test_beam_WHICH`` (with the
weights they used in ``decode_test_beam_WHICH.weights``); the condition decodes
``cond_SET_greedy`` and ``cond_SET_best``.

The LibriSpeech recipe's decodes are named ``SET_beam`` and ``SET_beam_lm``; its
``RESULTS.md`` (:func:`espnet_results`) follows ESPnet's: the environment, then a WER
and a CER table of ``Snt Wrd Corr Sub Del Ins Err S.Err`` per decode, then the config.
"""

from __future__ import annotations

import datetime
import json
import platform
import re
from importlib.metadata import version
from pathlib import Path

import yaml

from asr_s2s.errors import ConfigError

WEIGHT_KINDS = ("ctc", "lm", "both", "all")  # ctc alone, lm alone, ctc + lm, ctc (+ lm) + ngram
_SWEEP = re.compile(r"decode_sweep_ctc(.+)_lm(.+)_ngram(.+)")
TEST_SEARCHES = {  # decode name -> its row label, before the weights are filled in
    "test_greedy": "greedy", "test_beam": "beam 10", "test_beam_ctc": "beam 10 + ctc", "test_beam_lm": "beam 10 + lm",
    "test_beam_both": "beam 10 + ctc + lm", "test_beam_all": "beam 10 + ctc + lm + ngram",
}
CONDITION_NAMES = {
    "tight": "tight (cut at the speech)", "noisy": "noisy (10 dB)", "reverb": "reverberant (RT60 0.3-0.8 s)",
    "codec": "codec (MP3, 16 kbit/s)", "unseen_tts": "unseen synthesiser (festival)",
}
FRAMING_TOLERANCE_POINTS = 1.0  # the framing check passes when the WERs differ by at most this


def _kind(ctc: float, lm: float, ngram: float) -> str | None:
    if ngram > 0:
        return "all" if ctc > 0 else None
    return {(True, False): "ctc", (False, True): "lm", (True, True): "both"}.get((ctc > 0, lm > 0))


def best_weights(exp_dir: str | Path, which: str) -> tuple[float, float, float]:
    """The swept ``(ctc, lm, ngram)`` weights of kind ``which`` with the lowest dev WER + CER.

    :raises ConfigError: for an unknown kind, or when the sweep holds no decode of that kind.
    """
    if which not in WEIGHT_KINDS:
        raise ConfigError(f"weights kind must be one of {', '.join(WEIGHT_KINDS)}, got {which!r}")
    runs = []
    for path in Path(exp_dir).glob("decode_sweep_ctc*_lm*_ngram*.json"):
        ctc, lm, ngram = map(float, _SWEEP.fullmatch(path.stem).groups())
        if _kind(ctc, lm, ngram) == which:
            r = json.loads(path.read_text())
            runs.append((r["wer"] + r["cer"], ctc, lm, ngram))
    if not runs:
        raise ConfigError(f"{exp_dir}: the sweep has no decode for '{which}' (see run.sh's --ctc-weights, "
                          "--lm-weights, --ngram-weights)")
    _, ctc, lm, ngram = min(runs)
    return ctc, lm, ngram


def weights_label(ctc: float, lm: float, ngram: float) -> str:
    """``beam 10 + ctc 0.3 + ngram 0.8``: the search with each scorer's positive weight."""
    return "beam 10" + "".join(f" + {name} {w:g}" for name, w in (("ctc", ctc), ("lm", lm), ("ngram", ngram)) if w > 0)


def _result(exp: Path, name: str) -> dict:
    path = exp / f"decode_{name}.json"
    if not path.is_file():
        raise ConfigError(f"{path}: no such decode result; run the recipe's decode stages first")
    return json.loads(path.read_text())


def split_table(exp_dir: str | Path) -> str:
    """The test split's table: one row per search of :data:`TEST_SEARCHES`, with the weights each used."""
    exp = Path(exp_dir)
    rows = ["| set | search | utts | WER % | CER % | sub | del | ins |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    for name, search in TEST_SEARCHES.items():
        weights = exp / f"decode_{name}.weights"
        if weights.exists():
            search = weights_label(*map(float, weights.read_text().split()))
        r = _result(exp, name)
        rows.append(f"| test | {search} | {r['utterances']} | {r['wer']:.2f} | {r['cer']:.2f} | "
                    f"{r['substitutions']} | {r['deletions']} | {r['insertions']} |")
    return "\n".join(rows) + "\n"


def conditions_table(exp_dir: str | Path, weights: tuple[float, float, float], sets: list[str], framing: list[str]) -> str:
    """The condition table (greedy and the best weights per condition) and the framing check.

    :param sets: condition names (``tight``, ``noisy``, ..., ``unseen_tts``) decoded as ``cond_SET_*``.
    :param framing: the framing-check sets (``lead0``, ``lead0.15``, ``lead0.5``), decoded as ``cond_SET_best``.
    """
    exp, best = Path(exp_dir), weights_label(*weights)

    def cell(r: dict) -> str:
        return f"{r['wer']:.2f} / {r['cer']:.2f}"

    greedy, clean = _result(exp, "test_greedy"), _result(exp, "test_beam_all")
    rows = ["", f"| condition (test) | utts | greedy WER / CER % | {best}: WER / CER % |", "|---|---:|---|---|",
            f"| clean | {greedy['utterances']} | {cell(greedy)} | {cell(clean)} |"]
    for s in sets:
        r = _result(exp, f"cond_{s}_best")
        rows.append(f"| {CONDITION_NAMES.get(s, s)} | {r['utterances']} | {cell(_result(exp, f'cond_{s}_greedy'))} | {cell(r)} |")
    if framing:
        framed = [(s, _result(exp, f"cond_{s}_best")) for s in framing]
        spread = max(r["wer"] for _, r in framed) - min(r["wer"] for _, r in framed)
        rows += ["", f"Framing check ({best}; the test files cut at the speech, then this much leading and 0.15 s of "
                 "trailing silence):", "", "| leading silence | WER % | CER % |", "|---|---:|---:|"]
        rows += [f"| {s.removeprefix('lead')} s | {r['wer']:.2f} | {r['cer']:.2f} |" for s, r in framed]
        verdict = "within" if spread <= FRAMING_TOLERANCE_POINTS else "NOT within"
        rows += ["", f"WER spread {spread:.2f} points: {verdict} {FRAMING_TOLERANCE_POINTS:g} point."]
    return "\n".join(rows) + "\n"


ESPNET_HEADER = ("|dataset|Snt|Wrd|Corr|Sub|Del|Ins|Err|S.Err|", "|---|---|---|---|---|---|---|---|---|")
# unit -> the decode_NAME.json fields of its reference length and its substitutions, deletions, insertions
ESPNET_UNITS = {"WER": ("words", "substitutions", "deletions", "insertions"),
                "CER": ("characters", "char_substitutions", "char_deletions", "char_insertions")}


def search_label(config_text: str) -> str:
    """``beam 10, decoder 1.0, ctc 0.3``: the beam size and scorer weights of a config's ``decode`` section."""
    decode = (yaml.safe_load(config_text) or {}).get("decode", {})
    return f"beam {decode.get('beam_size', 10)}, " + ", ".join(f"{k} {v}" for k, v in decode.get("scorers", {}).items())


def espnet_row(name: str, label: str, result: dict, unit: str) -> str:
    """One row of ESPnet's table: Snt, Wrd (the words, or characters for CER), then Corr, Sub, Del, Ins, Err and S.Err in percent."""
    n, sub, dele, ins = (result[field] for field in ESPNET_UNITS[unit])

    def pct(x: int) -> str:
        return f"{100 * x / max(n, 1):.1f}"

    return (f"|{name} ({label})|{result['utterances']}|{n}|{pct(n - sub - dele)}|{pct(sub)}|{pct(dele)}|{pct(ins)}|"
            f"{pct(sub + dele + ins)}|{100 * result['sentence_errors'] / max(result['utterances'], 1):.1f}|")


def espnet_rows(exp_dir: str | Path, sets: list[str], search: str, lm_weight: str) -> dict[str, list[str]]:
    """The WER and CER rows of each set's ``decode_SET_beam`` and ``decode_SET_beam_lm`` (those that exist)."""
    exp, rows = Path(exp_dir), {unit: [] for unit in ESPNET_UNITS}
    for s in sets:
        for tag, label in (("beam", search), ("beam_lm", f"{search}, lm {lm_weight}")):
            path = exp / f"decode_{s}_{tag}.json"
            if not path.is_file():
                continue
            result = json.loads(path.read_text())
            for unit in ESPNET_UNITS:
                rows[unit].append(espnet_row(f"decode_{s}_{tag}", label, result, unit))
    return rows


def environment_lines(command: str, now: datetime.datetime | None = None) -> list[str]:
    """ESPnet's ``## Environments``: the date (UTC), the Python, asr-s2s and PyTorch versions and the command."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    return ["## Environments", f"- date: `{now.strftime('%a %b %d %H:%M:%S UTC %Y')}`",
            f"- python version: `{platform.python_version()}`", f"- asr-s2s version: `asr-s2s {version('asr-s2s')}`",
            f"- pytorch version: `pytorch {version('torch')}`", f"- command: `{command.strip()}`"]


def espnet_results(exp_dir: str | Path, config: str | Path, command: str, lm_weight: str, sets: list[str],
                   now: datetime.datetime | None = None) -> tuple[str, str]:
    """The LibriSpeech recipe's ``RESULTS.md`` in ESPnet's style, as ``(tables, config section)``.

    The tables part (environment, model, WER and CER tables) is what the recipe
    prints; the file is both parts joined. ``model_avg/average.json`` names the
    averaged epochs; the search label comes from ``config``'s ``decode`` section,
    and the ``beam_lm`` rows add ``lm LM_WEIGHT`` (as given).
    """
    exp, config = Path(exp_dir), Path(config)
    model = json.loads((exp / "model_avg" / "average.json").read_text())
    config_text = config.read_text(encoding="utf-8")
    rows = espnet_rows(exp, sets, search_label(config_text), lm_weight)
    epochs = ", ".join(map(str, model["epochs"]))
    lines = ["# RESULTS", *environment_lines(command, now), "",
             f"## {exp.name}: model_avg (average of epoch(s) {epochs}, best by {model['best_by']})"]
    for unit in ESPNET_UNITS:
        lines += [f"### {unit}", "", *ESPNET_HEADER, *rows[unit], ""]
    config_lines = [f"## Config: `{config}`", "", "```yaml", config_text.rstrip(), "```", ""]
    return "\n".join(lines) + "\n", "\n".join(config_lines)
