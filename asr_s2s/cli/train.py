"""``asr-s2s train``: train a model with its augmentation chain and export a model package."""

from __future__ import annotations

import argparse
import contextlib
import logging
from pathlib import Path

from asr_s2s.cli.options import EXIT_OK, EXIT_SOME_FAILED, add_device_flags, registry_from, set_threads, with_epochs

log = logging.getLogger("asr_s2s")


def _augmentation_chain(config, registry, utterances):
    """The run's ``train.augment`` chain (None without entries); builds every entry, so a bad one fails first."""
    from asr_s2s.augment import AugmentationChain, augment_entries
    from asr_s2s.interfaces import AugmentationContext

    entries = augment_entries(config.train)
    if not entries:
        return None
    context = AugmentationContext(utterances=tuple(utterances), seed=config.train.seed)
    chain = AugmentationChain.from_config(entries, registry, context, seed=config.train.seed)
    if config.model.specaug is not None and "specaugment" in chain.names:
        log.warning("model.specaug and a train.augment 'specaugment' entry are both set: SpecAugment runs twice; "
                    "set model.specaug: null")
    log.info("augmentation: %s", ", ".join(f"{step.augmentation.name} (p={step.prob:g})" for step in chain.steps))
    return chain


def cmd_train(args) -> int:
    from asr_s2s import distributed
    from asr_s2s.config import load_config
    from asr_s2s.experiment import lock_experiment

    config = with_epochs(load_config(args.config), args.epochs)
    set_threads(args)
    dist_info = distributed.init_from_env(args.device)  # under torchrun: join the process group
    # rank 0 holds the experiment folder from the start: a second run on it is refused before any work
    with lock_experiment(args.exp_dir) if dist_info.is_main else contextlib.nullcontext():
        trained = _train(args, config, dist_info)
    distributed.cleanup()
    return EXIT_OK if trained is None else _report(*trained, config)


def _train(args, config, dist_info):
    """Build the data and the model, train, and (rank 0) export the package.

    :returns: the trainer, its epoch results and the package path on rank 0; None on the other ranks.
    """
    from asr_s2s import distributed
    from asr_s2s.dataset import SpeechDataset
    from asr_s2s.experiment import seed_everything
    from asr_s2s.features import CMVNStats
    from asr_s2s.manifest import read_manifest
    from asr_s2s.model import ASRModel
    from asr_s2s.package import save_package
    from asr_s2s.tokenizer import CharTokenizer
    from asr_s2s.trainer import Trainer, latest_checkpoint

    registry = registry_from(args)
    tokenizer = CharTokenizer.load(args.tokens) if args.tokens else CharTokenizer()
    cache = config.train.feature_cache
    train_utterances = read_manifest(args.train_manifest)
    augment = _augmentation_chain(config, registry, train_utterances)
    train_set = SpeechDataset(train_utterances, tokenizer, cache=cache, augment=augment)
    valid_set = SpeechDataset(read_manifest(args.valid_manifest), tokenizer, cache=cache)  # never augmented
    seed_everything(config.train.seed)
    model = ASRModel(config.model, tokenizer, CMVNStats.load(args.cmvn), registry)
    exp_dir = Path(args.exp_dir)
    resuming = args.resume and latest_checkpoint(exp_dir) is not None
    if args.init_decoder_from_lm and not resuming:  # a resumed run's checkpoint holds the decoder
        from asr_s2s.package import init_decoder_from_lm

        init_decoder_from_lm(model, args.init_decoder_from_lm, registry)
        log.info("decoder initialised from the language model %s", args.init_decoder_from_lm)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %.2fM parameters, %dx time reduction", n_params / 1e6, model.encoder.time_reduction)
    trainer = Trainer(model, config.train, train_set, valid_set, exp_dir, device=dist_info.device, progress=not args.quiet)
    results = trainer.fit(resume=args.resume)
    distributed.barrier()
    if not dist_info.is_main:  # rank 0 alone writes the package and reports
        return None
    return trainer, results, save_package(trainer.model.cpu(), config.decode, exp_dir / "model", registry)


def _report(trainer, results, package, config) -> int:
    last = results[-1] if results else None
    summary = f"model package: {package}"
    if last:
        summary += f" (epoch {last.epoch}: valid loss {last.valid_loss:.3f}, valid CER {last.valid_cer:.2f}%)"
    if (best := trainer.best_epoch()) is not None:
        log.info("best epoch by %s: %d (asr-s2s average --avg 1 --best-by %s exports it)",
                 config.train.selection_metric, best, config.train.selection_metric)
    print(summary)
    failed = sum(r.failed_items for r in results)
    if failed:
        log.error("%d utterance load(s) failed during training and were skipped (see the warnings above)", failed)
        return EXIT_SOME_FAILED
    return EXIT_OK


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the train command."""
    p = sub.add_parser("train", parents=[common], help="train a model and export a model package",
                       description="Train with a YAML config, checkpoint every epoch (and every train.checkpoint_every_steps "
                                   "steps), and export EXP_DIR/model. "
                                   "Under 'torchrun --nproc_per_node=N --no-python asr-s2s train ...' it trains with "
                                   "DistributedDataParallel (NCCL on CUDA, gloo on the CPU): each rank takes its own "
                                   "share of the batches, and rank 0 alone writes checkpoints, logs and the package. "
                                   "With train.global_batch_seconds the batch of an optimizer step, and so the number "
                                   "of steps, is the same on any number of GPUs (accum_grad is derived); the run logs "
                                   "its step plan (global batch, steps per epoch, total and warm-up steps) at the start.")
    p.add_argument("--config", required=True, help="experiment YAML (model, train, decode sections)")
    p.add_argument("--train-manifest", required=True, metavar="JSONL",
                   help="JSON-lines manifest of the training utterances (from 'asr-s2s prepare')")
    p.add_argument("--valid-manifest", required=True, metavar="JSONL",
                   help="JSON-lines manifest validated on after each epoch (loss, greedy CER)")
    p.add_argument("--cmvn", required=True, help="CMVN JSON from compute-cmvn")
    p.add_argument("--exp-dir", required=True, help="output folder: checkpoints, logs, plots, model/")
    p.add_argument("--resume", action="store_true",
                   help="continue from the latest checkpoint in EXP_DIR, mid-epoch ones included (without it, "
                        "an EXP_DIR holding checkpoints is refused rather than overwritten)")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--init-decoder-from-lm", metavar="LM_DIR",
                   help="start the decoder from a language-model package ('asr-s2s train-lm') with the same tokens "
                        "and the decoder's sizes: its embedding, LSTM and output weights (a --resume'd run "
                        "continues from its checkpoint instead)")
    p.add_argument("--tokens", help="token list from 'asr-s2s tokens' (default: the built-in characters)")
    add_device_flags(p, under_torchrun=True)
    p.set_defaults(func=cmd_train)
