"""Data commands: ``prepare``, ``compute-cmvn``, ``augment``, ``tokens`` and ``lm-text``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from asr_s2s.cli.options import EXIT_OK, EXIT_SOME_FAILED, registry_from

log = logging.getLogger("asr_s2s")


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
    chain = AugmentationChain.from_config(load_augment_file(args.augment), registry_from(args), context, seed=args.seed,
                                          where=f"{args.augment}: augment")
    written, failed = write_augmented(utterances, chain, args.out_dir, args.num_workers, progress=not args.quiet)
    hours = sum(u.duration for u in written) / 3600
    print(f"{Path(args.out_dir) / 'manifest.jsonl'}: {len(written)} utterances, {hours:.2f} h ({len(failed)} left out)")
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


def cmd_lm_text(args) -> int:
    from asr_s2s.files import write_text_atomically
    from asr_s2s.manifest import read_manifest

    lines = [utt.text + "\n" for manifest in args.manifest for utt in read_manifest(manifest)]
    write_text_atomically(args.out, "".join(lines))
    print(f"{args.out}: {len(lines)} transcripts from {len(args.manifest)} manifest(s)")
    return EXIT_OK


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the prepare, compute-cmvn, augment, tokens, lm-text commands."""
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

    _register_augment(sub, common)
    _register_text_commands(sub, common)


def _register_augment(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """augment: the fixed test conditions' audio."""
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


def _register_text_commands(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """tokens and lm-text: the token list and the LM text of training manifests."""
    p = sub.add_parser("tokens", parents=[common], help="write the token list of training manifests",
                       description="Write tokens.txt: <blank>, <sos/eos>, the built-in characters (A-Z, apostrophe, "
                                   "space) and any other character found in the normalised transcripts; print which "
                                   "built-in characters never occur.")
    p.add_argument("--manifest", required=True, nargs="+", metavar="FILE", help="training manifests")
    p.add_argument("--out", required=True, help="token list to write (one token per line)")
    p.set_defaults(func=cmd_tokens)

    p = sub.add_parser("lm-text", parents=[common], help="write the transcripts of manifests, one a line (LM training text)",
                       description="Write each utterance's transcript, as the manifest holds it (not normalised), on a "
                                   "line of its own, in manifest order: the text 'asr-s2s train-lm --text' reads, like "
                                   "ESPnet's lm_train.txt.")
    p.add_argument("--manifest", required=True, nargs="+", metavar="FILE", help="manifests, e.g. the training manifest")
    p.add_argument("--out", required=True, help="text file to write (one transcript per line)")
    p.set_defaults(func=cmd_lm_text)
