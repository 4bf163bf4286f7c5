"""The ``asr-s2s serve`` command itself: its checks before it starts, and the real console command serving
until Ctrl-C."""

from __future__ import annotations

import importlib.util
import re
import signal
import socket
import subprocess
import sys
import time

import pytest
import requests


def test_serve_says_how_to_install_its_extra_when_it_is_missing(run_cli, random_package, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "uvicorn" else real(name, *a))
    code, _, err = run_cli("serve", "--model", random_package)
    assert code == 2
    assert "'asr-s2s serve' needs uvicorn, which is not installed: pip install 'asr-s2s[serve]'" in err
    assert "tools/setup.sh --dev" in err


@pytest.mark.parametrize("args, message", [
    (["--queue-size", "0"], "--queue-size must be positive, got 0"),
    (["--max-upload-mb", "-1"], "--max-upload-mb must be positive, got -1"),
    (["--batch-wait-ms", "-5"], "--batch-wait-ms must be 0 or more, got -5"),
    (["--upload-dir", "/no/such/folder"], "--upload-dir /no/such/folder: no such folder"),
    (["--host", "no-such-host.invalid"], "--host no-such-host.invalid: not an address of this machine"),
], ids=["queue-size", "upload-size", "batch-wait", "upload-dir", "host"])
def test_bad_options_exit_2_before_anything_starts(run_cli, random_package, args, message):
    code, _, err = run_cli("serve", "--model", random_package, *args)
    assert code == 2 and message in err, err


def test_a_taken_port_exits_2_naming_it(run_cli, random_package):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        code, _, err = run_cli("serve", "--model", random_package, "--port", port)
    assert code == 2 and f"cannot listen on 127.0.0.1:{port} (Address already in use)" in err, err


def test_the_command_serves_on_loopback_until_ctrl_c(random_package, tmp_path):
    """``asr-s2s serve`` as a user runs it: it says where it listens, checks its key, and Ctrl-C ends it (exit 0)."""
    command = [sys.executable, "-m", "asr_s2s", "serve", "--model", str(random_package), "--port", "0",
               "--api-key", "k3y", "--threads", "1"]
    server = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    try:
        seen = []
        for line in server.stderr:
            seen.append(line)
            found = re.search(r"at http://(127\.0\.0\.1):(\d+)/", line)
            if found:
                break
        assert found, "".join(seen)
        url = f"http://127.0.0.1:{found.group(2)}"
        deadline = time.monotonic() + 30
        while True:
            try:
                assert requests.get(f"{url}/health", timeout=5).json()["status"] == "ok"
                break
            except requests.ConnectionError:
                assert time.monotonic() < deadline, "".join(seen)
                time.sleep(0.1)
        assert requests.get(f"{url}/v1/models", timeout=5).status_code == 401
        models = requests.get(f"{url}/v1/models", headers={"Authorization": "Bearer k3y"}, timeout=5).json()
        assert models["data"][0]["id"].endswith(re.search(r"@sha256:\w+", "".join(seen)).group(0))
        server.send_signal(signal.SIGINT)
        assert server.wait(30) == 0
        rest = server.stderr.read()
        assert "Traceback" not in rest and "interrupted" not in rest, rest
    finally:
        if server.poll() is None:
            server.kill()
            server.wait()
