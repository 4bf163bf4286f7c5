"""asr_s2s.download against a hostile or broken mirror (issue 16): trickling bodies, endless bodies,
a full or read-only disk, and 5xx/429 answers. The server is tests/corpus_server.py's, with faults added."""

from __future__ import annotations

import errno
import time
from types import SimpleNamespace

import pytest

import asr_s2s.download as download_module
from asr_s2s.download import DownloadError, download
from corpus_server import CorpusServer, md5_hex

NAME = "dev-clean.tar.gz"
DATA = bytes(range(256)) * 40  # 10,240 bytes


class FaultyServer(CorpusServer):
    """CorpusServer with faults, per file name.

    ``answers[name]``: a list of ``(status, headers)`` sent (empty body) before the file is served.
    ``trickle[name]``: ``(bytes_per_write, seconds_between)``: the body drips (full Content-Length announced).
    ``endless[name]``: a body of that many bytes sent with no Content-Length (ended by closing).
    """

    def __init__(self, files: dict[str, bytes]) -> None:
        super().__init__(files)
        self.answers: dict[str, list[tuple[int, dict[str, str]]]] = {}
        self.trickle: dict[str, tuple[int, float]] = {}
        self.endless: dict[str, int] = {}
        server, base = self, self._server.RequestHandlerClass

        class Faulty(base):
            def do_GET(self) -> None:  # noqa: N802 - http.server's name
                name = self.path.rsplit("/", 1)[-1]
                if server.answers.get(name):
                    server.requests.append((name, self.headers.get("Range")))
                    status, headers = server.answers[name].pop(0)
                    self.send_response(status)
                    for key, value in {"Content-Length": "0", **headers}.items():
                        self.send_header(key, value)
                    self.end_headers()
                elif name in server.trickle or name in server.endless:
                    server.requests.append((name, self.headers.get("Range")))
                    self._drip(name)
                else:
                    super().do_GET()

            def _drip(self, name: str) -> None:
                step, pause = server.trickle.get(name, (1 << 16, 0.0))
                body = server.files[name] if name in server.trickle else b"\0" * server.endless[name]
                self.send_response(200)
                if name in server.trickle:
                    self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.close_connection = True
                try:
                    for start in range(0, len(body), step):
                        self.wfile.write(body[start:start + step])
                        self.wfile.flush()
                        time.sleep(pause)
                except OSError:  # the client hung up: that is the point
                    pass

        self._server.RequestHandlerClass = Faulty


@pytest.fixture
def server():
    with FaultyServer({NAME: DATA}) as srv:
        yield srv


@pytest.fixture
def sleeps(monkeypatch):
    """Back-off waits are recorded, not slept (the server never sleeps in these tests)."""
    waited: list[float] = []
    monkeypatch.setattr(time, "sleep", waited.append)
    return waited


def _get(server, dest, **kw):
    kw = {"retry_wait_s": 0.0, "timeout_s": 5, "progress": False, **kw}
    return download(f"{server.url}/{NAME}", dest, md5=md5_hex(DATA), **kw)


# -- 1. a trickling server ------------------------------------------------------------------
def test_a_trickling_server_is_cut_off_by_the_minimum_speed(server, tmp_path):
    server.trickle[NAME] = (20, 0.1)  # 200 B/s: each read is quick, so the socket timeout never fires
    started = time.monotonic()
    with pytest.raises(DownloadError, match=rf"{NAME}: the transfer from .* broke off 1 time \(only \d+ bytes "
                                            r"in the last 0.5 s, below the minimum speed of 1000 bytes/s\)"):
        _get(server, tmp_path / NAME, timeout_s=0.5, min_speed=1000, retries=0)
    assert time.monotonic() - started < 2.5
    assert not (tmp_path / NAME).exists()


def test_a_trickling_server_is_cut_off_by_the_overall_deadline(server, tmp_path):
    server.trickle[NAME] = (50, 0.05)  # 1,000 B/s: fast enough for min_speed, too slow for the deadline
    started = time.monotonic()
    with pytest.raises(DownloadError, match=rf"{NAME}: the download from .* did not finish within the 0.6 s "
                                            r"deadline; \d+ bytes are kept in .*\.part and the next run resumes"):
        _get(server, tmp_path / NAME, deadline_s=0.6, min_speed=10, retries=3)
    assert time.monotonic() - started < 2.5
    assert len(server.requests) == 1, "a deadline is not retried"


# -- 2. size caps ------------------------------------------------------------------------------
def test_an_endless_body_stops_at_the_size_cap_and_is_deleted(server, tmp_path):
    server.endless[NAME] = 30 << 20  # 30 MB with no Content-Length
    with pytest.raises(DownloadError, match=rf"{NAME}: .* sent more than the 100000-byte cap \(--max-size\) "
                                            r"with no size announced; the download was deleted"):
        _get(server, tmp_path / NAME, max_bytes=100_000, retries=2)
    assert not (tmp_path / f"{NAME}.part").exists() and len(server.requests) == 1


def test_an_announced_size_over_the_cap_is_refused_before_any_byte(server, tmp_path):
    with pytest.raises(DownloadError, match=rf"{NAME}: .* announces {len(DATA)} bytes, more than the "
                                            rf"{len(DATA) - 1}-byte cap \(--max-size\); nothing was written"):
        _get(server, tmp_path / NAME, max_bytes=len(DATA) - 1)
    assert not (tmp_path / f"{NAME}.part").exists()


