"""``asr-s2s train-lm``: train a character language model for shallow fusion."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from asr_s2s.cli.options import EXIT_OK, add_device_flags, registry_from, set_threads, with_epochs

log = logging.getLogger("asr_s2s")


def cmd_train_lm(args) -> int:
    from asr_s2s.experiment import seed_everything
    from asr_s2s.lm import LMTrainer, check_fresh_start, check_train_config, load_lm_config
    from asr_s2s.lm_data import describe_sources, prepare_lm_data, record_sources
    from asr_s2s.package import save_lm_package
    from asr_s2s.tokenizer import CharTokenizer

    config = with_epochs(load_lm_config(args.config), args.epochs)
    check_train_config(config.train)
    set_threads(args)
    registry = registry_from(args)
    tokenizer = CharTokenizer.load(args.tokens) if args.tokens else CharTokenizer()
    exp_dir = Path(args.exp_dir)
    check_fresh_start(exp_dir, args.resume)  # before the text is read: encoding a large one takes minutes
    sources = describe_sources(args.text, args.valid_text or ())
    split = None if args.valid_text else (config.train.valid_fraction, config.train.seed)
    data = prepare_lm_data(sources, tokenizer, split, exp_dir, progress=not args.quiet)
    record_sources(exp_dir, sources, data)
    log.info("LM text: %d training sentences (%d characters), %d validation sentences",
             data.train.sentences, data.train.tokens, data.valid.sentences)
    seed_everything(config.train.seed)
    lm = registry.build("lm", config.lm, "lm", vocab_size=len(tokenizer))
    log.info("language model: %.2fM parameters", sum(p.numel() for p in lm.parameters()) / 1e6)
    trainer = LMTrainer(lm, tokenizer, config.train, data.train, data.valid, exp_dir, device=args.device,
                        progress=not args.quiet, text_key=data.key)
    log.info("LM batches: %d per epoch of at most %d padded tokens, %d epochs",
             trainer.steps_per_epoch, config.train.max_batch_tokens, config.train.epochs)
    results = trainer.fit(resume=args.resume)
    package = save_lm_package(trainer.lm.cpu(), config.lm, tokenizer, exp_dir / "lm", registry)
    summary = f"language model package: {package}"
    if results:
        summary += f" (epoch {results[-1].epoch}: valid perplexity {results[-1].valid_ppl:.3f} per character)"
    print(summary)
    return EXIT_OK


DESCRIPTION = """\
Train a language model for shallow fusion (the 'lm' scorer) on plain text, one sentence per line, and
export EXP_DIR/lm.

The text is read once and encoded into token files under EXP_DIR/text_cache/ (about one byte per
character; reused while the texts, the token list and the held-out split stay the same); training reads
them a window (train.window_tokens) at a time, so memory does not grow with the text. The size and
sha256 of every text file are logged and written to EXP_DIR/text_sources.json. EXP_DIR/checkpoint.pt is
written at each epoch's end and every train.checkpoint_every_steps steps; --resume continues from it,
mid-epoch included."""


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the train-lm command."""
    p = sub.add_parser("train-lm", parents=[common], help="train a character language model on text",
                       description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--text", required=True, nargs="+", metavar="FILE",
                   help="training text files, joined in order: e.g. an external corpus (librispeech-lm-norm.txt) "
                        "and the training transcripts written by 'asr-s2s lm-text', as ESPnet's LM stage does")
    p.add_argument("--valid-text", nargs="+", metavar="FILE",
                   help="validation text (default: hold out train.valid_fraction of --text)")
    p.add_argument("--config", help="LM YAML with 'lm' ({name: lstm, ...}) and 'train' sections (default: built-in)")
    p.add_argument("--exp-dir", required=True, help="output folder: checkpoint, log, text_cache/, text_sources.json, lm/")
    p.add_argument("--resume", action="store_true", help="continue from EXP_DIR's checkpoint (mid-epoch too)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--tokens", help="token list from 'asr-s2s tokens' (default: the built-in characters)")
    add_device_flags(p)
    p.set_defaults(func=cmd_train_lm)
