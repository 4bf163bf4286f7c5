"""``asr-s2s transcribe``: input discovery (files, folders, globs, stdin), options, outputs; under torchrun,
each rank transcribes a share of the inputs."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
from pathlib import Path
from typing import BinaryIO

from asr_s2s.cli.options import (
    EXIT_OK, EXIT_SOME_FAILED, add_segmentation_flags, check_output_dir, decode_overrides, set_threads,
)
from asr_s2s.errors import AsrS2SError, ConfigError
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


def _stdout_text(result, job: _Job, fmt: str) -> str:
    """What stdout shows of one transcription (a newline follows it)."""
    from asr_s2s.formats import format_transcription, to_json

    if fmt == "txt":
        return f"{job.name}\t{result.text}"
    if fmt == "json":
        return to_json(result, indent=None).rstrip("\n")
    return format_transcription(result, fmt).rstrip("\n") + "\n"


def _emit(result, job: _Job, out_dir: Path | None, fmt: str, bar) -> str | None:
    """Write one transcription to its file under ``out_dir`` (returns None), or return what stdout is to show,
    printed above the progress bar unless ``bar`` is None (under torchrun rank 0 prints it later, in order)."""
    from asr_s2s.formats import format_transcription

    if out_dir is not None:
        write_text_atomically(out_dir / f"{job.out_name}.{fmt}", format_transcription(result, fmt))
        return None
    text = _stdout_text(result, job, fmt)
    if bar is not None:
        bar.write(text, file=sys.stdout)
    return text


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


def _plan(args, out_dir: Path | None) -> tuple[list[_Job], int]:
    """The jobs to run (:func:`_planned`), each pattern that named nothing logged; and how many did."""
    jobs, problems = _expand_inputs(args.inputs)
    for problem in problems:
        log.error("%s", problem)
    return _planned(jobs, out_dir, args), len(problems)


def _load(args):
    """The transcriber of ``--model`` and the transcription options the command line gives."""
    from asr_s2s.transcriber import load_model

    set_threads(args)
    transcriber = load_model(args.model, device=args.device, disable_plugins=args.disable_plugin)
    options = transcriber.options.with_overrides(
        **decode_overrides(args, transcriber.registry), max_segment_s=args.max_segment_s, min_pause_s=args.min_pause_s,
        word_timestamps=args.word_timestamps, attention=bool(args.plot_attention),
    )
    return transcriber, options


def _transcribe(transcriber, options, jobs: list[_Job], out_dir: Path | None, args, hold: bool = False,
                show: bool = True, desc: str = "transcribing") -> tuple[int, list[str | None]]:
    """Transcribe ``jobs``, writing each output under ``out_dir`` or printing it as it comes.

    :param hold: return what stdout is to show instead of printing it (under torchrun rank 0 prints every
        rank's, in input order).
    :param show: show the progress bar (unless ``--quiet``).
    :returns: how many inputs failed, and with ``hold`` the stdout text of each job (None: failed or written).
    """
    from asr_s2s.progress import progress_bar
    from asr_s2s.transcriber import AudioInput

    inputs = [AudioInput(job.name, job.source) for job in jobs]
    show = show and not args.quiet
    total_s = _known_duration_s(jobs) if show else None
    of_total = "?" if total_s is None else "{total:.0f}"
    failed, held = 0, []
    with progress_bar(total=total_s, unit="s", desc=desc, disable=not show,
                      bar_format="{l_bar}{bar}| {n:.0f}/" + of_total + " audio s [{elapsed}<{remaining}]") as bar:
        results = transcriber.transcribe_many(inputs, options, progress=bar.update, num_workers=args.num_workers)
        for job, outcome in zip(jobs, results):
            text = None
            if outcome.ok:
                text = _emit(outcome.transcription, job, out_dir, args.format, None if hold else bar)
                if args.plot_attention:
                    _plot_segments(outcome.transcription, Path(args.plot_attention), job.out_name)
            else:
                failed += 1
                log.error("%s", outcome.error)
            if hold:
                held.append(text)
            sys.stdout.flush()
    return failed, held


def _transcribe_shared(transcriber, options, out_dir: Path | None, args, dist_info) -> tuple[int, int]:
    """Under torchrun: rank 0 finds the inputs and drops those --skip-existing skips, for every rank at once
    (so that all agree, whatever the others write meanwhile); rank r transcribes remaining inputs r, r + N,
    r + 2N, ... of N and writes their outputs; without --output-dir rank 0 prints every rank's in input order.

    :returns: how many inputs failed on any rank (patterns that named nothing included), of how many.
    """
    from asr_s2s import distributed

    planned = distributed.on_main(lambda: _plan(args, out_dir), lambda error: ConfigError(
        f"rank 0 stopped before transcribing, so every rank stops ({error})"))
    jobs, problems = distributed.all_gather_objects(planned)[0]
    rank, world = dist_info.rank, dist_info.world_size
    if dist_info.is_main:
        log.info("transcribing %d input(s) on %d processes (rank r: inputs r, r + %d, ...)", len(jobs), world, world)
    outcomes = distributed.gather_or_fail(
        lambda: _transcribe(transcriber, options, jobs[rank::world], out_dir, args, hold=out_dir is None,
                            show=dist_info.is_main, desc=f"transcribing (rank 0 of {world})"),
        lambda other, error: AsrS2SError(f"rank {other} stopped ({error}), so every rank stops"),
        catch=(AsrS2SError, OSError),
    )
    distributed.cleanup()
    if dist_info.is_main and out_dir is None:
        for i in range(len(jobs)):
            text = outcomes[i % world][1][i // world]
            if text is not None:
                print(text, file=sys.stdout, flush=True)
    return problems + sum(failed for failed, _ in outcomes), problems + len(jobs)


def cmd_transcribe(args) -> int:
    from asr_s2s import distributed

    if args.skip_existing and not args.output_dir:
        raise ConfigError("--skip-existing needs --output-dir (it skips inputs whose output file exists)")
    check_output_dir(args.output_dir, "--output-dir")
    check_output_dir(args.plot_attention, "--plot-attention")
    dist_info = distributed.init_from_env(args.device)  # under torchrun: each rank transcribes a share
    if dist_info.world_size > 1 and "-" in args.inputs:
        raise ConfigError("'-' (stdin) cannot be split across torchrun processes: save the audio to a file, "
                          "or transcribe stdin without torchrun")
    args.device = dist_info.device
    transcriber, options = _load(args)
    out_dir = Path(args.output_dir) if args.output_dir else None
    if dist_info.world_size > 1:
        failed, total = _transcribe_shared(transcriber, options, out_dir, args, dist_info)
    else:
        jobs, problems = _plan(args, out_dir)
        failed, _ = _transcribe(transcriber, options, jobs, out_dir, args)
        failed, total = failed + problems, len(jobs) + problems
    if not dist_info.is_main:
        # rank 0 gives the exit status of the whole run, as evaluate's does: a rank that exited 1 first would
        # have torchrun stop rank 0 (SIGTERM) while it still prints the outputs
        return EXIT_OK
    if failed:
        log.error("%d of %d input(s) failed", failed, total)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, decode: argparse.ArgumentParser) -> None:
    """Add the transcribe command."""
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
            "Under 'torchrun --nproc_per_node=N --no-python asr-s2s transcribe ...' (one process per GPU with\n"
            "--device cuda) the inputs are split: --skip-existing drops the finished ones first, then each\n"
            "process transcribes every N-th remaining input and writes its outputs; without --output-dir\n"
            "rank 0 prints them all at the end, in input order. '-' (stdin) cannot be split.\n"
            "Exit codes: 0 all transcribed; 1 some inputs failed (under torchrun: on any process, rank 0 exits 1);\n"
            "2 bad usage, options or model."
        ),
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="audio file, directory, glob (quote it), or - for stdin")
    p.add_argument("--format", choices=["txt", "json", "srt", "vtt", "tsv"], default="txt", help="output format (default: txt)")
    p.add_argument("--output-dir", metavar="DIR", help="write one file per input, DIR/NAME.FORMAT, instead of printing")
    p.add_argument("--skip-existing", action="store_true", help="skip inputs whose output file exists (with --output-dir)")
    add_segmentation_flags(p)
    p.add_argument("--plot-attention", metavar="DIR", help="write a PNG of the attention alignment of each segment to DIR")
    p.add_argument("--num-workers", type=int, default=0, metavar="N",
                   help="threads that read and resample the next N inputs while the model decodes (each held whole "
                        "in memory); 0 streams each input in turn (default: 0)")
    p.set_defaults(func=cmd_transcribe)
