"""Experiment configuration: frozen dataclasses read strictly from YAML.

Every unknown key is an error that names its path and the closest known key;
every value is checked against its field's type.
"""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import yaml

from asr_s2s.errors import ConfigError, did_you_mean
from asr_s2s.features import NUM_MEL_BINS, SpecAugmentConfig

if TYPE_CHECKING:
    from asr_s2s.search import SearchOptions


PRECISIONS = ("bf16", "fp32")  # train.precision, decode.precision
MAX_BATCH_SECONDS = 7200.0  # decode.batch_seconds: padded audio seconds decoded together


@dataclass(frozen=True)
class ModelConfig:
    """What to build. ``encoder``/``decoder`` are ``{name: PLUGIN, **params}``."""

    encoder: dict[str, Any] = field(default_factory=lambda: {"name": "pblstm"})
    decoder: dict[str, Any] = field(default_factory=lambda: {"name": "attention"})
    ctc_weight: float = 0.3  # 0 turns the CTC head off
    label_smoothing: float = 0.1
    num_mel_bins: int = NUM_MEL_BINS
    specaug: SpecAugmentConfig | None = field(default_factory=SpecAugmentConfig)


@dataclass(frozen=True)
class TrainConfig:
    """How to train. Learning rate: linear warm-up, then cosine decay to ``final_lr_ratio * lr``."""

    epochs: int = 20
    lr: float = 1e-3
    warmup_steps: int = 500
    final_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 5.0
    max_batch_seconds: float = 300.0  # padded audio seconds per batch (per rank); with global_batch_seconds: its cap
    max_batch_size: int | None = None
    # padded audio seconds per optimizer step over all ranks, the same for any number of GPUs: each step's batch
    # is cut once and shared among the ranks, and accum_grad = ceil(global / (ranks * max_batch_seconds)) is
    # derived (asr_s2s.optimization.plan_steps; recipes/librispeech/README.md). None: max_batch_seconds per rank
    # and accum_grad as given, so the global batch grows with the number of ranks
    global_batch_seconds: float | None = None
    sortagrad_epochs: int = 0  # epochs that visit batches shortest first before shuffling
    # training utterances longer than these are dropped before batching, with a count in the log (never the
    # validation set; asr_s2s.training_data.drop_long_utterances). None: no limit. As ESPnet's LibriSpeech
    # recipe (remove_longshortdata.sh --maxframes 3000 --maxchars 400): feature frames at the 10 ms hop,
    # counted from the manifest duration (3000: about 30 s); characters of the normalised transcript, spaces
    # included (the character tokenizer's tokens, <eos> not counted)
    max_input_frames: int | None = None
    max_output_chars: int | None = None
    valid_max_batch_seconds: float = 600.0
    num_workers: int = 1
    feature_cache: bool = False  # keep features in memory after the first epoch (small corpora)
    seed: int = 0
    log_interval: int = 20  # steps between JSONL log lines
    tensorboard: bool = False
    # fault tolerance (docs/reliability.md)
    checkpoint_every_steps: int | None = None  # also checkpoint mid-epoch every N optimizer steps (latest kept)
    max_consecutive_bad_losses: int = 10  # stop after this many batches in a row with a NaN/inf loss or gradient
    # scale-out and selection (docs: recipes/librispeech/README.md)
    accum_grad: int = 1  # batches (per rank) whose gradients make one optimizer step
    precision: str = "bf16"  # "bf16": bf16 autocast on CUDA (CPU always trains in fp32); "fp32"
    # training-data augmentation (asr_s2s.augment): [{name: PLUGIN, prob: P, ...params}], applied in this order
    # per utterance in the data workers, never at validation; `asr-s2s plugins` lists the augmentations
    augment: list[dict[str, Any]] = field(default_factory=list)
    speed_perturb: list[float] | None = None  # deprecated: train.augment [{name: speed, factors: [0.9, 1.0, 1.1]}]
    early_stopping_patience: int | None = None  # stop after this many epochs without a better selection_metric
    selection_metric: str = "valid_loss"  # "valid_loss" or "valid_cer": early stopping and the best epoch

    def __post_init__(self) -> None:
        if self.accum_grad < 1:
            raise ConfigError(f"train.accum_grad must be at least 1, got {self.accum_grad}")
        for key in ("max_input_frames", "max_output_chars"):
            limit = getattr(self, key)
            if limit is not None and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
                raise ConfigError(f"train.{key} must be a positive integer or null (no limit), got {limit!r}")
        if self.global_batch_seconds is not None:
            check_global_batch(self)
        check_precision(self.precision, "train.precision")
        if self.selection_metric not in ("valid_loss", "valid_cer"):
            raise ConfigError(f"train.selection_metric must be 'valid_loss' or 'valid_cer', got {self.selection_metric!r}")
        if self.early_stopping_patience is not None and self.early_stopping_patience < 1:
            raise ConfigError(f"train.early_stopping_patience must be at least 1, got {self.early_stopping_patience}")
        if self.speed_perturb is not None and not all(0.5 <= f <= 2.0 for f in self.speed_perturb):
            raise ConfigError(f"train.speed_perturb factors must lie in [0.5, 2.0], got {self.speed_perturb}")
        for position, entry in enumerate(self.augment):
            if not isinstance(entry.get("name"), str):
                raise ConfigError(f"train.augment[{position}]: needs 'name: AUGMENTATION' (see `asr-s2s plugins`), got {entry!r}")


