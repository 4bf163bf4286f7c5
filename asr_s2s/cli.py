"""The ``asr-s2s`` command. Results go to stdout, logs to stderr.

Exit codes: 0 success, 1 some inputs failed (e.g. one bad audio file),
2 bad usage or bad input (config, manifest, model, plugin).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import sys
from pathlib import Path

from asr_s2s import __version__
from asr_s2s.errors import AsrS2SError, ConfigError, did_you_mean
from asr_s2s.files import write_text_atomically

log = logging.getLogger("asr_s2s")

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # as a process killed by SIGPIPE reports it to the shell


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


# search options with a flag of the same name on evaluate and transcribe (--max-length-ratio, ...)
SEARCH_FLAGS = ("max_length_ratio", "min_length_ratio", "length_normalize", "end_margin", "pre_beam_ratio",
                "eos_threshold")


def _end_margin(text: str) -> float:
    """``--end-margin``: a positive number, or inf (also 'none' or 'off') for no end detection."""
    if text.lower() in ("inf", "none", "off"):
        return math.inf
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or inf, got {text!r}") from None


def _scorer_overrides(args, base, registry) -> tuple[dict[str, float], dict[str, dict]]:
    """``base``'s scorer weights and params with ``--scorer`` and ``--scorer-param`` applied.

    Names and keys given on the command line are checked here, so that a typo is
    reported as the flag the user typed rather than as a config path.
    """
    from asr_s2s.plugins import accepted_params

    weights = _parse_scorer_weights(args.scorer)
    for name in weights:
        try:
            registry.get("scorer", name)
        except AsrS2SError as exc:
            raise ConfigError(f"--scorer {name}={weights[name]:g}: {exc}") from None
    scorers = {**base.scorers, **weights}
    params = {name: dict(p) for name, p in base.scorer_params.items()}
    for name, extra in _parse_scorer_params(args.scorer_param).items():
        try:
            accepted = accepted_params(registry.factory("scorer", name), injected={"model"})
        except AsrS2SError as exc:
            raise ConfigError(f"--scorer-param {name}.{next(iter(extra))}: {exc}") from None
        for key, value in extra.items():
            if key not in accepted:
                raise ConfigError(
                    f"--scorer-param {name}.{key}={value}: scorer {name!r} has no param {key!r}."
                    f"{did_you_mean(key, accepted)} Its params: {', '.join(accepted) or '(none)'}"
                )
        params.setdefault(name, {}).update(extra)
    return scorers, params


def _decode_config(args, base, registry):
    """The model's decode config with the command line's overrides."""
    changes = {}
    if args.beam_size is not None:
        changes["beam_size"] = args.beam_size
    scorers, params = _scorer_overrides(args, base, registry)
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
    if args.precision is not None:
        changes["precision"] = args.precision
    for name in SEARCH_FLAGS:
        if getattr(args, name) is not None:
            value = getattr(args, name)
            changes[name] = None if name == "end_margin" and math.isinf(value) else value
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
    from asr_s2s.progress import progress_bar

    from asr_s2s.dataset import SpeechDataset
    from asr_s2s.features import CMVNStats
    from asr_s2s.manifest import read_manifest
    from asr_s2s.tokenizer import CharTokenizer

    dataset = SpeechDataset(read_manifest(args.manifest, require_text=False), CharTokenizer(), require_text=False)
    loader = DataLoader(dataset, batch_size=None, num_workers=args.num_workers)
    feats, failed = [], 0
    for item in progress_bar(loader, desc="CMVN", unit="utt", disable=args.quiet):
        if isinstance(item, (tuple, list)):  # (id, reason) of an unreadable file
            log.warning("skipping %s: %s", item[0], item[1])
            failed += 1
        else:
            feats.append(item.feats)
    if not feats:
        log.error("%s: none of its %d utterances could be read; no CMVN statistics written", args.manifest, failed)
        return EXIT_SOME_FAILED
    stats = CMVNStats.accumulate(feats)
    stats.save(args.out)
    print(f"{args.out}: {stats.frames} frames from {len(feats)} utterances ({failed} failed)")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_augment(args) -> int:
    from asr_s2s.augment import AugmentationChain, load_augment_file, write_augmented
    from asr_s2s.interfaces import AugmentationContext
    from asr_s2s.manifest import read_manifest

    utterances = read_manifest(args.manifest, require_text=False)
    context = AugmentationContext(utterances=tuple(utterances), seed=args.seed)
    chain = AugmentationChain.from_config(load_augment_file(args.augment), _registry(args), context, seed=args.seed,
                                          where=f"{args.augment}: augment")
    written, failed = write_augmented(utterances, chain, args.out_dir, args.num_workers, progress=not args.quiet)
    hours = sum(u.duration for u in written) / 3600
    print(f"{Path(args.out_dir) / 'manifest.jsonl'}: {len(written)} utterances, {hours:.2f} h ({len(failed)} left out)")
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _with_epochs(config, epochs: int | None):
    """``config`` (with a ``train`` section) with ``train.epochs`` replaced, unless ``epochs`` is None."""
    if epochs is None:
        return config
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))


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
    import torch

    from asr_s2s.config import load_config
    from asr_s2s.dataset import SpeechDataset
    from asr_s2s.features import CMVNStats
    from asr_s2s.manifest import read_manifest
    from asr_s2s.model import ASRModel
    from asr_s2s.package import save_package
    from asr_s2s.tokenizer import CharTokenizer
    from asr_s2s import distributed
    from asr_s2s.trainer import Trainer, latest_checkpoint, seed_everything

    config = _with_epochs(load_config(args.config), args.epochs)
    if args.threads:
        torch.set_num_threads(args.threads)
    dist_info = distributed.init_from_env(args.device)  # under torchrun: join the process group
    registry = _registry(args)
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
        distributed.cleanup()
        return EXIT_OK
    package = save_package(trainer.model.cpu(), config.decode, exp_dir / "model", registry)
    distributed.cleanup()
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


def cmd_train_lm(args) -> int:
    import torch

    from asr_s2s.lm import LMTrainer, load_lm_config, read_text, split_valid
    from asr_s2s.package import save_lm_package
    from asr_s2s.tokenizer import CharTokenizer
    from asr_s2s.trainer import seed_everything

    config = _with_epochs(load_lm_config(args.config), args.epochs)
    if args.threads:
        torch.set_num_threads(args.threads)
    registry = _registry(args)
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


def _set_threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def _load(args):
    from asr_s2s.package import load_package
    from asr_s2s.recognizer import Recognizer

    _set_threads(args)
    registry = _registry(args)
    model, config = load_package(args.model, registry)
    return Recognizer(model, _decode_config(args, config.decode, registry), registry, device=args.device)


def _decode_shared(recognizer, utterances, args, dist_info):
    """Decode ``utterances``. Under torchrun each rank decodes every WORLD_SIZE-th one and
    rank 0 gets every result back, in order; the other ranks get None."""
    from asr_s2s import distributed
    from asr_s2s.recognizer import Recognition

    if dist_info.world_size == 1:
        return recognizer.decode_utterances(utterances, num_workers=args.num_workers, progress=not args.quiet)
    share = utterances[dist_info.rank :: dist_info.world_size]
    mine = recognizer.decode_utterances(share, num_workers=args.num_workers, progress=False) if share else []
    gathered = distributed.all_gather_objects([(r.id, r.text, r.error) for r in mine])
    distributed.cleanup()
    if not dist_info.is_main:
        return None
    by_id = {utt_id: Recognition(utt_id, text, error=error) for part in gathered for utt_id, text, error in part}
    return [by_id[u.id] for u in utterances]


def cmd_evaluate(args) -> int:
    from asr_s2s import distributed
    from asr_s2s.manifest import read_librispeech_dir, read_manifest
    from asr_s2s.metrics import alignment_text, error_rates, format_table
    from asr_s2s.tokenizer import normalize_text

    _check_output_dir(args.output_dir, "--output-dir")
    dist_info = distributed.init_from_env(args.device)  # under torchrun: each rank decodes a share
    args.device = dist_info.device
    recognizer = _load(args)
    if args.manifest:
        utterances, set_name = read_manifest(args.manifest), Path(args.manifest).stem
    else:
        utterances, set_name = read_librispeech_dir(args.data_dir, progress=not args.quiet), Path(args.data_dir).name
    results = _decode_shared(recognizer, utterances, args, dist_info)
    if results is None:  # not rank 0: rank 0 writes and prints
        return EXIT_OK
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


@dataclasses.dataclass(frozen=True)
class _Job:
    """One input of ``transcribe``: what to read, and its output path under --output-dir without the suffix."""

    source: str | bytes
    name: str
    out_name: str


def _expand_inputs(patterns: list[str]) -> tuple[list[_Job], list[str]]:
    """Files, directories (recursively: files with an audio extension), globs and ``-`` (stdin) as jobs.

    :returns: the jobs, without duplicates, and one problem per pattern that named nothing.
    """
    import glob

    from asr_s2s.audio import AUDIO_EXTENSIONS

    jobs: list[_Job] = []
    problems: list[str] = []
    for pattern in patterns:
        if pattern == "-":
            jobs.append(_Job(sys.stdin.buffer.read(), "-", "stdin"))
            continue
        path = Path(pattern)
        if path.is_dir():
            files = sorted(
                p for p in path.rglob("*") if p.is_file() and not any(x.startswith(".") for x in p.relative_to(path).parts)
            )  # hidden files and folders (.git, .DS_Store, our own .NAME.tmp) are not inputs
            audio = [p for p in files if p.suffix.lower() in AUDIO_EXTENSIONS]
            others = [p for p in files if p.suffix.lower() not in AUDIO_EXTENSIONS]
            if others:
                shown = ", ".join(str(p) for p in others[:5]) + (", ..." if len(others) > 5 else "")
                log.warning("%s: skipping %d file(s) without an audio extension: %s", pattern, len(others), shown)
            if not audio:
                problems.append(f"{pattern}: no audio files in this directory")
            jobs.extend(_Job(str(p), str(p), str(p.relative_to(path).with_suffix(""))) for p in audio)
        elif not path.exists() and glob.has_magic(pattern):
            matches = sorted(Path(m) for m in glob.glob(pattern, recursive=True) if Path(m).is_file())
            if not matches:
                problems.append(f"{pattern}: no file matches this pattern")
            base = Path(*path.parts[: _literal_depth(path)])
            jobs.extend(_Job(str(m), str(m), str(m.relative_to(base).with_suffix(""))) for m in matches)
        else:
            jobs.append(_Job(pattern, pattern, path.stem))  # a missing file fails later, naming itself
    seen: set[str] = set()
    unique = []
    for job in jobs:
        key = job.name if job.name == "-" else str(Path(job.name).resolve())
        if key not in seen:
            seen.add(key)
            unique.append(job)
    return unique, problems


def _literal_depth(path: Path) -> int:
    """How many leading parts of a glob pattern hold no wildcard."""
    import glob

    depth = 0
    for part in path.parts:
        if glob.has_magic(part):
            break
        depth += 1
    return depth


def _transcribe_options(args, base, registry):
    """The model's transcription options with the command line's overrides."""
    changes = dict(zip(("scorers", "scorer_params"), _scorer_overrides(args, base, registry)))
    for name, flag, value in (("lm", "--lm", args.lm), ("hotwords", "--hotword", args.hotword)):
        if value and name not in changes["scorers"]:  # --scorer lm=0 turns it off, as in evaluate
            raise ConfigError(f"{flag} needs a weight for the {name!r} scorer: add --scorer {name}=WEIGHT")
    if args.lm:
        changes["lm"] = args.lm
    if args.hotword:
        changes["hotwords"] = tuple(args.hotword)
    if args.beam_size is not None:
        changes["beam_size"] = args.beam_size
    if args.batch_seconds is not None:
        changes["batch_seconds"] = args.batch_seconds
    if args.precision is not None:
        changes["precision"] = args.precision
    for name in ("max_segment_s", "min_pause_s", "word_timestamps", *SEARCH_FLAGS):
        if getattr(args, name) is not None:
            changes[name] = getattr(args, name)
    changes["attention"] = bool(args.plot_attention)
    return dataclasses.replace(base, **changes)


def _known_duration_s(jobs: list[_Job]) -> float | None:
    """Total audio seconds from the file headers, or None when a header cannot tell."""
    import io

    import soundfile

    total = 0.0
    for job in jobs:
        try:
            total += soundfile.info(io.BytesIO(job.source) if isinstance(job.source, bytes) else job.source).duration
        except Exception:  # noqa: BLE001 - a file libsndfile cannot open: its length is unknown until decoded
            return None
    return total


def _check_output_dir(value: str | None, flag: str) -> None:
    """Refuse, before any work, an output folder path that names an existing file."""
    if value is not None and Path(value).exists() and not Path(value).is_dir():
        raise ConfigError(f"{flag} {value}: that is an existing file, not a folder. "
                          "Give a folder path (it is created when missing).")


def _plot_segments(result, plot_dir: Path, out_name: str) -> None:
    from asr_s2s.plotting import plot_attention

    for segment in result.segments:
        if segment.attention is None or segment.attention.size == 0:
            continue
        path = plot_dir / f"{out_name}.{segment.id:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        title = f"{Path(result.source).name} {segment.start:.2f}-{segment.end:.2f} s"
        plot_attention(segment.attention, path, title=title, labels=segment.text)


def cmd_transcribe(args) -> int:
    from asr_s2s.progress import progress_bar

    from asr_s2s.formats import format_transcription, to_json
    from asr_s2s.transcriber import AudioInput, load_model

    if args.skip_existing and not args.output_dir:
        raise ConfigError("--skip-existing needs --output-dir (it skips inputs whose output file exists)")
    _check_output_dir(args.output_dir, "--output-dir")
    _check_output_dir(args.plot_attention, "--plot-attention")
    _set_threads(args)
    transcriber = load_model(args.model, device=args.device, disable_plugins=args.disable_plugin)
    options = _transcribe_options(args, transcriber.options, transcriber.registry)
    jobs, problems = _expand_inputs(args.inputs)
    for problem in problems:
        log.error("%s", problem)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if out_dir is not None:
        owners: dict[str, str] = {}
        for job in jobs:
            if job.out_name in owners:
                raise ConfigError(
                    f"{owners[job.out_name]} and {job.name} would both write {out_dir / job.out_name}.{args.format}; "
                    "rename one or transcribe them into different --output-dir folders"
                )
            owners[job.out_name] = job.name
        if args.skip_existing:
            todo = [j for j in jobs if not (out_dir / f"{j.out_name}.{args.format}").exists()]
            if len(todo) < len(jobs):
                log.info("skipping %d input(s) whose output exists in %s", len(jobs) - len(todo), out_dir)
            jobs = todo
    if out_dir is None and args.format in ("srt", "vtt", "tsv") and len(jobs) > 1:
        raise ConfigError(
            f"--format {args.format} writes one document per input, and {len(jobs)} inputs printed back to back "
            f"could not be told apart: give --output-dir DIR (one DIR/NAME.{args.format} each), or use --format json"
        )
    failed = len(problems)
    inputs = [AudioInput(job.name, job.source) for job in jobs]
    total_s = None if args.quiet else _known_duration_s(jobs)
    of_total = "?" if total_s is None else "{total:.0f}"
    with progress_bar(total=total_s, unit="s", desc="transcribing", disable=args.quiet,
              bar_format="{l_bar}{bar}| {n:.0f}/" + of_total + " audio s [{elapsed}<{remaining}]") as bar:
        results = transcriber.transcribe_many(inputs, options, progress=bar.update, num_workers=args.num_workers)
        for job, outcome in zip(jobs, results):
            result = outcome.transcription
            if outcome.ok:
                if out_dir is not None:
                    write_text_atomically(out_dir / f"{job.out_name}.{args.format}", format_transcription(result, args.format))
                elif args.format == "txt":
                    bar.write(f"{job.name}\t{result.text}", file=sys.stdout)
                elif args.format == "json":
                    bar.write(to_json(result, indent=None).rstrip("\n"), file=sys.stdout)
                else:
                    bar.write(format_transcription(result, args.format).rstrip("\n") + "\n", file=sys.stdout)
                if args.plot_attention:
                    _plot_segments(result, Path(args.plot_attention), job.out_name)
            else:
                failed += 1
                log.error("%s", outcome.error)
            sys.stdout.flush()
    if failed:
        log.error("%d of %d input(s) failed", failed, len(jobs) + len(problems))
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_tokens(args) -> int:
    from collections import Counter

    from asr_s2s.manifest import read_manifest
    from asr_s2s.tokenizer import BLANK, CHARACTERS, SOS_EOS, CharTokenizer, normalize_text

    counts: Counter[str] = Counter()
    utterances = 0
    for manifest in args.manifest:
        for utt in read_manifest(manifest):
            counts.update(normalize_text(utt.text))
            utterances += 1
    extra = sorted(c for c in counts if c not in CHARACTERS)
    if extra:
        log.warning("characters outside A-Z, apostrophe and space become tokens too: %s", " ".join(repr(c) for c in extra))
    unseen = [c for c in CHARACTERS if c not in counts]
    tokens = CharTokenizer([BLANK, SOS_EOS, *CHARACTERS, *extra])
    tokens.save(args.out)
    print(f"{args.out}: {len(tokens)} tokens from {utterances} utterances "
          f"({sum(counts.values())} characters; never seen: {' '.join(repr(c) for c in unseen) or 'none'})")
    return EXIT_OK


def cmd_download(args) -> int:
    from asr_s2s.download import DownloadError, download, read_md5sums

    sums = read_md5sums(args.md5sums) if args.md5sums else None
    if sums is None:
        log.warning("no --md5sums: the downloads are not verified")
    elif missing := [name for name in args.files if name not in sums]:
        raise ConfigError(f"{args.md5sums}: no checksum for {', '.join(missing)}")
    failed = 0
    for name in args.files:
        url = f"{args.base_url.rstrip('/')}/{name}"
        try:
            got = download(url, Path(args.out_dir) / name, md5=sums[name] if sums else None, retries=args.retries,
                           retry_wait_s=args.retry_wait, timeout_s=args.timeout, progress=not args.quiet)
        except DownloadError as exc:
            print(f"asr-s2s download: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        log.info("%s: %s", got.path, "already there" if not got.fetched_bytes else
                 f"{got.fetched_bytes} bytes{' (resumed)' if got.resumed else ''}, checksum OK" if sums else "done")
        print(got.path)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_average(args) -> int:
    from asr_s2s.average import average_package

    out, epochs = average_package(args.exp_dir, args.avg, args.best_by, args.out, _registry(args))
    print(f"model package: {out} (average of epoch(s) {', '.join(map(str, epochs))}, by {args.best_by})")
    return EXIT_OK


# -- parser ---------------------------------------------------------------------
def _add_global_flags(parser: argparse.ArgumentParser, prefix: str, default: object = None) -> None:
    """``--disable-plugin``, ``-q`` and ``-v``, stored as ``PREFIX + name``."""
    parser.add_argument("--disable-plugin", action="append", dest=f"{prefix}disable_plugin", metavar="NAME",
                        default=[] if default is None else default,
                        help="do not load the plugin entry point NAME (repeatable)")
    parser.add_argument("-q", "--quiet", action="store_true", dest=f"{prefix}quiet",
                        default=False if default is None else default, help="no progress bars or info logs")
    parser.add_argument("-v", "--verbose", action="store_true", dest=f"{prefix}verbose",
                        default=False if default is None else default, help="debug logs")


def _merge_global_flags(args: argparse.Namespace) -> None:
    """Combine the flags given before the command with those given after it."""
    args.disable_plugin = [*args.global_disable_plugin, *getattr(args, "disable_plugin", [])]
    args.quiet = args.global_quiet or getattr(args, "quiet", False)
    args.verbose = args.global_verbose or getattr(args, "verbose", False)


def check_device(name: str) -> None:
    """Refuse a torch device this machine cannot use, saying why, before any work starts."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name}: not a torch device ({exc}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"--device {name}: no CUDA GPU is visible (torch {torch.__version__}, {built}). "
                "Use --device cpu, or check nvidia-smi and CUDA_VISIBLE_DEVICES."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible (cuda:0 .. "
                              f"cuda:{torch.cuda.device_count() - 1})")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: only cpu and cuda devices are supported")


