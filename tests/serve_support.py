"""A live ``asr-s2s serve`` for tests: uvicorn on 127.0.0.1 at a free port, in a thread of the test process,
built from a real ``asr-s2s serve`` command line by the command's own code (``build_app``)."""

from __future__ import annotations

import contextlib
import threading
import time
from dataclasses import dataclass

import requests

from asr_s2s.server.metrics import parse


@dataclass
class LiveServer:
    url: str  # http://127.0.0.1:PORT
    app: object

    @property
    def state(self):
        return self.app.state.server

    def metrics(self) -> dict[str, float]:
        response = requests.get(f"{self.url}/metrics", timeout=10)
        assert response.status_code == 200, response.text
        return parse(response.text)

    def wait_for(self, condition, what: str, timeout_s: float = 30.0) -> dict[str, float]:
        """Poll /metrics until ``condition(metrics)`` holds; returns those metrics."""
        deadline = time.monotonic() + timeout_s
        while True:
            values = self.metrics()
            if condition(values):
                return values
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out after {timeout_s} s waiting for {what}; metrics: {values}")
            time.sleep(0.02)


@contextlib.contextmanager
def live_server(*argv: str):
    """Run ``asr-s2s serve ARGV`` (without --host/--port) until the block ends."""
    import uvicorn

    from asr_s2s.cli.main import _merge_global_flags, build_parser
    from asr_s2s.cli.serve import bind, build_app

    args = build_parser().parse_args(["serve", *map(str, argv)])
    _merge_global_flags(args)
    sock = bind("127.0.0.1", 0)
    app = build_app(args)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=2))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="test-uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.01)
    try:
        yield LiveServer(f"http://127.0.0.1:{sock.getsockname()[1]}", app)
    finally:
        server.should_exit = True
        thread.join(15)
        sock.close()
        assert not thread.is_alive(), "the test server did not stop"
