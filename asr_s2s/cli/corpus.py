"""Corpus archives: ``download`` (resumed, checked) and ``extract`` (safely, and into a shared data folder)."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from asr_s2s.cli.options import EXIT_OK, EXIT_SOME_FAILED
from asr_s2s.errors import ConfigError

log = logging.getLogger("asr_s2s")


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """Add the download and extract commands."""
    _register_download(sub, common)
    _register_extract(sub, common)


def cmd_download(args) -> int:
    from asr_s2s.download import DownloadError, download, read_md5sums

    sums = read_md5sums(args.md5sums) if args.md5sums else None
    if sums is None:
        log.warning("no --md5sums: the downloads are not verified")
    elif missing := [name for name in args.files if name not in sums]:
        raise ConfigError(f"{args.md5sums}: no checksum for {', '.join(missing)}")
    failed = 0
    limits = {key: value for key, value in (("min_speed", args.min_speed), ("max_bytes", args.max_size))
              if value is not None}  # unset: download()'s defaults
    for name in args.files:
        url = f"{args.base_url.rstrip('/')}/{name}"
        try:
            got = download(url, Path(args.out_dir) / name, md5=sums[name] if sums else None, retries=args.retries,
                           retry_wait_s=args.retry_wait, timeout_s=args.timeout, progress=not args.quiet,
                           deadline_s=args.deadline, **limits)
        except DownloadError as exc:
            print(f"asr-s2s download: error: {exc}", file=sys.stderr)
            failed += 1
            continue
        log.info("%s: %s", got.path, "already there" if not got.fetched_bytes else
                 f"{got.fetched_bytes} bytes{' (resumed)' if got.resumed else ''}, checksum OK" if sums else "done")
        print(got.path)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def cmd_extract(args) -> int:
    from asr_s2s.archive import ArchiveError, extract_archive
    from asr_s2s.corpus_dir import SubsetError, install_subset
    from asr_s2s.download import read_md5sums

    name = Path(args.tarball).name
    md5 = None
    if args.md5sums:
        md5 = read_md5sums(args.md5sums).get(name)
        if md5 is None:
            raise ConfigError(f"{args.md5sums}: no checksum for {name}")
    if args.subset is None and (args.expected_utterances is not None or not args.keep_tarball):
        raise ConfigError("--expected-utterances and --keep-tarball false go with --subset")
    try:
        if args.subset is None:
            count = extract_archive(args.tarball, args.out_dir, md5=md5, verified_marker=args.verified_marker)
            log.info("%s: %d entries extracted into %s", args.tarball, count, args.out_dir)
            print(args.out_dir)
            return EXIT_OK
        got = install_subset(args.out_dir, args.subset, args.tarball, md5=md5, verified_marker=args.verified_marker,
                             expected_utterances=args.expected_utterances, keep_tarball=args.keep_tarball)
    except (ArchiveError, SubsetError) as exc:
        print(f"asr-s2s extract: error: {exc}", file=sys.stderr)
        return EXIT_SOME_FAILED
    how = {"marked": "already there, marked complete", "found": "found in place, checked and marked complete",
           "extracted": f"extracted from {name}"}[got.source]
    log.info("%s: %s utterances, %s", got.folder, f"{got.utterances:,}", how)
    print(got.folder)
    return EXIT_OK


def _register_download(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """download: corpus archives, resumed and checked."""
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
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before a transfer counts as broken, "
                   "and the window --min-speed is measured over (default: 60)")
    p.add_argument("--min-speed", type=float, metavar="BYTES_PER_S",
                   help="a transfer slower than this over --timeout counts as broken and is resumed; 0: no minimum "
                        "(default: 1024)")
    p.add_argument("--deadline", type=float, default=None, metavar="SECONDS",
                   help="give up on a file not done in this time, retries included (default: no limit)")
    p.add_argument("--max-size", type=_size, metavar="SIZE",
                   help="the most a file may weigh (500M, 40G, ...), whatever the server announces (default: 64G)")
    p.set_defaults(func=cmd_download)


def _size(text: str) -> int:
    from asr_s2s.download import parse_size

    try:
        return parse_size(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def _register_extract(sub: argparse._SubParsersAction, common: argparse.ArgumentParser) -> None:
    """extract: a downloaded tarball, safely."""
    p = sub.add_parser("extract", parents=[common], help="extract a downloaded tarball safely, checking its MD5",
                       description="Extract TARBALL into OUT_DIR as untrusted input: members with absolute paths, "
                                   "'..', links leading outside OUT_DIR, or device files are refused; the archive's "
                                   "owners are never applied, nor setuid/setgid bits or group/world write. With "
                                   "--md5sums the tarball is checked first, unless --verified-marker is at least as "
                                   "new as it. Prints OUT_DIR.",
                       epilog="Exit codes: 0 extracted (or, with --subset, found complete); 1 an incomplete "
                              "subset folder, a checksum mismatch, a refused member or a damaged "
                              "archive (the error names it); 2 bad usage or a missing checksum.")
    p.add_argument("tarball", metavar="TARBALL", help="e.g. data/dev-clean.tar.gz")
    p.add_argument("--out-dir", required=True, help="folder to extract into")
    p.add_argument("--md5sums", help="checksum file in md5sum format; TARBALL's name must be listed")
    p.add_argument("--subset", metavar="PATH",
                   help="the folder TARBALL holds, relative to OUT_DIR (e.g. LibriSpeech/dev-clean): used in place if "
                        "it is there and complete (TARBALL may then be missing), refused untouched if it is there "
                        "but incomplete, else extracted into a temporary folder in OUT_DIR, checked and moved into "
                        "place; OUT_DIR/PATH/.complete marks it. Prints OUT_DIR/PATH")
    p.add_argument("--expected-utterances", type=int, metavar="N",
                   help="with --subset: the number of utterances the complete subset has (e.g. 2703 for dev-clean)")
    p.add_argument("--keep-tarball", type=_yes_no, default=True, metavar="true|false",
                   help="with --subset: false deletes TARBALL once the subset is complete (default: true)")
    p.add_argument("--verified-marker", metavar="FILE",
                   help="a file touched after TARBALL's MD5 was last checked: if it is at least as new as TARBALL, "
                        "the MD5 is not computed again")
    p.set_defaults(func=cmd_extract)


def _yes_no(text: str) -> bool:
    if text.lower() in ("true", "yes", "1"):
        return True
    if text.lower() in ("false", "no", "0"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, not {text!r}")