def _decode_defaults(model_decode: dict | None) -> tuple[dict, str]:
    """The decode defaults ``--help`` shows, and where they come from."""
    from asr_s2s.config import DecodeConfig

    built_in = {f.name: getattr(DecodeConfig(), f.name) for f in dataclasses.fields(DecodeConfig)}
    if model_decode:
        return {**built_in, **model_decode}, "from --model's config.yaml"
    return built_in, "built in; a model package's decode section overrides it (give --model to see its values)"


def _model_decode_for_help(argv: list[str]) -> dict | None:
    """With ``--help`` and ``--model DIR`` on the command line, DIR's decode section, so help shows its defaults."""
    if not ({"-h", "--help"} & set(argv)):
        return None
    path = next((argv[i + 1] for i, a in enumerate(argv[:-1]) if a == "--model"), None)
    path = path or next((a.split("=", 1)[1] for a in argv if a.startswith("--model=")), None)
    if path is None:
        return None
    try:
        import yaml

        decode = yaml.safe_load((Path(path) / "config.yaml").read_text()).get("decode")
    except Exception:  # noqa: BLE001 - help must print even for a bad path; the command itself reports it
        return None
    return decode if isinstance(decode, dict) else None


def build_parser(model_decode: dict | None = None) -> argparse.ArgumentParser:
    """The argument parser; ``model_decode`` (a package's decode section) sets the defaults ``--help`` shows."""
    parser = argparse.ArgumentParser(
        prog="asr-s2s",
        description="Listen, Attend and Spell speech recognition with plugin encoders, decoders and scorers.",
        epilog="Exit codes: 0 success; 1 some inputs failed; 2 bad usage or input.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    # -q, -v and --disable-plugin go before or after the command: the command's copies default to
    # SUPPRESS so that they only override the global ones when given; main() merges the plugin lists
    _add_global_flags(parser, "global_")
    common = argparse.ArgumentParser(add_help=False)
    _add_global_flags(common, "", default=argparse.SUPPRESS)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("plugins", parents=[common], help="list every registered component",
                       description="List every encoder, decoder and scorer with its plugin and distribution.")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    p.set_defaults(func=cmd_plugins)

    p = sub.add_parser("download", parents=[common], help="fetch corpus archives, resuming and checking MD5",
                       description="Download BASE_URL/FILE for each FILE into OUT_DIR. A broken-off transfer resumes "
                                   "with an HTTP Range request (also on the next run: the partial file is kept as "
                                   "FILE.part); with --md5sums each file must match its published MD5, and a corrupt "
                                   "download is deleted. Prints each finished file's path.",
                       epilog="Exit codes: 0 every file is there and verified; 1 some file failed (its error names it); "
                              "2 bad usage or a missing checksum.")
    p.add_argument("files", nargs="+", metavar="FILE", help="file names under BASE_URL, e.g. dev-clean.tar.gz")
    p.add_argument("--base-url", required=True, help="e.g. https://www.openslr.org/resources/12 (or a mirror)")
    p.add_argument("--out-dir", required=True, help="folder for the downloads")
    p.add_argument("--md5sums", help="checksum file in md5sum format ('MD5  FILE' lines); every FILE must be listed")
    p.add_argument("--retries", type=int, default=5, help="resumptions of a broken-off transfer (default: 5)")
    p.add_argument("--retry-wait", type=float, default=2.0, help="seconds before the first retry, doubling (default: 2)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a transfer counts as broken (default: 60)")
    p.set_defaults(func=cmd_download)

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

    p = sub.add_parser("augment", parents=[common], help="write augmented copies of a manifest's audio (test conditions)",
                       description="Apply the augmentation entries of a YAML file ('augment: [{name: ..., prob: ..., "
                                   "...params}]', as in train.augment; an experiment config's train.augment works too) "
                                   "to every utterance of a manifest, and write OUT_DIR/audio/ID.flac and "
                                   "OUT_DIR/manifest.jsonl, each line with an 'augment' list of what was done. The "
                                   "draws repeat for the same --seed, so a fixed test condition (noise at 10 dB, "
                                   "reverberation, a codec, files cut at the speech) is built the same way every "
                                   "time. Only audio augmentations can be written (not vtlp or specaugment).",
                       epilog="Exit codes: 0 all written; 1 some utterances could not be read or augmented (left out); "
                              "2 bad usage or a bad augmentation entry.")
    p.add_argument("--manifest", required=True, help="JSON-lines manifest of the audio to augment")
    p.add_argument("--augment", required=True, metavar="YAML", help="file with an 'augment:' list of entries")
    p.add_argument("--out-dir", required=True, help="folder for audio/ and manifest.jsonl")
    p.add_argument("--seed", type=int, default=0, help="seed of the draws (default: 0)")
    p.add_argument("--num-workers", type=int, default=1, help="worker processes (default: 1; 0 runs in this one)")
    p.set_defaults(func=cmd_augment)

    p = sub.add_parser("tokens", parents=[common], help="write the token list of training manifests",
                       description="Write tokens.txt: <blank>, <sos/eos>, the built-in characters (A-Z, apostrophe, "
                                   "space) and any other character found in the normalised transcripts; print which "
                                   "built-in characters never occur.")
    p.add_argument("--manifest", required=True, nargs="+", metavar="FILE", help="training manifests")
    p.add_argument("--out", required=True, help="token list to write (one token per line)")
    p.set_defaults(func=cmd_tokens)

    p = sub.add_parser("train", parents=[common], help="train a model and export a model package",
                       description="Train with a YAML config, checkpoint every epoch (and every train.checkpoint_every_steps "
                                   "steps), and export EXP_DIR/model. "
                                   "Under 'torchrun --nproc_per_node=N --no-python asr-s2s train ...' it trains with "
                                   "DistributedDataParallel (NCCL on CUDA, gloo on the CPU): each rank takes its own "
                                   "share of the batches, and rank 0 alone writes checkpoints, logs and the package.")
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
    p.add_argument("--device", default="cpu",
                   help="torch device (default: cpu); under torchrun 'cuda' means cuda:LOCAL_RANK")
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
    p.add_argument("--tokens", help="token list from 'asr-s2s tokens' (default: the built-in characters)")
    p.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    p.add_argument("--threads", type=int, help="torch intra-op threads (default: torch's choice)")
    p.set_defaults(func=cmd_train_lm)

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

    from asr_s2s.vad import MAX_SEGMENT_S, MIN_PAUSE_S

    decode = argparse.ArgumentParser(add_help=False)
    shown, source = _decode_defaults(model_decode)
    decode.add_argument("--model", required=True, help="model package directory (EXP_DIR/model)")
    decode.add_argument("--beam-size", type=int, metavar="K",
                        help=f"beam size; 1 with the decoder alone is greedy (default: {shown['beam_size']}, {source})")
    weights = ", ".join(f"{n}={w:g}" for n, w in shown["scorers"].items())
    decode.add_argument("--scorer", action="append", metavar="NAME=WEIGHT",
                        help=f"scorer weight, e.g. length_bonus=0.5 (repeatable; 0 turns one off; default: {weights}, "
                             f"{source})")
    decode.add_argument("--scorer-param", action="append", metavar="NAME.KEY=VALUE",
                        help="a scorer's param, e.g. ngram.path=lm.arpa (repeatable; VALUE is read as YAML)")
    decode.add_argument("--lm", metavar="DIR", help="language model package for the 'lm' scorer (give --scorer lm=WEIGHT)")
    decode.add_argument("--hotword", action="append", metavar="PHRASE",
                        help="phrase to boost with the 'hotwords' scorer (repeatable; give --scorer hotwords=WEIGHT)")
    decode.add_argument("--batch-seconds", type=float, metavar="S",
                        help=f"padded audio seconds decoded together (default: {shown['batch_seconds']:g}, {source})")
    decode.add_argument("--precision", choices=["fp32", "bf16"],
                        help="bf16: run the encoder under bf16 autocast, about 2x faster encoding on CPUs with AMX "
                             "(slower on CPUs without bf16 units, little gain on GPUs); the search stays fp32 "
                             "(default: the model's, fp32)")
    decode.add_argument("--max-length-ratio", type=float, metavar="R",
                        help=f"most output tokens per encoder frame (default: {shown['max_length_ratio']:g}, {source})")
    decode.add_argument("--min-length-ratio", type=float, metavar="R",
                        help=f"fewest output tokens per encoder frame (default: {shown['min_length_ratio']:g}, {source})")
    decode.add_argument("--length-normalize", action=argparse.BooleanOptionalAction, default=None,
                        help=f"rank finished hypotheses by score per token (default: {shown['length_normalize']}, {source})")
    decode.add_argument("--end-margin", type=_end_margin, metavar="M",
                        help="end detection: stop an utterance once its running hypotheses trail its best finished one "
                             f"by M; 'inf' turns it off (default: {shown['end_margin']}, {source})")
    decode.add_argument("--pre-beam-ratio", type=float, metavar="R",
                        help="partial scorers (ctc) score the best ceil(R x beam) tokens "
                             f"(default: {shown['pre_beam_ratio']:g}, {source})")
    decode.add_argument("--eos-threshold", type=float, metavar="G",
                        help="end a hypothesis only where the decoder's log-probability of <eos> is at least G times "
                             "its best other token's (1.5 keeps a word LM from cutting outputs short) "
                             f"(default: {shown['eos_threshold']}, {source}; none: always)")
    decode.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    decode.add_argument("--threads", type=int,
                        help="torch intra-op threads (default: torch's choice; 1 is fastest when other processes "
                             "share the cores)")

    p = sub.add_parser("evaluate", parents=[common, decode], help="decode a test set and print WER/CER",
                       description="Decode a manifest or LibriSpeech-layout folder, score with jiwer, "
                                   "and write per-utterance hypotheses and alignments. Under 'torchrun "
                                   "--nproc_per_node=N --no-python asr-s2s evaluate ...' each process decodes every "
                                   "N-th utterance and rank 0 merges, scores and writes.")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--manifest", help="JSON-lines manifest with reference text")
    src.add_argument("--data-dir", help="LibriSpeech-layout folder, e.g. LibriSpeech/test-clean")
    p.add_argument("--json", action="store_true", help="print one JSON object (wer, cer in percent, counts)")
    p.add_argument("--output-dir", help="where hyp.trn, alignments.txt and results.json go (default: ./decode_SET, SET being the "
                        "manifest's file name without .jsonl, or the --data-dir folder's name)")
    p.add_argument("--num-workers", type=int, default=1, help="DataLoader workers (default: 1)")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser(
        "transcribe", parents=[common, decode], help="transcribe audio files of any length",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Transcribe audio files, directories (recursively) and globs: wav, flac, mp3, ogg, and m4a/aac\n"
            "through ffmpeg, at any sample rate and channel count; '-' reads a wav from stdin.\n"
            "Long files are streamed and split at pauses into segments of at most --max-segment-s,\n"
            "decoded in batches across files, and stitched with their times. Words are timed by CTC forced\n"
            "alignment when the model has a CTC head."
        ),
        epilog=(
            "Output: 'PATH<TAB>TEXT' per input on stdout; --format json prints one JSON object per line\n"
            "(segments, words, scores, model id, options); srt, vtt and tsv print the document of a single\n"
            "input (several need --output-dir). With --output-dir, each input gets DIR/NAME.FORMAT instead\n"
            "(inputs found in a directory keep their sub-folders; stdin is written as DIR/stdin.FORMAT).\n"
            "Bad inputs are reported on stderr and skipped.\n"
            "Exit codes: 0 all transcribed; 1 some inputs failed; 2 bad usage, options or model."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file, directory, glob (quote it), or - for stdin")
    p.add_argument("--format", choices=["txt", "json", "srt", "vtt", "tsv"], default="txt", help="output format (default: txt)")
    p.add_argument("--output-dir", metavar="DIR", help="write one file per input, DIR/NAME.FORMAT, instead of printing")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose output file exists (with --output-dir)")
    p.add_argument("--max-segment-s", "--max-segment-seconds", dest="max_segment_s", type=float, metavar="S",
                   help=f"longest segment the model decodes; longer stretches are cut at pauses (default: {MAX_SEGMENT_S:g})")
    p.add_argument("--min-pause-s", type=float, metavar="S",
                   help=f"shortest pause that separates segments (default: {MIN_PAUSE_S:g})")
    p.add_argument("--word-timestamps", action=argparse.BooleanOptionalAction, default=None,
                   help="time every word by CTC forced alignment (default: when the model has a CTC head; "
                        "--word-timestamps makes a model without one an error)")
    p.add_argument("--plot-attention", metavar="DIR", help="write a PNG of the attention alignment of each segment to DIR")
    p.add_argument("--num-workers", type=int, default=0, metavar="N",
                   help="threads that read and resample the next N inputs while the model decodes (each held whole "
                        "in memory); 0 streams each input in turn (default: 0)")
    p.set_defaults(func=cmd_transcribe)
    return parser


def _silence_stdout() -> None:
    """Point stdout at /dev/null so that the interpreter's final flush cannot raise again."""
    import os

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no real file descriptor (stdout replaced in-process)
        pass


def main(argv: list[str] | None = None) -> int:
    from tqdm.contrib.logging import logging_redirect_tqdm

    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(_model_decode_for_help(argv))
    args = parser.parse_args(argv)
    _merge_global_flags(args)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        if getattr(args, "device", None):
            check_device(args.device)
        with logging_redirect_tqdm():  # log lines go above a live progress bar, never glued onto it
            return args.func(args)
    except BrokenPipeError:  # stdout closed early (| head): stop quietly, as Unix tools do
        _silence_stdout()
        return EXIT_BROKEN_PIPE
    except AsrS2SError as exc:
        print(f"asr-s2s {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except OSError as exc:  # a path the user gave cannot be read or written: permissions, a full disk, ...
        log.debug("traceback", exc_info=True)
        print(f"asr-s2s {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
