"""``asr-s2s evaluate``: decode a test set, score it and write hypotheses and alignments."""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from asr_s2s.cli.options import EXIT_OK, EXIT_SOME_FAILED, check_output_dir, decode_overrides, registry_from, set_threads

log = logging.getLogger("asr_s2s")


def _load(args):
    from asr_s2s.package import load_package
    from asr_s2s.recognizer import Recognizer

    set_threads(args)
    registry = registry_from(args)
    model, config = load_package(args.model, registry)
    decode = config.decode.with_overrides(**decode_overrides(args, registry))
    return Recognizer(model, decode, registry, device=args.device)


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

    check_output_dir(args.output_dir, "--output-dir")
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
    return _score(utterances, results, set_name, args)


def _score(utterances, results, set_name: str, args) -> int:
    """Score every utterance, writing hyp.trn, alignments.txt and results.json; an utterance
    that could not be decoded has the empty hypothesis, so its reference words are all deletions."""
    from asr_s2s.metrics import error_rates, format_table

    failed = [(u, r) for u, r in zip(utterances, results) if r.error is not None]
    for _, r in failed:
        log.error("failed %s: %s", r.id, r.error)
    note = _failure_note(failed, len(utterances))
    if note:
        ids = " ".join(u.id for u, _ in failed[:20]) + (" ..." if len(failed) > 20 else "")
        log.warning("not decoded: %s; %s", ids, note)
    if len(failed) == len(utterances):
        log.error("no utterance could be decoded")
    hyps = [_hypothesis(r) for r in results]
    rates = error_rates([u.text for u in utterances], hyps)
    summary = {"set": set_name, **rates.as_dict(), "failed": len(failed)}
    out_dir = Path(args.output_dir or f"decode_{set_name}")
    _write_outputs(out_dir, utterances, results, summary)
    log.info("per-utterance hypotheses and alignments in %s", out_dir)
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_table([(set_name, rates)]) + (f"\n\n{note}" if note else ""))
    return EXIT_SOME_FAILED if failed else EXIT_OK


def _hypothesis(result) -> str:
    return "" if result.error is not None else result.text


def _failure_note(failed, total: int) -> str:
    """What the summary says of utterances that could not be decoded ("" if none)."""
    from asr_s2s.metrics import scoring_text

    if not failed:
        return ""
    words = sum(len(scoring_text(u.text).split()) for u, _ in failed)
    return (f"{len(failed)} of {total} utterances failed to decode and are scored as empty hypotheses: "
            f"their {words} reference words count as deletions")


def _write_outputs(out_dir: Path, utterances, results, summary: dict) -> None:
    """hyp.trn, alignments.txt, then results.json, each written whole (temporary file and rename)."""
    from asr_s2s.files import write_text_atomically
    from asr_s2s.metrics import alignment_text

    hyp_lines, alignments = [], []
    for u, r in zip(utterances, results):
        hyp_lines.append(f"{_hypothesis(r)} ({u.id})\n")
        failure = "" if r.error is None else f"NOT DECODED: {r.error.splitlines()[0] if r.error else ''}\n"
        alignments.append(alignment_text(u.id, u.text, _hypothesis(r)) + failure + "\n")
    write_text_atomically(out_dir / "hyp.trn", "".join(hyp_lines))
    write_text_atomically(out_dir / "alignments.txt", "".join(alignments))
    write_text_atomically(out_dir / "results.json", json.dumps(summary, indent=2) + "\n")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, decode: argparse.ArgumentParser) -> None:
    """Add the evaluate command."""
    p = sub.add_parser("evaluate", parents=[common, decode], help="decode a test set and print WER/CER",
                       description="Decode a manifest or LibriSpeech-layout folder, score with jiwer against "
                                   "the references as written (both sides upper-cased, whitespace collapsed; "
                                   "an utterance that fails to decode counts as all deletions), "
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
