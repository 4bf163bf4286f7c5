"""``asr-s2s transcribe``: input discovery (files, folders, globs, stdin), options, outputs."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import BinaryIO

from asr_s2s.cli.options import (
    EXIT_OK, EXIT_SOME_FAILED, check_output_dir, decode_overrides, set_threads,
)
from asr_s2s.errors import ConfigError
from asr_s2s.files import write_text_atomically

log = logging.getLogger("asr_s2s")


@dataclasses.dataclass(frozen=True)
class _Job:
    """One input of ``transcribe``: what to read, and its output path under --output-dir without the suffix."""

    source: str | BinaryIO  # a path, or stdin's binary stream (read as it is transcribed)
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
            jobs.append(_Job(sys.stdin.buffer, "-", "stdin"))
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


def _known_duration_s(jobs: list[_Job]) -> float | None:
    """Total audio seconds from the file headers, or None when a header cannot tell (or stdin is one input)."""
    import soundfile

    total = 0.0
    for job in jobs:
        if not isinstance(job.source, str):
            return None
        try:
            total += soundfile.info(job.source).duration
        except Exception:  # noqa: BLE001 - a file libsndfile cannot open: its length is unknown until decoded
            return None
    return total


def _plot_segments(result, plot_dir: Path, out_name: str) -> None:
    from asr_s2s.plotting import plot_attention

    for segment in result.segments:
        if segment.attention is None or segment.attention.size == 0:
            continue
        path = plot_dir / f"{out_name}.{segment.id:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        title = f"{Path(result.source).name} {segment.start:.2f}-{segment.end:.2f} s"
        plot_attention(segment.attention, path, title=title, labels=segment.text)


def _emit(result, job: _Job, out_dir: Path | None, fmt: str, bar) -> None:
    """Write one transcription to its file under ``out_dir``, or print it above the progress bar."""
    from asr_s2s.formats import format_transcription, to_json

    if out_dir is not None:
        write_text_atomically(out_dir / f"{job.out_name}.{fmt}", format_transcription(result, fmt))
    elif fmt == "txt":
        bar.write(f"{job.name}\t{result.text}", file=sys.stdout)
    elif fmt == "json":
        bar.write(to_json(result, indent=None).rstrip("\n"), file=sys.stdout)
    else:
        bar.write(format_transcription(result, fmt).rstrip("\n") + "\n", file=sys.stdout)


def _planned(jobs: list[_Job], out_dir: Path | None, args) -> list[_Job]:
    """The jobs to run: refuse two inputs writing one output file, or several srt/vtt/tsv documents on stdout;
    drop those whose output exists with --skip-existing."""
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
    return jobs


def cmd_transcribe(args) -> int:
    from asr_s2s.progress import progress_bar
    from asr_s2s.transcriber import AudioInput, load_model

    if args.skip_existing and not args.output_dir:
        raise ConfigError("--skip-existing needs --output-dir (it skips inputs whose output file exists)")
    check_output_dir(args.output_dir, "--output-dir")
    check_output_dir(args.plot_attention, "--plot-attention")
    set_threads(args)
    transcriber = load_model(args.model, device=args.device, disable_plugins=args.disable_plugin)
    options = transcriber.options.with_overrides(
        **decode_overrides(args, transcriber.registry), max_segment_s=args.max_segment_s, min_pause_s=args.min_pause_s,
        word_timestamps=args.word_timestamps, attention=bool(args.plot_attention),
    )
    jobs, problems = _expand_inputs(args.inputs)
    for problem in problems:
        log.error("%s", problem)
    out_dir = Path(args.output_dir) if args.output_dir else None
    jobs = _planned(jobs, out_dir, args)
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
                _emit(result, job, out_dir, args.format, bar)
                if args.plot_attention:
                    _plot_segments(result, Path(args.plot_attention), job.out_name)
            else:
                failed += 1
                log.error("%s", outcome.error)
            sys.stdout.flush()
    if failed:
        log.error("%d of %d input(s) failed", failed, len(jobs) + len(problems))
    return EXIT_SOME_FAILED if failed else EXIT_OK


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, decode: argparse.ArgumentParser) -> None:
    """Add the transcribe command."""
    from asr_s2s.vad import MAX_SEGMENT_S, MIN_PAUSE_S

    p = sub.add_parser(
        "transcribe", parents=[common, decode], help="transcribe audio files of any length",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Transcribe audio files, directories (recursively) and globs: wav, flac, mp3, ogg, and m4a/aac\n"
            "through ffmpeg, at any sample rate and channel count; '-' streams stdin (any of these formats).\n"
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
