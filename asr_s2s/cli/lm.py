"""``asr-s2s train-lm``: train a character language model for shallow fusion."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from asr_s2s.cli.options import EXIT_OK, add_device_flags, registry_from, set_threads, with_epochs

log = logging.getLogger("asr_s2s")


def cmd_train_lm(args) -> int:
    from asr_s2s.lm import LMTrainer, load_lm_config, read_text, split_valid
    from asr_s2s.package import save_lm_package
    from asr_s2s.tokenizer import CharTokenizer
    from asr_s2s.experiment import seed_everything

    config = with_epochs(load_lm_config(args.config), args.epochs)
    set_threads(args)
    registry = registry_from(args)
    tokenizer = CharTokenizer.load(args.tokens) if args.tokens else CharTokenizer()
    sentences = read_text(args.text, tokenizer)
    if args.valid_text:
        train, valid = sentences, read_text(args.valid_text, tokenizer)
    else:
        train, valid = split_valid(sentences, config.train.valid_fraction, config.train.seed)
    log.info("LM text: %d training and %d validation sentences, %d characters",
             len(train), len(valid), sum(map(len, train)))
    seed_everything(config.train.seed)
    lm = registry.build("lm", config.lm, "lm", vocab_size=len(tokenizer))
    log.info("language model: %.2fM parameters", sum(p.numel() for p in lm.parameters()) / 1e6)
    exp_dir = Path(args.exp_dir)
    trainer = LMTrainer(lm, tokenizer, config.train, train, valid, exp_dir, device=args.device, progress=not args.quiet)
    results = trainer.fit(resume=args.resume)
    package = save_lm_package(trainer.lm.cpu(), config.lm, tokenizer, exp_dir / "lm", registry)
    summary = f"language model package: {package}"
    if results:
        summary += f" (epoch {results[-1].epoch}: valid perplexity {results[-1].valid_ppl:.3f} per character)"
    print(summary)
    return EXIT_OK


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the train-lm command."""
    p = sub.add_parser("train-lm", parents=[common], help="train a character language model on text",
                       description="Train a language model for shallow fusion (the 'lm' scorer) on plain text, "
                                   "one sentence per line, and export EXP_DIR/lm.")
    p.add_argument("--text", required=True, nargs="+", metavar="FILE", help="training text files")
    p.add_argument("--valid-text", nargs="+", metavar="FILE",
                   help="validation text (default: hold out train.valid_fraction of --text)")
    p.add_argument("--config", help="LM YAML with 'lm' ({name: lstm, ...}) and 'train' sections (default: built-in)")
    p.add_argument("--exp-dir", required=True, help="output folder: checkpoint, log, lm/")
    p.add_argument("--resume", action="store_true", help="continue from EXP_DIR's checkpoint")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--tokens", help="token list from 'asr-s2s tokens' (default: the built-in characters)")
    add_device_flags(p)
    p.set_defaults(func=cmd_train_lm)
