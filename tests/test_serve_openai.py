"""asr-s2s serve, through the official ``openai`` client against a live server on 127.0.0.1: every response
format parses and says what ``asr-s2s transcribe`` says for the same file and options."""

from __future__ import annotations

import io
import json

import openai
import pytest
import requests
import soundfile
import srt
import webvtt

from conftest import make_long_recording
from serve_support import live_server

from asr_s2s.package import model_id_of

OPTIONS = ("--beam-size", "1")  # the same decode options for the server and the CLI


@pytest.fixture(scope="module")
def server(robust_package):
    with live_server("--model", robust_package, *OPTIONS) as live:
        yield live


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.url}/v1", api_key="unused", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def recording(fixture_utterances, tmp_path_factory):
    """About 15 s of fixture utterances with pauses: several segments."""
    wave, _, _ = make_long_recording(fixture_utterances, 15.0, seed=3)
    path = tmp_path_factory.mktemp("serve") / "talk.flac"
    soundfile.write(path, wave, 16_000)
    return path


@pytest.fixture(scope="module")
def cli(robust_package, recording, tmp_path_factory):
    """What ``asr-s2s transcribe`` gives for the recording: its JSON line, and the srt and vtt files it writes."""
    import contextlib
    import io

    from asr_s2s.cli import main

    out_dir = tmp_path_factory.mktemp("cli")
    base = ["transcribe", "--model", str(robust_package), *OPTIONS, str(recording), "--quiet"]
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert main([*base, "--format", "json"]) == 0
    for fmt in ("srt", "vtt"):
        assert main([*base, "--format", fmt, "--output-dir", str(out_dir)]) == 0
    return {"json": json.loads(printed.getvalue()), "srt": (out_dir / "talk.srt").read_text(),
            "vtt": (out_dir / "talk.vtt").read_text()}


def test_every_response_format_parses_and_matches_transcribe(client, recording, cli):
    expected = cli["json"]
    assert len(expected["segments"]) >= 3 and expected["text"]

    def create(fmt: str, **extra):
        with open(recording, "rb") as audio:
            return client.audio.transcriptions.create(model="whisper-1", file=audio, response_format=fmt, **extra)

    assert create("json").text == expected["text"]
    assert create("text") == expected["text"] + "\n"
    subtitles = create("srt")
    assert subtitles == cli["srt"]
    cues = list(srt.parse(subtitles))
    assert " ".join(c.content for c in cues) == expected["text"]
    captions = create("vtt")
    assert captions == cli["vtt"]
    assert " ".join(c.text for c in webvtt.from_buffer(io.StringIO(captions))) == expected["text"]

    verbose = create("verbose_json", timestamp_granularities=["word", "segment"], language="en", temperature=0.0,
                     prompt="ignored")
    spoken = [s for s in expected["segments"] if s["text"]]
    assert verbose.text == expected["text"] and verbose.language == "english"
    assert verbose.duration == pytest.approx(expected["duration"], abs=1e-3)
    assert [(s.id, s.start, s.end, s.text) for s in verbose.segments] == [
        (i, s["start"], s["end"], s["text"]) for i, s in enumerate(spoken)]
    assert all(s.tokens and s.avg_logprob <= 0 and s.temperature == 0 for s in verbose.segments)
    words = [w for s in expected["segments"] for w in s["words"]]
    assert words, "the tiny model has a CTC head, so words are timed"
    assert [(w.word, w.start, w.end) for w in verbose.words] == [(w["word"], w["start"], w["end"]) for w in words]
    assert " ".join(w.word for w in verbose.words) == expected["text"]


def test_stream_true_sends_a_delta_per_segment_then_the_text(client, recording, cli):
    with open(recording, "rb") as audio:
        events = list(client.audio.transcriptions.create(model="whisper-1", file=audio, stream=True))
    *deltas, done = events
    spoken = [s for s in cli["json"]["segments"] if s["text"]]
    assert [e.type for e in deltas] == ["transcript.text.delta"] * len(spoken)
    assert "".join(e.delta for e in deltas) == cli["json"]["text"]
    assert [(e.segment["start"], e.segment["end"], e.segment["text"]) for e in deltas] == [
        (s["start"], s["end"], s["text"]) for s in spoken]
    assert done.type == "transcript.text.done" and done.text == cli["json"]["text"]
    assert done.documents["srt"] == cli["srt"] and done.documents["vtt"] == cli["vtt"]


def test_models_health_and_metrics(client, server, robust_package):
    (model,) = client.models.list().data
    assert model.id == model_id_of(robust_package) and model.owned_by == "asr-s2s"
    assert client.models.retrieve(model.id).id == model.id
    with pytest.raises(openai.NotFoundError):
        client.models.retrieve("whisper-1")
    health = requests.get(f"{server.url}/health", timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok"
    metrics = server.metrics()
    assert metrics['asr_s2s_requests_total{route="/health",status="200"}'] >= 1
    assert metrics["asr_s2s_queue_length"] == 0 and metrics["asr_s2s_queue_capacity"] == 32
    assert metrics['asr_s2s_real_time_factor{window="all"}'] >= 0
