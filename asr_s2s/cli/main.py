"""The ``asr-s2s`` parser, built from each command's module, and ``main``."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from asr_s2s import __version__
from asr_s2s.cli import average, corpus, data, evaluate, lm, plugins, results, serve, train, transcribe
from asr_s2s.cli.options import EXIT_BAD_INPUT, EXIT_BROKEN_PIPE, check_device, decode_parser
from asr_s2s.errors import AsrS2SError

log = logging.getLogger("asr_s2s")


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

    for module in (plugins, corpus, data, train, lm, average, results):
        module.register(sub, common)
    decode = decode_parser(model_decode)
    evaluate.register(sub, common, decode)
    transcribe.register(sub, common, decode)
    serve.register(sub, common, decode)
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