@dataclass(frozen=True)
class DecodeConfig:
    """How to search. ``scorers`` maps scorer names to weights; ``scorer_params`` to their params."""

    beam_size: int = 10
    scorers: dict[str, float] = field(default_factory=lambda: {"decoder": 1.0})
    scorer_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    max_length_ratio: float = 1.0  # max tokens per encoder frame
    min_length_ratio: float = 0.0
    length_normalize: bool = False
    nbest: int = 1
    end_margin: float | None = 10.0  # stop an utterance when its running hypotheses trail this far; null: never
    pre_beam_ratio: float = 1.5  # partial scorers (ctc) score the best ceil(ratio * beam_size) tokens
    # <eos> only where the decoder gives it at least this many times its best other token's log-probability
    # (Kannan et al. 2018: an external LM otherwise ends hypotheses early; 1.5 keeps a word LM from it); null: always
    eos_threshold: float | None = None
    batch_seconds: float = 600.0  # padded audio seconds decoded together
    # "bf16": the encoder runs under bf16 autocast (about 2x faster encoding on CPUs with AMX,
    # slower on CPUs without bf16 units, little gain on GPUs); the search stays fp32. "fp32": exact.
    precision: str = "fp32"

    def __post_init__(self) -> None:
        object.__setattr__(self, "scorers", {str(k): float(v) for k, v in self.scorers.items()})
        object.__setattr__(self, "scorer_params", {str(k): dict(v) for k, v in self.scorer_params.items()})
        # end detection off: None here, also when given as inf (as the command line's --end-margin inf)
        end_margin = self.end_margin
        object.__setattr__(self, "end_margin", None if end_margin is None or math.isinf(end_margin) else end_margin)
        check_precision(self.precision, "decode.precision")
        if not 0 < self.batch_seconds <= MAX_BATCH_SECONDS:
            raise ConfigError(f"batch_seconds must be in (0, {MAX_BATCH_SECONDS:g}], got {self.batch_seconds}")
        check_scorer_params(self.scorers, self.scorer_params)
        self.search_options()  # checks the search fields

    def search_options(self) -> SearchOptions:
        """The search part: the one conversion, for every caller. :raises ConfigError: for a bad value."""
        from asr_s2s.search import SearchOptions

        return SearchOptions(
            beam_size=self.beam_size, weights=dict(self.scorers), max_length_ratio=self.max_length_ratio,
            min_length_ratio=self.min_length_ratio, length_normalize=self.length_normalize, nbest=self.nbest,
            end_margin=self.end_margin, pre_beam_ratio=self.pre_beam_ratio, eos_threshold=self.eos_threshold,
        )

    def with_overrides(self, *, lm: str | None = None, hotwords: Sequence[str] | str | None = None,
                       **changes: Any) -> DecodeConfig:
        """This config with each given option that is not None replaced: the one merge of decode options.

        ``scorers`` and ``scorer_params`` are merged into this config's (a weight of 0
        turns a scorer off). ``lm`` (a package path) and ``hotwords`` (one phrase or
        several) are shortcuts for ``scorer_params["lm"]["path"]`` and
        ``scorer_params["hotwords"]["phrases"]``.

        :raises ConfigError: for an unknown option (naming the closest one) or a bad value.
        """
        names = [f.name for f in dataclasses.fields(self)]
        for name in changes:
            if name not in names:
                known = [*names, "lm", "hotwords"]
                raise ConfigError(f"unknown decode option {name!r}.{did_you_mean(name, known)} Options: {', '.join(known)}")
        changes = {name: value for name, value in changes.items() if value is not None}
        params = {name: dict(p) for name, p in self.scorer_params.items()}
        for name, extra in changes.get("scorer_params", {}).items():
            params.setdefault(name, {}).update(extra)
        if lm:
            params.setdefault("lm", {})["path"] = str(lm)
        if hotwords:
            params.setdefault("hotwords", {})["phrases"] = [hotwords] if isinstance(hotwords, str) else list(hotwords)
        changes["scorers"] = {**self.scorers, **changes.get("scorers", {})}
        changes["scorer_params"] = params
        return dataclasses.replace(self, **changes)


