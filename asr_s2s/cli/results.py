"""``asr-s2s results``: a recipe's best swept weights and its WER/CER tables (what run.sh's stages 8-10 print)."""

from __future__ import annotations

import argparse
from pathlib import Path

from asr_s2s.cli.options import EXIT_OK
from asr_s2s.files import write_text_atomically


def cmd_best_weights(args) -> int:
    from asr_s2s.results import best_weights

    print(*(f"{w:g}" for w in best_weights(args.exp_dir, args.kind)))
    return EXIT_OK


def cmd_test_table(args) -> int:
    from asr_s2s.results import split_table

    table = split_table(args.exp_dir)
    write_text_atomically(Path(args.exp_dir) / "results_test.md", table)
    print(table, end="")
    return EXIT_OK


def cmd_conditions_table(args) -> int:
    from asr_s2s.errors import ConfigError
    from asr_s2s.results import conditions_table

    try:
        weights = tuple(float(w) for w in args.weights.split())
    except ValueError:
        weights = ()
    if len(weights) != 3:
        raise ConfigError(f"--weights: expected 'CTC LM NGRAM' (three numbers, as best-weights prints), got {args.weights!r}")
    table = conditions_table(args.exp_dir, weights, args.sets.split(), args.framing.split())
    write_text_atomically(Path(args.exp_dir) / "results_conditions.md", table)
    print(table, end="")
    return EXIT_OK


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the results command and its three actions."""
    p = sub.add_parser("results", parents=[common], help="a recipe's best swept weights and its WER/CER tables",
                       description="Read the decode_NAME.json files that 'asr-s2s evaluate --json --output-dir "
                                   "EXP_DIR/decode_NAME' runs of a recipe leave in EXP_DIR (see asr_s2s/results.py), "
                                   "and print the best swept scorer weights or write a Markdown table.")
    actions = p.add_subparsers(dest="action", required=True, metavar="ACTION")
    a = actions.add_parser("best-weights", help="print 'CTC LM NGRAM', the swept weights with the lowest dev WER + CER")
    a.add_argument("exp_dir", metavar="EXP_DIR")
    a.add_argument("--kind", choices=["ctc", "lm", "both", "all"], required=True,
                   help="ctc alone, lm alone, ctc + lm, or ctc (+ lm) + ngram")
    a.set_defaults(func=cmd_best_weights)
    a = actions.add_parser("test-table", help="write EXP_DIR/results_test.md: greedy, beam 10 and each best-weights decode")
    a.add_argument("exp_dir", metavar="EXP_DIR")
    a.set_defaults(func=cmd_test_table)
    a = actions.add_parser("conditions-table", help="write EXP_DIR/results_conditions.md: each condition and the framing check")
    a.add_argument("exp_dir", metavar="EXP_DIR")
    a.add_argument("--weights", required=True, metavar="'CTC LM NGRAM'", help="the weights the best decodes used")
    a.add_argument("--sets", required=True, metavar="'SET ...'", help="conditions decoded as cond_SET_greedy and cond_SET_best")
    a.add_argument("--framing", default="", metavar="'SET ...'", help="framing-check sets decoded as cond_SET_best")
    a.set_defaults(func=cmd_conditions_table)
