"""``asr-s2s results``: a recipe's best swept weights and its WER/CER tables (what the recipes' scoring stages print)."""

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


def cmd_show_asr_result(args) -> int:
    from asr_s2s.results import espnet_results

    tables, config = espnet_results(args.exp_dir, args.config, args.command, args.lm_weight, args.sets.split())
    write_text_atomically(Path(args.exp_dir) / "RESULTS.md", tables + config)
    print(tables, end="")
    return EXIT_OK


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the results command and its four actions."""
    p = sub.add_parser("results", parents=[common], help="a recipe's best swept weights and its WER/CER tables",
                       description="Read the decode_NAME.json files that 'asr-s2s evaluate --json --output-dir "
                                   "EXP_DIR/decode_NAME' runs of a recipe leave in EXP_DIR (see asr_s2s/results.py), "
                                   "and print the best swept scorer weights, or write a Markdown table or an ESPnet-style "
                                   "RESULTS.md.")
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
    a = actions.add_parser("show-asr-result", help="write EXP_DIR/RESULTS.md in ESPnet's style; print it up to the config",
                           description="Write EXP_DIR/RESULTS.md laid out as ESPnet's show_asr_result.sh: the date, the "
                                       "Python, asr-s2s and PyTorch versions and --command; then a WER and a CER table "
                                       "(Snt, Wrd, Corr, Sub, Del, Ins, Err, S.Err) with a row for each decode_SET_beam "
                                       "and decode_SET_beam_lm of --sets that exists, under the averaged epochs of "
                                       "EXP_DIR/model_avg/average.json; then the --config file. Prints all but the "
                                       "config. (The LibriSpeech recipe's stage 7.)")
    a.add_argument("exp_dir", metavar="EXP_DIR")
    a.add_argument("--config", required=True, help="the experiment config: its decode section names the search")
    a.add_argument("--command", required=True, metavar="COMMAND_LINE", help="the command line that ran the recipe")
    a.add_argument("--lm-weight", required=True, metavar="W", help="the LM weight of the beam_lm decodes, as shown")
    a.add_argument("--sets", required=True, metavar="'SET ...'", help="the decoded sets, in the order of the rows")
    a.set_defaults(func=cmd_show_asr_result)
