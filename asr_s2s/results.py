"""A recipe's results: the best swept scorer weights, and its WER/CER tables in Markdown.

Every ``asr-s2s evaluate --json`` decode of a recipe leaves ``EXP_DIR/decode_NAME.json``
(``wer``, ``cer`` in percent, ``utterances``, ``substitutions``, ``deletions``,
``insertions``). The dev sweep's decodes are named ``sweep_ctcC_lmL_ngramN``; the
test decodes ``test_greedy``, ``test_beam`` and ``test_beam_WHICH`` (with the
weights they used in ``decode_test_beam_WHICH.weights``); the condition decodes
``cond_SET_greedy`` and ``cond_SET_best``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

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
