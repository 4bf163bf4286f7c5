"""Test helpers: LibriSpeech-layout tarballs built from the fixture corpus, and a local HTTP server.

The server listens on 127.0.0.1 only, serves in-memory files, honours
``Range: bytes=N-`` (unless told not to), can cut chosen responses short to
play a dropped connection, and records every request.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import re
import tarfile
import threading
from collections.abc import Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

FIXTURE_DIR = Path(__file__).resolve().parents[1] / "data" / "fixtures" / "LibriSpeech" / "test-fixture"


def librispeech_tarball(subset: str, speakers: Iterable[str] | None = None) -> bytes:
    """A ``.tar.gz`` in LibriSpeech's layout (``LibriSpeech/SUBSET/spk/chapter/...``) of fixture speakers."""
    wanted = set(speakers) if speakers is not None else None
    buffer = io.BytesIO()
    with gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as tar:
        def add(name: str, data: bytes) -> None:
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), 0, 0o644
            tar.addfile(info, io.BytesIO(data))

        add("LibriSpeech/README.TXT", b"LibriSpeech-layout test fixture\n")
        for path in sorted(FIXTURE_DIR.rglob("*")):
            if path.is_file() and (wanted is None or path.relative_to(FIXTURE_DIR).parts[0] in wanted):
                add(f"LibriSpeech/{subset}/{path.relative_to(FIXTURE_DIR).as_posix()}", path.read_bytes())
    return buffer.getvalue()


def md5_hex(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # noqa: S324 - test checksum


class CorpusServer:
    """Serves ``files`` (name -> bytes) at ``url/NAME`` on 127.0.0.1 (any path ending in NAME).

    ``cut[name]`` is a list of body sizes: the next requests of ``name`` send
    only that many body bytes (after announcing the full Content-Length), then
    the connection closes. ``ignore_range`` answers every request with 200.
    ``requests`` records ``(name, range_header)``.
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        self.files = dict(files)
        self.cut: dict[str, list[int]] = {}
        self.ignore_range = False
        self.requests: list[tuple[str, str | None]] = []
        self.body_bytes_sent = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                name = self.path.split("?", 1)[0].rsplit("/", 1)[-1]
                range_header = self.headers.get("Range")
                server.requests.append((name, range_header))
                data = server.files.get(name)
                if data is None:
                    self.send_error(404, "Not Found")
                    return
                start, status = 0, 200
                match = re.fullmatch(r"bytes=(\d+)-", range_header or "")
                if match and not server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_response(416)
                        self.send_header("Content-Range", f"bytes */{len(data)}")
                        self.send_header("Content-Length", "0")
                        self.end_headers()
                        return
                    status = 206
                body = data[start:]
                self.send_response(status)
                self.send_header("Content-Type", "application/gzip")
                self.send_header("Content-Length", str(len(body)))
                self.send_header("Accept-Ranges", "bytes")
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                plan = server.cut.get(name)
                if plan:
                    body = body[: plan.pop(0)]
                    self.close_connection = True
                server.body_bytes_sent += len(body)  # counted first: the client may finish before write() returns
                self.wfile.write(body)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/resources/12"

    def __enter__(self) -> CorpusServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
