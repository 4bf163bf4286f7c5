"""The training-data augmentation chain: ``train.augment`` entries, applied per utterance in the data workers.

Each entry of ``train.augment`` is ``{name: PLUGIN, prob: P, start_epoch: E, **params}``:
the augmentation plugin ``name`` (see ``asr-s2s plugins``), applied to each
utterance with probability ``P`` (default 1) from epoch ``E`` on (counting from
1, the default). A later start lets the first epochs learn the alignment from
clean audio, which a short run needs: attention that has not yet learnt to
follow the audio learns it slowly from heavily distorted input. Every draw comes from a generator
seeded by ``(seed, epoch, utterance index, entry position)``, so an epoch's
augmented audio is the same whichever worker loads it, whatever the batch
order, and after a resume; changing one entry changes no other entry's draws.

The chain runs the ``audio`` stages, then the ``filterbank`` stages, then the
features are computed, then the ``features`` stages run, each group in config
order. Only the training set is ever augmented: validation, CMVN, evaluation
and transcription build their datasets without a chain.
"""

from __future__ import annotations

import inspect
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from asr_s2s.errors import ConfigError, PluginError
from asr_s2s.interfaces import Augmentation, AugmentationContext, Signal

log = logging.getLogger(__name__)

STAGES = ("audio", "filterbank", "features")
MIN_SAMPLES = 400  # one 25 ms frame at 16 kHz: shorter output cannot make features
MAX_ABS_SAMPLE = 1e3  # far beyond full scale: an augmentation returning more is broken


@dataclass(frozen=True)
class Step:
    """One built ``train.augment`` entry."""

    augmentation: Augmentation
    prob: float
    position: int  # index in the config list: part of the seed of its draws
    where: str  # e.g. "train.augment[2] (noise)", for messages
    start_epoch: int = 1  # the first epoch (counting from 1) whose utterances it is drawn for


@dataclass(frozen=True)
class Failure:
    """An augmentation that raised or returned unusable output for one utterance (which went on without it)."""

    where: str
    reason: str


@dataclass(frozen=True)
class Plan:
    """The entries that fire for one utterance in one epoch, each with its own generator."""

    audio: tuple[tuple[Step, np.random.Generator], ...]
    filterbank: tuple[tuple[Step, np.random.Generator], ...]
    features: tuple[tuple[Step, np.random.Generator], ...]

    @property
    def changes_signal(self) -> bool:
        """Whether an audio or filterbank stage fires (the features then differ from the clean ones)."""
        return bool(self.audio or self.filterbank)