def check_global_batch(train: TrainConfig) -> None:
    """Raise ConfigError for a ``global_batch_seconds`` that is not positive or comes with a key it replaces."""
    if not train.global_batch_seconds > 0:
        raise ConfigError(f"train.global_batch_seconds must be positive, got {train.global_batch_seconds}")
    if train.accum_grad != 1:
        raise ConfigError(
            f"train.accum_grad ({train.accum_grad}) is derived from train.global_batch_seconds: leave it out, and "
            "lower train.max_batch_seconds (the per-GPU cap) to accumulate more, smaller batches"
        )
    if train.max_batch_size is not None:
        raise ConfigError("train.max_batch_size caps one rank's batch; with train.global_batch_seconds the batches "
                          "are cut for all ranks at once: leave it out (train.max_batch_seconds caps a rank's share)")


def check_scorer_params(weights: Mapping[str, float], params: Mapping[str, Mapping[str, Any]]) -> None:
    """Raise ConfigError for params of a scorer without a weight (an explicit weight of 0 keeps one off)."""
    for name, given in params.items():
        if name not in weights:
            raise ConfigError(
                f"scorer {name!r} has params but no weight: give it one (--scorer {name}=WEIGHT on the command line, "
                f"scorers={{{name!r}: WEIGHT}} in Python, decode.scorers.{name} in a config), or drop its params "
                f"({', '.join(given) or 'none'})"
            )


def check_precision(value: str, where: str) -> None:
    """Raise ConfigError unless ``value`` is one of :data:`PRECISIONS`; ``where`` names the option."""
    if value not in PRECISIONS:
        raise ConfigError(f"{where} must be {' or '.join(map(repr, PRECISIONS))}, got {value!r}")


@dataclass(frozen=True)
class ExperimentConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    decode: DecodeConfig = field(default_factory=DecodeConfig)


T = typing.TypeVar("T")
_FLOAT = re.compile(r"[-+]?(\d+\.?\d*|\.\d+)([eE][-+]?\d+)?")


def from_dict(cls: type[T], raw: Any, where: str = "config") -> T:
    """Build dataclass ``cls`` from ``raw``, rejecting unknown keys and wrong types."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(raw).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    for key in raw:
        if key not in names:
            raise ConfigError(f"{where}: unknown key {key!r}.{did_you_mean(str(key), names)} Known keys: {', '.join(names)}")
    values = {key: convert_value(hints[key], value, f"{where}.{key}") for key, value in raw.items()}
    return cls(**values)


def convert_value(hint: Any, value: Any, where: str) -> Any:
    """``value`` as type ``hint`` (an int where a float is declared becomes a float), or ConfigError naming ``where``.

    :raises TypeError: for a hint it cannot check (``Literal``, abstract generics): callers skip those.
    """
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(hint)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return convert_value(arg, value, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if dataclasses.is_dataclass(hint):
        return from_dict(hint, value, where)
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        _, value_type = typing.get_args(hint)
        return {k: convert_value(value_type, v, f"{where}.{k}") for k, v in value.items()}
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        (item_type,) = typing.get_args(hint)
        return [convert_value(item_type, v, f"{where}[{i}]") for i, v in enumerate(value)]
    if hint is Any:
        return value
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is float and isinstance(value, str) and _FLOAT.fullmatch(value.strip()):
        return float(value)  # YAML 1.1 reads 1e-3 (no dot) as a string
    if hint in (int, float) and isinstance(value, bool) or not isinstance(value, hint):
        raise ConfigError(f"{where}: expected {hint.__name__}, got {value!r} ({type(value).__name__})")
    return value


def load_config(path: str | Path, cls: type[T] = ExperimentConfig) -> T:
    """Read a YAML file into config dataclass ``cls`` (an experiment by default).

    :raises ConfigError: naming the file and the bad key.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such config file") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    try:
        return from_dict(cls, raw)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def to_dict(config: Any) -> dict[str, Any]:
    """Plain dict of a config dataclass, for YAML."""
    return dataclasses.asdict(config)
