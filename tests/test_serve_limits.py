"""asr-s2s serve under load and bad input, on a live server: concurrent requests share decoding rounds, a full
queue answers 503 with Retry-After, a client that leaves stops its work, and every bad request gets its documented
status and message (the audio ones the message ``asr-s2s transcribe`` prints) while the server stays healthy."""

from __future__ import annotations

import socket
import threading
import uuid
from pathlib import Path

import numpy as np
import openai
import pytest
import requests
import soundfile

from conftest import make_long_recording
from serve_support import live_server

KEY = "test-key-123"
AUTH = {"Authorization": f"Bearer {KEY}"}


@pytest.fixture(scope="module")
def server_tmp(tmp_path_factory):
    """The folder the servers of this module make each request's temporary folder in: empty after each request."""
    return tmp_path_factory.mktemp("server_tmp")


@pytest.fixture(scope="module")
def guarded(random_package, server_tmp):
    """An API key, 0.5 MB uploads, 10 s of audio, 16 waiting requests; the decoder waits 200 ms for company."""
    with live_server("--model", random_package, "--beam-size", "1", "--api-key", KEY, "--max-upload-mb", "0.5",
                     "--max-duration-s", "10", "--queue-size", "16", "--batch-wait-ms", "200", "--upload-dir", server_tmp) as live:
        yield live


def post(server, files=None, data=None, headers=AUTH, **kwargs) -> requests.Response:
    return requests.post(f"{server.url}/v1/audio/transcriptions", files=files, data=data, headers=headers,
                         timeout=60, **kwargs)


def error_of(response: requests.Response) -> dict:
    body = response.json()
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert "Traceback" not in response.text
    return body["error"]


def cli_message(run_cli, package, path: Path) -> str:
    """What ``asr-s2s transcribe`` prints for the file, with its path shortened to its name (as uploaded)."""
    code, _, err = run_cli("transcribe", "--model", package, path, "--quiet")
    assert code == 1
    return err.replace(str(path), path.name)


def _bad_files(folder: Path, fixture: str) -> dict[str, Path]:
    empty = folder / "empty.wav"
    empty.write_bytes(b"")
    notes = folder / "notes.wav"
    notes.write_text("these are my notes, not audio\n")
    truncated = folder / "truncated.flac"
    truncated.write_bytes(Path(fixture).read_bytes()[:20_000])
    return {"empty": empty, "non-audio": notes, "truncated": truncated}


def test_bad_audio_gets_400_with_the_message_transcribe_prints(guarded, run_cli, random_package, fixture_utterances,
                                                               tmp_path, server_tmp):
    for case, path in _bad_files(tmp_path, fixture_utterances[0].audio).items():
        response = post(guarded, files={"file": (path.name, path.read_bytes())}, data={"model": "whisper-1"})
        assert response.status_code == 400, (case, response.text)
        error = error_of(response)
        assert error["param"] == "file" and error["code"] == "invalid_audio"
        assert error["message"].startswith(f"{path.name}: ")
        assert error["message"] in cli_message(run_cli, random_package, path), case
        assert str(server_tmp) not in error["message"]
    assert post(guarded, files={"file": ("ok.flac", Path(fixture_utterances[0].audio).read_bytes())}).status_code == 200
    assert list(server_tmp.iterdir()) == []


def test_limits_fields_and_keys_get_their_documented_status(guarded, fixture_utterances, tmp_path, server_tmp):
    good = ("a.flac", Path(fixture_utterances[1].audio).read_bytes())
    silence = tmp_path / "long.flac"
    soundfile.write(silence, np.zeros(12 * 16_000, np.float32), 16_000)
    cases = {  # name: (request, status, code or None, words in the message)
        "over the upload size": (dict(files={"file": ("big.wav", b"\0" * 600_000)}), 413, "file_too_large", "0.5 MB"),
        "over the duration": (dict(files={"file": ("long.flac", silence.read_bytes())}), 413, "audio_too_long",
                              "long.flac: audio is over 12.0 s long; this server takes at most 10 s"),
        "audio in a field named 'audio'": (dict(files={"audio": good}), 400, None, "field 'file'"),
        "misspelt field": (dict(files={"file": good}, data={"respons_format": "srt"}), 400, "unknown_parameter",
                           "Did you mean 'response_format'?"),
        "no file": (dict(files={"model": (None, "whisper-1")}), 400, None, "no audio"),
        "a form that is not multipart": (dict(data={"model": "whisper-1"}), 400, None, "multipart/form-data"),
        "a language other than English": (dict(files={"file": good}, data={"language": "fr"}), 400,
                                          "unsupported_language", "English only"),
        "an unknown response format": (dict(files={"file": good}, data={"response_format": "xml"}), 400, None,
                                       "response_format 'xml'"),
        "a path on the server": (dict(files={"file": good}, data={"lm": "/etc"}), 400, None, "set by the server"),
        "no API key": (dict(files={"file": good}, headers={}), 401, "invalid_api_key", "Bearer"),
        "a wrong API key": (dict(files={"file": good}, headers={"Authorization": "Bearer nope"}), 401,
                            "invalid_api_key", "incorrect API key"),
    }
    for case, (request, status, code, words) in cases.items():
        response = post(guarded, **request)
        assert response.status_code == status, (case, response.text)
        error = error_of(response)
        assert error["code"] == code and words in error["message"], (case, error)
        if status == 401:
            assert response.headers["WWW-Authenticate"] == "Bearer"
    assert requests.get(f"{guarded.url}/health", timeout=10).json()["status"] == "ok"
    with pytest.raises(openai.AuthenticationError):
        openai.OpenAI(base_url=f"{guarded.url}/v1", api_key="wrong", max_retries=0).models.list()
    assert post(guarded, files={"file": good}).json()["text"]
    assert list(server_tmp.iterdir()) == []


