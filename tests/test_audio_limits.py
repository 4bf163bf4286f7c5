"""asr_s2s.audio on hostile files: audio that decodes to far more than it weighs, and ffmpeg kept on a leash
(local files only, a time limit, bounded error output)."""

from __future__ import annotations

import re
import shutil
import subprocess
import time
import tracemalloc

import numpy as np
import pytest
import soundfile

from asr_s2s.audio import SAMPLE_RATE_HZ, load_audio, stream_audio
from asr_s2s.errors import AudioLoadError

from conftest import FIXTURE_DIR

SOURCE = FIXTURE_DIR / "1001" / "10" / "1001-10-0000.flac"
needs_ffmpeg = pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="needs the ffmpeg binary")

WIDE_SECONDS = 6
MB = 1 << 20


@pytest.fixture(scope="module")
def wide_flac(tmp_path_factory):
    """6 s of silence, 8 channels at 384 kHz, as a FLAC of a few tens of KB: 74 MB of float32 at its native
    rate and channel count, 384 KB once downmixed to 16 kHz mono."""
    path = tmp_path_factory.mktemp("wide") / "wide.flac"
    with soundfile.SoundFile(path, "w", 384_000, 8, subtype="PCM_16", format="FLAC") as out:
        second = np.zeros((384_000, 8), dtype=np.int16)
        for _ in range(WIDE_SECONDS):
            out.write(second)
    assert path.stat().st_size < MB
    return path


def _peak_bytes(run) -> int:
    """Peak traced allocation (numpy arrays included) while ``run()`` runs."""
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_a_wide_high_rate_flac_is_downmixed_and_resampled_block_by_block(wide_flac):
    """Each block becomes 16 kHz mono as it is read: memory is one block, not the whole file at 384 kHz x 8."""
    out = {}
    peak = _peak_bytes(lambda: out.setdefault("wav", load_audio(wide_flac)))
    wav = out["wav"]
    assert wav.dtype == np.float32 and wav.shape == (WIDE_SECONDS * SAMPLE_RATE_HZ,) and not wav.any()
    assert peak < 40 * MB, f"peak {peak / MB:.0f} MB"


def test_the_cap_counts_decoded_seconds_and_stops_decoding_at_it(wide_flac):
    """The cap is on seconds decoded at 16 kHz, and decoding stops as soon as it is passed."""
    with pytest.raises(AudioLoadError) as info:
        load_audio(wide_flac, max_duration_s=0.5)
    message = str(info.value)
    assert message.startswith(str(wide_flac)) and "0.5 s" in message
    decoded = float(re.search(r"over ([\d.]+) s", message).group(1))
    assert 0.5 < decoded < WIDE_SECONDS  # it stopped long before the end of the file


# -- ffmpeg ---------------------------------------------------------------------------------------
def _fake_bin(tmp_path, monkeypatch, script: str):
    """Put ``ffmpeg`` and ``ffprobe`` scripts running ``script`` first on PATH."""
    folder = tmp_path / "bin"
    folder.mkdir()
    for name in ("ffmpeg", "ffprobe"):
        exe = folder / name
        exe.write_text("#!/bin/sh\n" + script)
        exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{__import__('os').environ['PATH']}")
    return folder


def _not_audio(tmp_path):
    """A file libsndfile refuses, so that reading it falls back to ffmpeg."""
    path = tmp_path / "talk.m4a"
    path.write_bytes(b"not audio at all\n" * 64)
    return path


def _read(reader, path):
    return load_audio(path) if reader == "load" else list(stream_audio(path))


@needs_ffmpeg
@pytest.mark.parametrize("reader", ["load", "stream"])
def test_the_sample_rate_is_checked_before_ffmpeg_decodes(tmp_path, monkeypatch, reader):
    """A 768 kHz file only ffmpeg reads is refused from its header: the decoder never runs."""
    real = shutil.which("ffmpeg")
    path = tmp_path / "fast.mka"
    subprocess.run([real, "-nostdin", "-v", "error", "-f", "lavfi", "-i", "anullsrc=r=768000:cl=mono", "-t", "0.5",
                    "-c:a", "pcm_s16le", str(path)], check=True, stdin=subprocess.DEVNULL)
    log = tmp_path / "ffmpeg-ran"
    folder = tmp_path / "bin"
    folder.mkdir()
    (folder / "ffmpeg").write_text(f'#!/bin/sh\necho "$@" >> {log}\nexec {real} "$@"\n')
    (folder / "ffmpeg").chmod(0o755)
    monkeypatch.setenv("PATH", f"{folder}:{__import__('os').environ['PATH']}")
    with pytest.raises(AudioLoadError, match="unsupported sample rate 768000 Hz") as info:
        _read(reader, path)
    assert str(info.value).startswith(str(path))
    assert not log.exists(), "ffmpeg decoded the file before its sample rate was checked"


@needs_ffmpeg
@pytest.mark.parametrize("reader", ["load", "stream"])
def test_ffmpeg_reads_only_the_named_local_file(tmp_path, monkeypatch, reader):
    """A file named 'concat:speech.wav' is that file, not ffmpeg's concat protocol reading speech.wav."""
    soundfile.write(tmp_path / "speech.wav", soundfile.read(SOURCE)[0], SAMPLE_RATE_HZ)
    (tmp_path / "concat:speech.wav").write_bytes(b"not audio at all\n" * 64)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(AudioLoadError, match="not a readable audio file") as info:
        _read(reader, "concat:speech.wav")
    assert str(info.value).startswith("concat:speech.wav")


@pytest.mark.parametrize("reader", ["load", "stream"])
def test_a_stuck_ffmpeg_is_killed_after_the_time_limit(tmp_path, monkeypatch, reader):
    monkeypatch.setattr("asr_s2s.ffmpeg.FFMPEG_TIMEOUT_S", 0.5)
    _fake_bin(tmp_path, monkeypatch, "exec sleep 10\n")
    path = _not_audio(tmp_path)
    start = time.monotonic()
    with pytest.raises(AudioLoadError, match="timed out after 0.5 s") as info:
        _read(reader, path)
    assert time.monotonic() - start < 5
    assert str(info.value).startswith(str(path))


@pytest.mark.parametrize("reader", ["load", "stream"])
def test_only_the_end_of_ffmpeg_error_output_is_kept(tmp_path, monkeypatch, reader):
    """20 MB of error output: the message quotes its last line, and memory holds a few KB of it."""
    _fake_bin(tmp_path, monkeypatch, "head -c 20000000 /dev/zero | tr '\\0' x >&2\necho >&2\necho 'the real reason' >&2\nexit 1\n")
    path = _not_audio(tmp_path)
    caught = {}

    def run():
        try:
            _read(reader, path)
        except AudioLoadError as exc:
            caught["error"] = exc

    peak = _peak_bytes(run)
    message = str(caught["error"])
    assert message.startswith(str(path)) and "the real reason" in message and len(message) < 5000
    assert peak < 4 * MB, f"peak {peak / MB:.0f} MB"
