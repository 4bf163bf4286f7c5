"""The ``asr-s2s`` command. Results go to stdout, logs to stderr.

Exit codes: 0 success, 1 some inputs failed (e.g. one bad audio file),
2 bad usage or bad input (config, manifest, model, plugin).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from asr_s2s import __version__
from asr_s2s.errors import AsrS2SError, ConfigError

log = logging.getLogger("asr_s2s")

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_INPUT = 0, 1, 2


def _registry(args):
    from asr_s2s.plugins import Registry, get_plugin_manager

    return Registry(get_plugin_manager(disable=args.disable_plugin))


def _parse_scorer_weights(values: list[str]) -> dict[str, float]:
    weights = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            weights[name] = float(value)
        except ValueError:
            raise ConfigError(f"--scorer {item!r}: expected NAME=WEIGHT, e.g. --scorer length_bonus=0.5") from None
    return weights


def _parse_scorer_params(values: list[str]) -> dict[str, dict]:
    import yaml

    params: dict[str, dict] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        name, dot, param = key.partition(".")
        if not (sep and dot and name and param):
            raise ConfigError(f"--scorer-param {item!r}: expected NAME.KEY=VALUE, e.g. --scorer-param ngram.path=lm.arpa")
        try:
            params.setdefault(name, {})[param] = yaml.safe_load(value) if value else value
        except yaml.YAMLError:
            params.setdefault(name, {})[param] = value
    return params


def _decode_config(args, base):
    """The model's decode config with the command line's overrides."""
    import dataclasses

    changes = {}
    if args.beam_size is not None:
        changes["beam_size"] = args.beam_size
    scorers = {**base.scorers, **_parse_scorer_weights(args.scorer)}
    params = {name: dict(p) for name, p in base.scorer_params.items()}
    for name, extra in _parse_scorer_params(args.scorer_param).items():
        params.setdefault(name, {}).update(extra)
    if args.lm:
        params.setdefault("lm", {})["path"] = args.lm
    if args.hotword:
        params.setdefault("hotwords", {})["phrases"] = list(args.hotword)
    for name, flag in (("lm", "--lm"), ("hotwords", "--hotword")):
        if name in params and name not in scorers:
            raise ConfigError(f"{flag} needs a weight for the {name!r} scorer: add --scorer {name}=WEIGHT")
    changes["scorers"], changes["scorer_params"] = scorers, params
    if args.batch_seconds is not None:
        changes["batch_seconds"] = args.batch_seconds
    return dataclasses.replace(base, **changes)


# -- subcommands ----------------------------------------------------------------
def cmd_plugins(args) -> int:
    registry = _registry(args)
    rows = [(c.kind, c.name, c.plugin, c.distribution) for c in registry.components()]
    if args.json:
        print(json.dumps([dict(zip(("kind", "name", "plugin", "distribution"), r)) for r in rows], indent=2))
        return EXIT_OK
    widths = [max(len(r[i]) for r in rows + [("kind", "name", "plugin", "distribution")]) for i in range(4)]
    for row in [("kind", "name", "plugin", "distribution"), *rows]:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return EXIT_OK


def cmd_prepare(args) -> int:
    from asr_s2s.manifest import read_librispeech_dir, write_manifest

    utterances = read_librispeech_dir(args.data_dir, progress=not args.quiet)
    write_manifest(utterances, args.out)
    hours = sum(u.duration for u in utterances) / 3600
    print(f"{args.out}: {len(utterances)} utterances, {hours:.2f} h")
    return EXIT_OK


def cmd_compute_cmvn(args) -> int:
    from torch.utils.data import DataLoader
    from tqdm import tqdm

    from asr_s2s.dataset import SpeechDataset
    from asr_s2s.features import CMVNStats
    from asr_s2s.manifest import read_manifest
    from asr_s2s.tokenizer import CharTokenizer

    dataset = SpeechDataset(read_manifest(args.manifest, require_text=False), CharTokenizer(), require_text=False)
    loader = DataLoader(dataset, batch_size=None, num_workers=args.num_workers)
    feats, failed = [], 0
    for item in tqdm(loader, desc="CMVN", unit="utt", disable=args.quiet):
        if isinstance(item, (tuple, list)):  # (id, reason) of an unreadable file
            log.warning("skipping %s: %s", item[0], item[1])
            failed += 1
        else:
            feats.append(item.feats)
    stats = CMVNStats.accumulate(feats)
    stats.save(args.out)
    print(f"{args.out}: {stats.frames} frames from {len(feats)} utterances ({failed} failed)")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_train(args) -> int:
    import dataclasses

    import torch

    from asr_s2s.config import load_config
    from asr_s2s.dataset import SpeechDataset
    from asr_s2s.features import CMVNStats
    from asr_s2s.manifest import read_manifest
    from asr_s2s.model import ASRModel
    from asr_s2s.package import save_package
    from asr_s2s.tokenizer import CharTokenizer
    from asr_s2s.trainer import Trainer, seed_everything

    config = load_config(args.config)
    if args.epochs is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=args.epochs))
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = _registry(args)
    tokenizer = CharTokenizer()
    cache = config.train.feature_cache
    train_set = SpeechDataset(read_manifest(args.train_manifest), tokenizer, cache=cache)
    valid_set = SpeechDataset(read_manifest(args.valid_manifest), tokenizer, cache=cache)
    seed_everything(config.train.seed)
    model = ASRModel(config.model, tokenizer, CMVNStats.load(args.cmvn), registry)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model: %.2fM parameters, %dx time reduction", n_params / 1e6, model.encoder.time_reduction)
    exp_dir = Path(args.exp_dir)
    trainer = Trainer(model, config.train, train_set, valid_set, exp_dir, device=args.device, progress=not args.quiet)
    results = trainer.fit(resume=args.resume)
    package = save_package(trainer.model.cpu(), config.decode, exp_dir / "model", registry)
    last = results[-1] if results else None
    summary = f"model package: {package}"
    if last:
        summary += f" (epoch {last.epoch}: valid loss {last.valid_loss:.3f}, valid CER {last.valid_cer:.2f}%)"
    print(summary)
    return EXIT_OK


def cmd_train_lm(args) -> int:
    import dataclasses

    import torch

    from asr_s2s.lm import LMTrainer, load_lm_config, read_text, split_valid
    from asr_s2s.package import save_lm_package
    from asr_s2s.tokenizer import CharTokenizer
    from asr_s2s.trainer import seed_everything

    config = load_lm_config(args.config)
    if args.epochs is not None:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=args.epochs))
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = _registry(args)
    tokenizer = CharTokenizer()
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


def _load(args):
    from asr_s2s.package import load_package
    from asr_s2s.recognizer import Recognizer

    registry = _registry(args)
    model, config = load_package(args.model, registry)
    return Recognizer(model, _decode_config(args, config.decode), registry, device=args.device)


def cmd_evaluate(args) -> int:
    from asr_s2s.manifest import read_librispeech_dir, read_manifest
    from asr_s2s.metrics import alignment_text, error_rates, format_table
    from asr_s2s.tokenizer import normalize_text

    recognizer = _load(args)
    if args.manifest:
        utterances, set_name = read_manifest(args.manifest), Path(args.manifest).stem
    else:
        utterances, set_name = read_librispeech_dir(args.data_dir, progress=not args.quiet), Path(args.data_dir).name
    results = recognizer.decode_utterances(utterances, num_workers=args.num_workers, progress=not args.quiet)
    scored = [(u, r) for u, r in zip(utterances, results) if r.error is None]
    failed = [(u, r) for u, r in zip(utterances, results) if r.error is not None]
    for _, r in failed:
        log.error("failed %s: %s", r.id, r.error)
    if not scored:
        log.error("no utterance could be decoded")
        return EXIT_SOME_FAILED
    refs = [normalize_text(u.text) for u, _ in scored]
    rates = error_rates(refs, [r.text for _, r in scored])
    out_dir = Path(args.output_dir or f"decode_{set_name}")
    out_dir.mkdir(parents=True, exist_ok=True)
    with (out_dir / "hyp.trn").open("w") as hyp_file, (out_dir / "alignments.txt").open("w") as ali_file:
        for (u, r), ref in zip(scored, refs):
            hyp_file.write(f"{r.text} ({u.id})\n")
            ali_file.write(alignment_text(u.id, ref, r.text) + "\n")
    (out_dir / "results.json").write_text(json.dumps({"set": set_name, **rates.as_dict(), "failed": len(failed)}, indent=2) + "\n")
    log.info("per-utterance hypotheses and alignments in %s", out_dir)
    if args.json:
        print(json.dumps({"set": set_name, **rates.as_dict(), "failed": len(failed)}))
    else:
        print(format_table([(set_name, rates)]))
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_transcribe(args) -> int:
    from asr_s2s.audio import load_audio

    recognizer = _load(args)
    failures = 0
    for path in args.files:
        try:
            waveform = load_audio(path)
        except AsrS2SError as exc:
            log.error("%s", exc)
            failures += 1
            continue
        (result,) = recognizer.decode_waveforms([(path, waveform)])
        print(f"{path}\t{result.text}", flush=True)
    return EXIT_SOME_FAILED if failures else EXIT_OK


# -- parser ---------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="asr-s2s",
        description="Listen, Attend and Spell speech recognition with plugin encoders, decoders and scorers.",
        epilog="Exit codes: 0 success; 1 some inputs failed; 2 bad usage or input.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--disable-plugin", action="append", default=[], metavar="NAME",
                        help="do not load the plugin entry point NAME (repeatable)")
    common.add_argument("-q", "--quiet", action="store_true", help="no progress bars or info logs")
    common.add_argument("-v", "--verbose", action="store_true", help="debug logs")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plugins", parents=[common], help="list every registered component",
                       description="List every encoder, decoder and scorer with its plugin and distribution.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("prepare", parents=[common], help="write a manifest for a LibriSpeech-layout folder",
                       description="Read spk/chapter/*.trans.txt and audio in place; write a JSON-lines manifest.")
    p.add_argument("--data-dir", required=True, help="a LibriSpeech-layout folder, e.g. LibriSpeech/dev-clean")
    p.add_argument("--out", required=True, help="manifest to write (JSON lines)")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("compute-cmvn", parents=[common], help="global feature mean/std of a manifest",
                       description="Compute global CMVN statistics of 80-dim fbank features over a manifest.")
    p.add_argument("--manifest", required=True, help="training manifest")
    p.add_argument("--out", required=True, help="JSON file to write")
    p.add_argument("--num-workers", type=int, default=1, help="DataLoader workers (default: 1)")
    p.set_defaults(func=cmd_compute_cmvn)

    p = sub.add_parser("train", parents=[common], help="train a model and export a model package",
                       description="Train with a YAML config, checkpoint every epoch, and export EXP_DIR/model.")
    p.add_argument("--config", required=True, help="experiment YAML (model, train, decode sections)")
    p.add_argument("--train-manifest", required=True)
    p.add_argument("--valid-manifest", required=True)
    p.add_argument("--cmvn", required=True, help="CMVN JSON from compute-cmvn")
    p.add_argument("--exp-dir", required=True, help="output folder: checkpoints, logs, plots, model/")
    p.add_argument("--resume", action="store_true", help="continue from the latest checkpoint in EXP_DIR")
    p.add_argument("--epochs", type=int, help="override train.epochs")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.set_defaults(func=cmd_train)

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
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.set_defaults(func=cmd_train_lm)

    decode = argparse.ArgumentParser(add_help=False)
    decode.add_argument("--model", required=True, help="model package directory (EXP_DIR/model)")
    decode.add_argument("--beam-size", type=int, help="beam size; 1 with the decoder alone is greedy (default: the model's)")
    decode.add_argument("--scorer", action="append", metavar="NAME=WEIGHT",
                        help="scorer weight, e.g. length_bonus=0.5 (repeatable; 0 turns one off)")
    decode.add_argument("--scorer-param", action="append", metavar="NAME.KEY=VALUE",
                        help="a scorer's param, e.g. ngram.path=lm.arpa (repeatable; VALUE is read as YAML)")
    decode.add_argument("--lm", metavar="DIR", help="language model package for the 'lm' scorer (give --scorer lm=WEIGHT)")
    decode.add_argument("--hotword", action="append", metavar="PHRASE",
                        help="phrase to boost with the 'hotwords' scorer (repeatable; give --scorer hotwords=WEIGHT)")
    decode.add_argument("--batch-seconds", type=float, help="padded audio seconds decoded together")
    decode.add_argument("--device", default="cpu", help="torch device (default: cpu)")

    p = sub.add_parser("evaluate", parents=[common, decode], help="decode a test set and print WER/CER",
                       description="Decode a manifest or LibriSpeech-layout folder, score with jiwer, "
                                   "and write per-utterance hypotheses and alignments.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="JSON-lines manifest with reference text")
    src.add_argument("--data-dir", help="LibriSpeech-layout folder, e.g. LibriSpeech/test-clean")
    p.add_argument("--json", action="store_true", help="print one JSON object (wer, cer in percent, counts)")
    p.add_argument("--output-dir", help="where hyp.trn, alignments.txt and results.json go (default: ./decode_SET)")
    p.add_argument("--num-workers", type=int, default=1, help="DataLoader workers (default: 1)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("transcribe", parents=[common, decode], help="print the text of audio files",
                       description="Transcribe audio files (wav, flac, mp3, ogg, any rate and channels). "
                                   "Prints 'PATH<TAB>TEXT' per file; bad files are reported on stderr.")
    p.add_argument("files", nargs="+", metavar="FILE")
    p.set_defaults(func=cmd_transcribe)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        return args.func(args)
    except AsrS2SError as exc:
        print(f"asr-s2s {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