class AugmentationChain:
    """The ``train.augment`` entries of a run, ready to apply.

    :param steps: built entries, in config order.
    :param seed: the run's seed (``train.seed``).
    """

    def __init__(self, steps: Sequence[Step], seed: int = 0) -> None:
        self.steps = tuple(steps)
        self.seed = int(seed)

    def __len__(self) -> int:
        return len(self.steps)

    @property
    def names(self) -> list[str]:
        return [type(step.augmentation).name for step in self.steps]

    @classmethod
    def from_config(
        cls, entries: Sequence[Mapping[str, Any]], registry, context: AugmentationContext, seed: int = 0,
        where: str = "train.augment",
    ) -> AugmentationChain:
        """Build every entry (unknown names and params are errors naming the entry).

        :raises ConfigError: for an entry that is not a mapping, a bad ``prob`` or ``start_epoch``, or parameters
            the augmentation rejects; :raises PluginError: for an unknown name or key (did-you-mean).
        """
        steps = []
        for position, entry in enumerate(entries):
            at = f"{where}[{position}]"
            if not isinstance(entry, Mapping):
                raise ConfigError(f"{at}: expected a mapping {{name: ..., prob: ..., ...params}}, got {entry!r}")
            params = dict(entry)
            prob = params.pop("prob", 1.0)
            if isinstance(prob, bool) or not isinstance(prob, (int, float)) or not 0.0 <= prob <= 1.0:
                raise ConfigError(f"{at}.prob: expected a probability in [0, 1], got {prob!r}")
            start_epoch = params.pop("start_epoch", 1)
            if isinstance(start_epoch, bool) or not isinstance(start_epoch, int) or start_epoch < 1:
                raise ConfigError(f"{at}.start_epoch: expected an epoch number from 1 on, got {start_epoch!r}")
            label = f"{at} ({params.get('name', '?')})"
            injected = {"context": context} if _takes_context(registry, params.get("name")) else {}
            augmentation = registry.build("augmentation", params, at, **injected)  # a refused value: ConfigError
            if getattr(augmentation, "stage", None) not in STAGES:
                raise PluginError(f"{label}: stage must be one of {', '.join(STAGES)}, got {augmentation.stage!r}")
            steps.append(Step(augmentation, float(prob), position, label, start_epoch))
        return cls(steps, seed)

    def rng(self, index: int, epoch: int, position: int) -> np.random.Generator:
        """The generator of entry ``position`` for utterance ``index`` in ``epoch``."""
        return np.random.default_rng([self.seed, epoch, index, position])

    def plan(self, index: int, epoch: int) -> Plan:
        """Which entries fire for utterance ``index`` in ``epoch`` (counting from 0; the first draw of each
        entry's generator). An entry whose ``start_epoch`` is later than ``epoch + 1`` does not fire."""
        fired: dict[str, list] = {stage: [] for stage in STAGES}
        for step in self.steps:
            if epoch + 1 < step.start_epoch:
                continue
            rng = self.rng(index, epoch, step.position)
            if rng.random() < step.prob:
                fired[step.augmentation.stage].append((step, rng))
        return Plan(*(tuple(fired[stage]) for stage in STAGES))

    @staticmethod
    def apply_signal(plan: Plan, signal: Signal, failures: list[Failure]) -> Signal:
        """Run the plan's audio, then filterbank stages; a failing entry is recorded in ``failures`` and skipped.

        :param signal: ``waveform`` ``(S,)`` float32 at 16 kHz.
        :returns: the augmented signal ``(S',)``.
        """
        for step, rng in (*plan.audio, *plan.filterbank):
            try:
                out = step.augmentation.apply(signal, rng)
                problem = _signal_problem(out, step.augmentation.stage, signal)
            except Exception as exc:  # noqa: BLE001 - a plugin's failure skips it for this utterance only
                problem = f"{type(exc).__name__}: {exc}"
            if problem:
                failures.append(Failure(step.where, problem))
            else:
                signal = out
        return signal

    @staticmethod
    def apply_features(plan: Plan, feats: torch.Tensor, failures: list[Failure]) -> torch.Tensor:
        """Run the plan's feature stages on ``(T, F)`` features; a failing entry is recorded and skipped."""
        for step, rng in plan.features:
            try:
                out = step.augmentation.apply_features(feats, rng)
                problem = _features_problem(out, feats)
            except Exception as exc:  # noqa: BLE001 - as above
                problem = f"{type(exc).__name__}: {exc}"
            if problem:
                failures.append(Failure(step.where, problem))
            else:
                feats = out
        return feats


def _takes_context(registry, name: Any) -> bool:
    """Whether the augmentation ``name``'s constructor takes a ``context`` (unknown names fail in ``build``)."""
    if not isinstance(name, str) or name not in registry.names("augmentation"):
        return False
    return "context" in inspect.signature(registry.get("augmentation", name).cls).parameters


def _signal_problem(out: Any, stage: str, before: Signal) -> str:
    """Why an augmentation's output cannot be used, or ''."""
    if not isinstance(out, Signal):
        return f"returned {type(out).__name__}, not a Signal"
    wave = out.waveform
    if not isinstance(wave, np.ndarray) or wave.ndim != 1 or wave.dtype != np.float32:
        return f"returned samples of shape {getattr(wave, 'shape', '?')} and dtype {getattr(wave, 'dtype', '?')}, not (S,) float32"
    if len(wave) < MIN_SAMPLES:
        return f"returned {len(wave)} samples, fewer than one 25 ms frame"
    if not np.all(np.isfinite(wave)) or float(np.abs(wave).max()) > MAX_ABS_SAMPLE:
        return "returned non-finite or absurdly large samples"
    if not (math.isfinite(out.vtln_warp) and 0.5 <= out.vtln_warp <= 2.0):
        return f"returned a filterbank warp of {out.vtln_warp}, outside [0.5, 2]"
    if stage == "filterbank" and out.waveform is not before.waveform and not np.array_equal(out.waveform, before.waveform):
        return "is a 'filterbank' augmentation but changed the samples"
    return ""


def _features_problem(out: Any, before: torch.Tensor) -> str:
    if not isinstance(out, torch.Tensor) or out.ndim != 2 or out.shape[1] != before.shape[1]:
        return f"returned {getattr(out, 'shape', type(out).__name__)}, not (T, {before.shape[1]}) features"
    if out.shape[0] < 1 or not bool(torch.isfinite(out).all()):
        return "returned empty or non-finite features"
    return ""