def test_sixteen_requests_at_once_are_decoded_in_fewer_rounds(guarded, fixture_utterances, random_package):
    import asr_s2s

    paths = [Path(u.audio) for u in fixture_utterances] * 2
    before = guarded.metrics()
    start = threading.Barrier(len(paths))
    responses: list[requests.Response | None] = [None] * len(paths)

    def send(i: int) -> None:
        start.wait()
        responses[i] = post(guarded, files={"file": (paths[i].name, paths[i].read_bytes())})

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(paths))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    assert [r.status_code for r in responses] == [200] * len(paths), [r.text for r in responses if r.status_code != 200]
    after = guarded.metrics()
    rounds = after["asr_s2s_decode_rounds_total"] - before["asr_s2s_decode_rounds_total"]
    batches = after["asr_s2s_decode_batches_total"] - before["asr_s2s_decode_batches_total"]
    assert 1 <= rounds < len(paths) and 1 <= batches < len(paths), (rounds, batches)
    shared = after["asr_s2s_round_requests_count"] - after['asr_s2s_round_requests_bucket{le="1"}']
    assert shared >= 1, "no round decoded more than one request"
    direct = asr_s2s.load_model(random_package).transcribe_many(paths, beam_size=1)  # as `transcribe` gives them
    assert [r.json()["text"] for r in responses] == [result.text for result in direct]


def _raw_request(url: str, path: Path) -> socket.socket:
    """Send a transcription request on a socket of our own (to close it), without reading the answer."""
    boundary = uuid.uuid4().hex
    body = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"file\"; filename=\"{path.name}\"\r\n"
            f"Content-Type: audio/flac\r\n\r\n").encode() + path.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(f"POST /v1/audio/transcriptions HTTP/1.1\r\nHost: {host}\r\nContent-Length: {len(body)}\r\n"
                 f"Content-Type: multipart/form-data; boundary={boundary}\r\n\r\n".encode() + body)
    return sock


def test_a_full_queue_answers_503_and_a_client_that_leaves_stops_its_work(random_package, fixture_utterances,
                                                                           tmp_path, server_tmp):
    wave, spans, _ = make_long_recording(fixture_utterances, 300.0)
    long = tmp_path / "five_minutes.flac"
    soundfile.write(long, wave, 16_000)
    short = ("short.flac", Path(fixture_utterances[0].audio).read_bytes())
    with live_server("--model", random_package, "--beam-size", "1", "--queue-size", "1", "--batch-seconds", "10",
                     "--batch-wait-ms", "0", "--upload-dir", server_tmp) as server:
        leaving = _raw_request(server.url, long)
        server.wait_for(lambda m: m["asr_s2s_requests_decoding"] == 1 and m["asr_s2s_segments_total"] > 0,
                        "the five-minute request to be decoding")
        waiting: list[requests.Response] = []
        second = threading.Thread(target=lambda: waiting.append(post(server, files={"file": short}, headers={})))
        second.start()
        server.wait_for(lambda m: m["asr_s2s_queue_length"] == 1, "the second request to wait in the queue")
        refused = post(server, files={"file": short}, headers={})
        assert refused.status_code == 503 and int(refused.headers["Retry-After"]) >= 1
        assert error_of(refused)["code"] == "queue_full"
        leaving.close()  # the first client goes away: its decoding stops, the waiting request gets its turn
        second.join(60)
        assert waiting and waiting[0].status_code == 200, waiting
        done = server.wait_for(lambda m: m["asr_s2s_requests_decoding"] == 0, "the decoder to be idle")
        assert done["asr_s2s_requests_cancelled_total"] == 1
        assert done["asr_s2s_segments_total"] - 1 < len(spans), "the cancelled request was decoded to its end"
        assert done['asr_s2s_requests_total{route="/v1/audio/transcriptions",status="503"}'] == 1
        assert requests.get(f"{server.url}/health", timeout=10).json()["status"] == "ok"
        assert post(server, files={"file": short}, headers={}).status_code == 200
    assert list(server_tmp.iterdir()) == []