def test_a_size_over_the_free_disk_space_is_refused_at_once(server, tmp_path, monkeypatch):
    import shutil

    monkeypatch.setattr(shutil, "disk_usage", lambda path: SimpleNamespace(total=1 << 30, used=1 << 30, free=1000))
    with pytest.raises(DownloadError, match=rf"{NAME}: {len(DATA)} more bytes are needed but only 1000 are free"):
        _get(server, tmp_path / NAME)
    assert len(server.requests) == 1


# -- 3. disk errors ------------------------------------------------------------------------------
class _FullDisk:
    def __init__(self, *args, **kw) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def write(self, block) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    def close(self) -> None:
        pass


def test_a_full_disk_is_reported_at_once_naming_the_file(server, tmp_path, monkeypatch):
    monkeypatch.setattr(download_module, "open", _FullDisk, raising=False)
    part = tmp_path / f"{NAME}.part"
    with pytest.raises(DownloadError, match=rf"{part}: cannot write the download: No space left on device"):
        _get(server, tmp_path / NAME, retries=3)
    assert len(server.requests) == 1, "a disk error is not retried"


@pytest.mark.parametrize("code", [errno.EACCES, errno.EROFS])
def test_an_unwritable_output_is_reported_at_once_naming_the_file(server, tmp_path, monkeypatch, code):
    def refuse(path, *args, **kw):
        raise OSError(code, __import__("os").strerror(code), str(path))

    monkeypatch.setattr(download_module, "open", refuse, raising=False)
    with pytest.raises(DownloadError, match=rf"{tmp_path / NAME}.part: cannot write the download: "):
        _get(server, tmp_path / NAME, retries=3)
    assert len(server.requests) == 1


def test_a_real_full_disk_is_not_retried(server, tmp_path):
    """/dev/full answers every write with ENOSPC."""
    if not __import__("os").path.exists("/dev/full"):
        pytest.skip("no /dev/full")
    (tmp_path / f"{NAME}.part").symlink_to("/dev/full")
    with pytest.raises(DownloadError, match="No space left on device"):
        _get(server, tmp_path / NAME, retries=3)
    assert len(server.requests) == 1


# -- 4. 5xx and 429 ---------------------------------------------------------------------------------
def test_5xx_is_retried_with_exponential_back_off(server, tmp_path, sleeps):
    server.answers[NAME] = [(503, {}), (502, {}), (500, {})]
    got = _get(server, tmp_path / NAME, retry_wait_s=0.5, retries=3)
    assert got.path.read_bytes() == DATA and len(server.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]


def test_429_and_503_honour_retry_after_capped(server, tmp_path, sleeps):
    server.answers[NAME] = [(429, {"Retry-After": "7"}), (503, {"Retry-After": "86400"})]
    got = _get(server, tmp_path / NAME, retry_wait_s=0.5, max_retry_wait_s=60, retries=3)
    assert got.path.read_bytes() == DATA
    assert sleeps == [7.0, 60.0]


def test_retry_after_as_an_http_date(server, tmp_path, sleeps):
    from email.utils import formatdate

    server.answers[NAME] = [(503, {"Retry-After": formatdate(time.time() + 30, usegmt=True)})]
    _get(server, tmp_path / NAME, retry_wait_s=0.5, retries=3)
    assert len(sleeps) == 1 and 25 <= sleeps[0] <= 31


def test_a_server_that_stays_unavailable_gives_up_with_its_status(server, tmp_path, sleeps):
    server.answers[NAME] = [(503, {"Retry-After": "1"})] * 3
    with pytest.raises(DownloadError, match=rf"{NAME}: .* answered HTTP 503 .* 3 times; the server is busy or "
                                            r"down: try again later or use another mirror"):
        _get(server, tmp_path / NAME, retries=2)
    assert len(server.requests) == 3


@pytest.mark.parametrize("status", [400, 403, 404, 410])
def test_4xx_other_than_429_fails_at_once(server, tmp_path, sleeps, status):
    server.answers[NAME] = [(status, {})]
    with pytest.raises(DownloadError, match=rf"{NAME}: .* answered HTTP {status}"):
        _get(server, tmp_path / NAME, retries=3)
    assert len(server.requests) == 1 and sleeps == []


# -- the command's flags ------------------------------------------------------------------------------
def test_cli_size_cap_and_deadline_flags(run_cli, server, tmp_path):
    code, out, err = run_cli("download", "--base-url", server.url, "--out-dir", tmp_path, "--max-size", "1K",
                             "--retry-wait", "0", "-q", NAME)
    assert code == 1 and out == "" and "announces 10240 bytes, more than the 1024-byte cap (--max-size)" in err
    server.trickle[NAME] = (50, 0.05)
    code, _, err = run_cli("download", "--base-url", server.url, "--out-dir", tmp_path, "--deadline", "0.3",
                           "--min-speed", "0", "--retry-wait", "0", "-q", NAME)
    assert code == 1 and "did not finish within the 0.3 s deadline" in err
    code, _, err = run_cli("download", "--base-url", server.url, "--out-dir", tmp_path, "--max-size", "lots", NAME)
    assert code == 2 and "expected a size such as 500M or 40G, got 'lots'" in err


def test_parse_size():
    from asr_s2s.download import parse_size

    assert [parse_size(t) for t in ("123", "1K", "500M", "40G", "1.5TiB", "2gb")] == [
        123, 1024, 500 << 20, 40 << 30, int(1.5 * (1 << 40)), 2 << 30]
