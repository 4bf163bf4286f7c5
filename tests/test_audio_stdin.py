"""`asr-s2s transcribe -` and stream_audio on file objects: stdin is decoded as it arrives, never read whole."""

from __future__ import annotations

import io
import os
import shutil
import sys
import threading

import numpy as np
import pytest
import soundfile

from asr_s2s.audio import SAMPLE_RATE_HZ, load_audio, stream_audio

from conftest import FIXTURE_DIR, make_long_recording

SOURCE = FIXTURE_DIR / "1001" / "10" / "1001-10-0000.flac"
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")


def _wav_bytes(seconds: float, rate: int = SAMPLE_RATE_HZ) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    buffer = io.BytesIO()
    soundfile.write(buffer, (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


@needs_ffmpeg
def test_a_pipe_is_decoded_as_it_arrives():
    """The first block comes out while the writer still holds back the second half of the stream."""
    data = _wav_bytes(20.0, 22_050)
    read_end, write_end = os.pipe()
    released, waited = threading.Event(), {}

    def writer():
        with os.fdopen(write_end, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            waited["in time"] = released.wait(20)
            out.write(data[len(data) // 2 :])

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    with os.fdopen(read_end, "rb") as stream:
        blocks = stream_audio(stream, block_s=1.0, name="-")
        first = next(blocks)
        released.set()
        streamed = np.concatenate([first, *blocks])
    thread.join(5)
    assert waited["in time"], "the first block waited for the end of the stream"
    assert first.dtype == np.float32 and len(first) <= 1.1 * SAMPLE_RATE_HZ
    whole = load_audio(data)
    assert abs(len(streamed) - len(whole)) < 0.01 * SAMPLE_RATE_HZ
    n = min(len(streamed), len(whole))
    assert np.corrcoef(streamed[:n], whole[:n])[0, 1] > 0.99


def test_a_seekable_stream_is_read_block_by_block_with_libsndfile():
    """stdin redirected from a file (or a BytesIO) is streamed by libsndfile like a path, without ffmpeg."""
    data = _wav_bytes(5.0, 44_100)
    blocks = list(stream_audio(io.BytesIO(data), block_s=1.0, name="-"))
    assert len(blocks) >= 5 and all(len(b) <= 1.1 * SAMPLE_RATE_HZ for b in blocks)
    np.testing.assert_allclose(np.concatenate(blocks), load_audio(data), atol=1e-6)


def test_a_stream_error_names_the_stream():
    from asr_s2s.errors import AudioLoadError

    with pytest.raises(AudioLoadError, match="^-: "):
        list(stream_audio(io.BytesIO(b"RIFF not really a wav file" * 10), name="-"))


def test_transcribe_dash_hands_stdin_on_unread(monkeypatch):
    """Expanding the inputs must not read stdin: it is streamed when its turn comes."""
    from asr_s2s.cli.transcribe import _expand_inputs

    class Unread(io.RawIOBase):
        def readable(self):
            return True

        def readinto(self, buffer):
            raise AssertionError("stdin was read before its transcription began")

    stdin = io.TextIOWrapper(io.BufferedReader(Unread()))
    monkeypatch.setattr(sys, "stdin", stdin)
    jobs, problems = _expand_inputs(["-"])
    assert not problems and [(j.name, j.out_name) for j in jobs] == [("-", "stdin")]
    assert jobs[0].source is stdin.buffer


def test_transcribe_dash_reads_a_real_pipe(run_cli, robust_package, fixture_utterances, monkeypatch):
    wave, _, texts = make_long_recording(fixture_utterances, 10.0, seed=31)
    buffer = io.BytesIO()
    soundfile.write(buffer, wave, SAMPLE_RATE_HZ, format="FLAC")
    read_end, write_end = os.pipe()

    def writer():
        with os.fdopen(write_end, "wb") as out:
            out.write(buffer.getvalue())

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(os.fdopen(read_end, "rb")))
    code, out, err = run_cli("transcribe", "--model", robust_package, "--beam-size", "1", "-", "--quiet")
    thread.join(5)
    assert code == 0, err
    assert out == f"-\t{' '.join(texts)}\n"
