"""Utterance lists: JSON-lines manifests and LibriSpeech-layout folders."""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import asdict, dataclass
from pathlib import Path

from asr_s2s.progress import progress_bar

from asr_s2s.audio import audio_duration_s
from asr_s2s.errors import ManifestError
from asr_s2s.files import write_text_atomically

log = logging.getLogger(__name__)

REQUIRED_FIELDS = ("id", "audio", "duration")
DURATION_TOLERANCE_S = 0.5  # decoded audio may differ from its manifest duration by this many seconds...
DURATION_TOLERANCE = 0.05  # ...plus this fraction of it (codec padding, header estimates); more fails the utterance


@dataclass(frozen=True)
class Utterance:
    """One manifest line. ``audio`` is an absolute path; ``duration`` is in seconds."""

    id: str
    audio: str
    duration: float
    text: str = ""
    speaker: str = ""


def read_manifest(path: str | os.PathLike, require_text: bool = True) -> list[Utterance]:
    """Read a JSON-lines manifest ``{"id", "audio", "duration", "text", "speaker"}``.

    Relative audio paths are resolved against the manifest's folder. A path
    that escapes that folder through ``..`` is allowed but warned about.

    :raises ManifestError: naming the file and line of a malformed entry,
        a missing field, a negative duration or a duplicate id.
    """
    path = Path(path)
    if not path.is_file():
        raise ManifestError(f"{path}: no such manifest file")
    root = path.parent.resolve()
    utterances: list[Utterance] = []
    seen: dict[str, int] = {}
    with path.open(encoding="utf-8") as handle:
        for lineno, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ManifestError(f"{where}: not valid JSON ({exc.msg})") from None
            if not isinstance(raw, dict):
                raise ManifestError(f"{where}: expected a JSON object")
            fields = REQUIRED_FIELDS + (("text",) if require_text else ())
            missing = [f for f in fields if f not in raw]
            if missing:
                raise ManifestError(f"{where}: missing field(s) {', '.join(missing)}")
            utt = _utterance_from(raw, root, where)
            if utt.id in seen:
                raise ManifestError(f"{where}: duplicate id {utt.id!r} (first on line {seen[utt.id]})")
            seen[utt.id] = lineno
            utterances.append(utt)
    if not utterances:
        raise ManifestError(f"{path}: manifest holds no utterances")
    return utterances


def _utterance_from(raw: dict, root: Path, where: str) -> Utterance:
    try:
        duration = float(raw["duration"])
    except (TypeError, ValueError):
        raise ManifestError(f"{where}: duration {raw['duration']!r} is not a number") from None
    if not math.isfinite(duration) or duration <= 0:
        raise ManifestError(f"{where}: duration must be positive seconds, got {raw['duration']!r}")
    audio = Path(str(raw["audio"]))
    if not audio.is_absolute():
        if ".." in audio.parts:
            log.warning("%s: audio path %s escapes the manifest's folder %s", where, audio, root)
        audio = root / audio
    text = raw.get("text", "")
    if not isinstance(text, str):
        raise ManifestError(f"{where}: text must be a string, got {type(text).__name__}")
    return Utterance(str(raw["id"]), str(audio), duration, text, str(raw.get("speaker", "")))


def duration_tolerance_s(duration: float) -> float:
    """How far, in seconds, an utterance's decoded audio may be from its manifest ``duration``."""
    return DURATION_TOLERANCE_S + DURATION_TOLERANCE * duration


def check_duration(utt: Utterance, decoded_s: float, at_least: bool = False) -> None:
    """Batches are planned from manifest durations, so audio far from its entry's is an error.

    :param decoded_s: seconds of audio decoded; with ``at_least``, decoding stopped there.
    :raises ManifestError: naming the utterance, its file and both durations, if they are
        further apart than :func:`duration_tolerance_s`.
    """
    tolerance = duration_tolerance_s(utt.duration)
    if abs(decoded_s - utt.duration) <= tolerance and not at_least:
        return
    measured = f"over {decoded_s:.2f} s" if at_least else f"{decoded_s:.2f} s"
    raise ManifestError(
        f"{utt.audio}: the manifest gives utterance {utt.id} {utt.duration:.2f} s, but its audio is {measured} long "
        f"(more than {tolerance:.2f} s apart); batches are planned from the manifest, so fix its duration"
    )


def write_manifest(utterances: list[Utterance], path: str | os.PathLike) -> None:
    """Write utterances as JSON lines, atomically."""
    write_text_atomically(path, "".join(json.dumps(asdict(utt), ensure_ascii=False) + "\n" for utt in utterances))


def read_librispeech_dir(root: str | os.PathLike, progress: bool = True) -> list[Utterance]:
    """Read a LibriSpeech-layout folder: ``spk/chapter/spk-chapter-utt.flac`` and ``spk-chapter.trans.txt``.

    Audio is referenced in place. Durations come from the file headers.

    :raises ManifestError: if no transcript is found, a line is malformed or
        its audio file is missing.
    """
    root = Path(root).resolve()
    if not root.is_dir():
        raise ManifestError(f"{root}: no such folder")
    transcripts = sorted(root.rglob("*.trans.txt"))
    if not transcripts:
        raise ManifestError(f"{root}: no *.trans.txt files; expected LibriSpeech layout spk/chapter/spk-chapter.trans.txt")
    entries = []
    for trans in transcripts:
        for lineno, line in enumerate(trans.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            utt_id, _, text = line.strip().partition(" ")
            audio = _find_audio(trans.parent, utt_id)
            if audio is None:
                raise ManifestError(f"{trans}:{lineno}: no audio file {utt_id}.flac (or .wav) beside the transcript")
            entries.append((utt_id, audio, text, utt_id.split("-")[0]))
    utterances = [
        Utterance(utt_id, str(audio), audio_duration_s(audio), text, speaker)
        for utt_id, audio, text, speaker in progress_bar(entries, desc=f"reading {root.name}", disable=not progress, unit="utt")
    ]
    return utterances


def _find_audio(folder: Path, utt_id: str) -> Path | None:
    for ext in (".flac", ".wav", ".ogg", ".mp3"):
        candidate = folder / f"{utt_id}{ext}"
        if candidate.is_file():
            return candidate
    return None
