"""``asr-s2s average``: average epoch checkpoints into a model package."""

from __future__ import annotations

import argparse

from asr_s2s.cli.options import EXIT_OK, registry_from


def cmd_average(args) -> int:
    from asr_s2s.average import average_package

    out, epochs = average_package(args.exp_dir, args.avg, args.best_by, args.out, registry_from(args))
    print(f"model package: {out} (average of epoch(s) {', '.join(map(str, epochs))}, by {args.best_by})")
    return EXIT_OK


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the average command."""
    p = sub.add_parser("average", parents=[common], help="average epoch checkpoints into a model package",
                       description="Average the weights of the last N epoch checkpoints of a training run, or of the "
                                   "N best by a validation metric of train_log.jsonl (--avg 1: model selection), and "
                                   "write them as a model package (config, tokens and CMVN from EXP_DIR/model).")
    p.add_argument("--exp-dir", required=True, help="a training output folder (checkpoints/, train_log.jsonl, model/)")
    p.add_argument("--avg", type=int, required=True, metavar="N", help="how many epochs to average")
    p.add_argument("--best-by", choices=["last", "valid_loss", "valid_cer"], default="last",
                   help="the last N epochs, or the N with the lowest validation loss or CER (default: last)")
    p.add_argument("--out", help="package to write (default: EXP_DIR/model_avgN_BEST_BY)")
    p.set_defaults(func=cmd_average)
