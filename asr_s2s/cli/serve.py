"""``asr-s2s serve``: the OpenAI-compatible transcription server (:mod:`asr_s2s.server`) on uvicorn."""

from __future__ import annotations

import argparse
import logging
import os
import socket

from asr_s2s.cli.options import EXIT_OK, add_segmentation_flags, decode_overrides, set_threads
from asr_s2s.errors import ConfigError

log = logging.getLogger("asr_s2s")
API_KEY_ENV = "ASR_S2S_API_KEY"


def build_app(args):
    """The app ``args`` describe: the model loaded once, the decode options, the limits."""
    from asr_s2s.server import ServerSettings, require_server_packages

    require_server_packages()
    from asr_s2s.server.app import create_app
    from asr_s2s.server.batcher import warm_up
    from asr_s2s.transcriber import load_model

    settings = ServerSettings(
        max_upload_bytes=int(args.max_upload_mb * 1024 * 1024), max_duration_s=args.max_duration_s,
        queue_size=args.queue_size, batch_wait_s=args.batch_wait_ms / 1000, max_batch_files=args.max_batch_files,
        api_key=args.api_key, upload_dir=args.upload_dir,
    )
    set_threads(args)
    transcriber = load_model(args.model, device=args.device, disable_plugins=args.disable_plugin)
    options = transcriber.options.with_overrides(
        **decode_overrides(args, transcriber.registry), max_segment_s=args.max_segment_s,
        min_pause_s=args.min_pause_s, word_timestamps=args.word_timestamps,
    )
    warm_up(transcriber, options)
    return create_app(transcriber, options, settings)


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port``. :raises ConfigError: saying why it cannot be had."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ConfigError(f"--host {host}: not an address of this machine ({exc.strerror})") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise ConfigError(f"cannot listen on {host}:{port} ({exc.strerror}); choose another --port or --host") from None
    sock.set_inheritable(True)
    return sock


def cmd_serve(args) -> int:
    import uvicorn

    from asr_s2s.server import require_server_packages

    require_server_packages()
    for flag, value in (("--max-upload-mb", args.max_upload_mb), ("--max-duration-s", args.max_duration_s),
                        ("--queue-size", args.queue_size), ("--max-batch-files", args.max_batch_files)):
        if not value > 0:
            raise ConfigError(f"{flag} must be positive, got {value:g}")
    if args.upload_dir is not None and not os.path.isdir(args.upload_dir):
        raise ConfigError(f"--upload-dir {args.upload_dir}: no such folder")
    if args.batch_wait_ms < 0:
        raise ConfigError(f"--batch-wait-ms must be 0 or more, got {args.batch_wait_ms:g}")
    sock = bind(args.host, args.port)
    app = build_app(args)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    if args.api_key is None and host not in ("127.0.0.1", "::1", "localhost"):
        log.warning("listening on %s without an API key: anyone who can reach this port can use it "
                    "(give --api-key or %s)", host, API_KEY_ENV)
    log.info("serving %s at http://%s:%d/ (OpenAI API: /v1/audio/transcriptions; Ctrl-C stops)",
             app.state.server.model_id, shown, port)
    level = "debug" if args.verbose else "warning" if args.quiet else "info"
    config = uvicorn.Config(app, log_level=level, access_log=not args.quiet, timeout_graceful_shutdown=5)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    except KeyboardInterrupt:  # uvicorn stopped gracefully on Ctrl-C, then raised it again: stopping is the normal end
        pass
    return EXIT_OK


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None


def register(sub: argparse._SubParsersAction, common: argparse.ArgumentParser, decode: argparse.ArgumentParser) -> None:
    """Add the serve command."""
    from asr_s2s.server import INSTALL_HINT, ServerSettings
    defaults = ServerSettings()
    p = sub.add_parser(
        "serve", parents=[common, decode], help="serve transcription over HTTP (OpenAI's audio API, a page)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=(
            "Serve the model over HTTP: OpenAI's POST /v1/audio/transcriptions (multipart: file, model,\n"
            "response_format json|text|srt|vtt|verbose_json, timestamp_granularities[] segment|word,\n"
            "language en, prompt and temperature accepted and ignored, stream=true for server-sent events;\n"
            "extra fields beam_size, scorer=NAME=WEIGHT, hotword, max_length_ratio, min_length_ratio,\n"
            "length_normalize, end_margin, pre_beam_ratio, eos_threshold), GET /v1/models, /health,\n"
            "/metrics (Prometheus) and a page at / to try it. The model is loaded once; requests that wait\n"
            "together are decoded together on one decoding thread. The decode flags set the server's defaults.\n"
            "Needs the 'serve' extra (starlette, uvicorn, python-multipart):\n  " + INSTALL_HINT.replace(" (", "\n  (")
        ),
        epilog=(
            "Statuses: 400 bad field or unreadable audio (the message transcribe prints for the file);\n"
            "401 missing or wrong API key; 413 upload over --max-upload-mb or audio over --max-duration-s;\n"
            "503 with Retry-After when --queue-size requests already wait. Errors are OpenAI's\n"
            '{"error": {"message", "type", "param", "code"}}.\n'
            "Ctrl-C (SIGINT) or SIGTERM stops it: no new requests, up to 5 s for those in flight, then they are cancelled.\n"
            "Exit codes: 0 stopped by Ctrl-C; 2 bad options or model, or the address is taken."
        ),
    )
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, default=8000, help="port to listen on (default: 8000; 0 picks a free one)")
    p.add_argument("--api-key", default=os.environ.get(API_KEY_ENV) or None, metavar="KEY",
                   help=f"require 'Authorization: Bearer KEY' on /v1/ (default: ${API_KEY_ENV}, else none)")
    p.add_argument("--max-upload-mb", type=_number, default=defaults.max_upload_bytes / 2**20, metavar="MB",
                   help="largest audio file accepted; larger: 413 (default: %(default)g)")
    p.add_argument("--max-duration-s", type=_number, default=defaults.max_duration_s, metavar="S",
                   help="longest audio accepted, decoded; longer: 413 (default: %(default)g)")
    p.add_argument("--queue-size", type=int, default=defaults.queue_size, metavar="N",
                   help="requests that may wait for the decoder (uploading or queued); more: 503 with Retry-After "
                        "(default: %(default)d)")
    p.add_argument("--batch-wait-ms", type=_number, default=defaults.batch_wait_s * 1000, metavar="MS",
                   help="how long the decoder waits for more requests to decode together (default: %(default)g)")
    p.add_argument("--max-batch-files", type=int, default=defaults.max_batch_files, metavar="N",
                   help="most requests decoded together in one round (default: %(default)d)")
    p.add_argument("--upload-dir", metavar="DIR",
                   help="where each request's temporary folder (its upload) is made and removed (default: the "
                        "system's temporary folder, $TMPDIR)")
    add_segmentation_flags(p)
    p.set_defaults(func=cmd_serve)