def check_range(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    """A ``[min, max]`` param as a tuple, checked to lie within ``[low, high]``.

    For augmentation plugins: ``snr_db: [5, 20]``; ``[x, x]`` fixes the value.

    :raises ValueError: naming ``name`` (the chain turns it into a ConfigError naming the entry).
    """
    try:
        first, last = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be [min, max], got {value!r}") from None
    if not (math.isfinite(first) and math.isfinite(last) and low <= first <= last <= high):
        raise ValueError(f"{name} must be [min, max] with {low:g} <= min <= max <= {high:g}, got {list(value)}")
    return first, last


def uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A draw from ``[min, max]`` (exactly ``min`` when they are equal)."""
    low, high = bounds
    return low if low == high else float(rng.uniform(low, high))


def audio_folder(folder: str | Path, what: str) -> list[Path]:
    """The readable audio files under ``folder`` (recursively, by extension and header), for noise or RIR banks.

    An unreadable file is warned about, named, counted and left out; it never stops training.

    :param what: what the files are, for messages (e.g. ``"noise"``).
    :raises ValueError: naming the path, if it is missing, not a folder, or holds no readable audio.
    """
    import soundfile

    from asr_s2s.audio import AUDIO_EXTENSIONS

    root = Path(folder).expanduser()
    if not root.exists():
        raise ValueError(f"{what} folder {root}: no such directory")
    if not root.is_dir():
        raise ValueError(f"{what} folder {root}: not a directory")
    candidates = sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS)
    readable, unreadable = [], []
    for path in candidates:
        try:
            info = soundfile.info(str(path))
            if info.frames <= 0:
                raise RuntimeError("no samples")
            readable.append(path)
        except Exception as exc:  # noqa: BLE001 - libsndfile raises several types for bad files
            unreadable.append(f"{path} ({str(exc).splitlines()[0][:120]})")
    if unreadable:
        log.warning("%s folder %s: skipping %d unreadable file(s) of %d: %s", what, root, len(unreadable),
                    len(candidates), "; ".join(unreadable[:5]) + ("; ..." if len(unreadable) > 5 else ""))
    if not readable:
        raise ValueError(f"{what} folder {root}: no readable audio files ({', '.join(sorted(AUDIO_EXTENSIONS))})")
    return readable


def read_audio(path: str | Path, frames: int | None = None, rng: np.random.Generator | None = None) -> np.ndarray:
    """Mono float32 samples ``(S,)`` at 16 kHz of a file, or of a random excerpt of ``frames`` output samples.

    A file shorter than ``frames`` is repeated to fill them.

    :raises AudioLoadError: naming the file, if it cannot be read.
    """
    import soundfile

    from asr_s2s.audio import SAMPLE_RATE_HZ, resample
    from asr_s2s.errors import AudioLoadError

    try:
        info = soundfile.info(str(path))
        rate = int(info.samplerate)
        want = info.frames if frames is None else min(info.frames, math.ceil(frames * rate / SAMPLE_RATE_HZ) + 16)
        start = 0 if rng is None or info.frames <= want else int(rng.integers(0, info.frames - want + 1))
        data, _ = soundfile.read(str(path), start=start, frames=want, dtype="float32", always_2d=True)
    except Exception as exc:  # noqa: BLE001 - any decoder failure means an unusable file
        raise AudioLoadError(f"{path}: cannot be read ({str(exc).splitlines()[0][:160]})") from None
    if len(data) == 0:
        raise AudioLoadError(f"{path}: no samples")
    mono = data.mean(axis=1)
    mono = resample(mono, rate)
    if not np.all(np.isfinite(mono)):
        raise AudioLoadError(f"{path}: holds NaN or infinite samples")
    if frames is not None:
        mono = np.resize(mono, frames)  # repeats a short file
    return np.ascontiguousarray(mono, dtype=np.float32)


def augment_entries(train_config) -> list[dict[str, Any]]:
    """The ``train.augment`` entries of a config, with the older ``train.speed_perturb`` folded in first."""
    entries = [dict(entry) for entry in train_config.augment]
    if train_config.speed_perturb:
        log.warning("train.speed_perturb is deprecated: write train.augment: [{name: speed, factors: %s}]",
                    list(train_config.speed_perturb))
        entries.insert(0, {"name": "speed", "factors": list(train_config.speed_perturb)})
    return entries


def load_augment_file(path: str | Path) -> list[dict[str, Any]]:
    """The ``augment:`` list of a YAML file (an augmentation file, or an experiment config's ``train.augment``).

    :raises ConfigError: naming the file, if it is missing, not YAML, or has no list of entries.
    """
    import yaml

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such augmentation file") from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: not a readable YAML file ({exc})") from None
    if isinstance(raw, dict) and isinstance(raw.get("train"), dict):  # an experiment config
        raw = raw["train"]
    if not isinstance(raw, dict) or not isinstance(raw.get("augment"), list):
        raise ConfigError(f"{path}: expected 'augment: [{{name: ..., prob: ..., ...params}}, ...]'")
    return list(raw["augment"])


@dataclass(frozen=True)
class AugmentedItem:
    """One utterance written by :func:`write_augmented`, or why it was not."""

    index: int
    waveform: np.ndarray | None  # (S,) float32 at 16 kHz
    notes: tuple[str, ...]
    error: str = ""


class _AugmentedAudio(torch.utils.data.Dataset):
    """Each utterance's audio through the chain (epoch 0), in DataLoader workers."""

    def __init__(self, utterances, chain: AugmentationChain) -> None:
        self.utterances, self.chain = utterances, chain

    def __len__(self) -> int:
        return len(self.utterances)

    def __getitem__(self, index: int) -> AugmentedItem:
        from asr_s2s.audio import load_audio
        from asr_s2s.errors import AsrS2SError

        utt = self.utterances[index]
        try:
            signal = Signal(load_audio(utt.audio), utterance=utt)
        except AsrS2SError as exc:
            return AugmentedItem(index, None, (), str(exc))
        failures: list[Failure] = []
        signal = self.chain.apply_signal(self.chain.plan(index, 0), signal, failures)
        if failures:
            return AugmentedItem(index, None, signal.notes, "; ".join(f"{f.where}: {f.reason}" for f in failures))
        return AugmentedItem(index, signal.waveform, signal.notes)


def write_augmented(
    utterances: Sequence, chain: AugmentationChain, out_dir: str | Path, num_workers: int = 0, progress: bool = True,
) -> tuple[list, list[tuple[str, str]]]:
    """Write each utterance through ``chain`` as ``OUT_DIR/audio/ID.flac`` and list them in ``OUT_DIR/manifest.jsonl``.

    For fixed test conditions (noise, reverberation, codecs, framing): the draws
    are those of epoch 0 with the chain's seed, so the same command writes the
    same files. Only audio stages can be written; an utterance that cannot be
    read, or on which an entry fails, is left out and reported, never written
    without its augmentation. Each manifest line carries an ``augment`` list of
    what was done.

    :returns: the written utterances and ``(id, reason)`` for each left out.
    """
    import json
    from dataclasses import asdict, replace

    import soundfile
    from asr_s2s.progress import progress_bar

    from asr_s2s.audio import SAMPLE_RATE_HZ
    from asr_s2s.files import write_text_atomically

    for step in chain.steps:
        if step.augmentation.stage != "audio":
            raise ConfigError(f"{step.where}: a '{step.augmentation.stage}' augmentation changes the features, not the "
                              "audio, so it cannot be written to files; apply it in training (train.augment)")
    out_dir = Path(out_dir)
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    loader = torch.utils.data.DataLoader(
        _AugmentedAudio(list(utterances), chain), batch_size=None, num_workers=num_workers,
        collate_fn=lambda item: item,
    )
    written, failed, lines = [], [], []
    for item in progress_bar(loader, total=len(utterances), desc=f"augment {out_dir.name}", unit="utt", disable=not progress):
        utt = utterances[item.index]
        if item.error:
            failed.append((utt.id, item.error))
            log.warning("%s left out: %s", utt.id, item.error)
            continue
        path = out_dir / "audio" / (utt.id.replace("/", "_") + ".flac")
        soundfile.write(path, np.clip(item.waveform, -1.0, 1.0), SAMPLE_RATE_HZ, format="FLAC", subtype="PCM_16")
        entry = replace(utt, audio=str(path.resolve()), duration=len(item.waveform) / SAMPLE_RATE_HZ)
        written.append(entry)
        lines.append(json.dumps({**asdict(entry), "augment": list(item.notes)}, ensure_ascii=False) + "\n")
    write_text_atomically(out_dir / "manifest.jsonl", "".join(lines))
    return written, failed
