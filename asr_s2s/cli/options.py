"""What several commands share: exit codes, the device and thread flags, the decode flags and their merge."""

from __future__ import annotations

import argparse
import dataclasses
import math
from pathlib import Path

from asr_s2s.errors import AsrS2SError, ConfigError, did_you_mean

EXIT_OK, EXIT_SOME_FAILED, EXIT_BAD_INPUT = 0, 1, 2
EXIT_BROKEN_PIPE = 128 + 13  # as a process killed by SIGPIPE reports it to the shell


def registry_from(args):
    from asr_s2s.registry import Registry, get_plugin_manager

    return Registry(get_plugin_manager(disable=args.disable_plugin))


def with_epochs(config, epochs: int | None):
    """``config`` (with a ``train`` section) with ``train.epochs`` replaced, unless ``epochs`` is None."""
    if epochs is None:
        return config
    return dataclasses.replace(config, train=dataclasses.replace(config.train, epochs=epochs))


def set_threads(args) -> None:
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)


def add_device_flags(parser: argparse.ArgumentParser, under_torchrun: bool = False) -> None:
    """``--device`` and ``--threads``, declared once for every command that runs a model."""
    parser.add_argument("--device", default="cpu",
                        help="torch device (default: cpu)" + ("; under torchrun 'cuda' means cuda:LOCAL_RANK"
                                                              if under_torchrun else ""))
    parser.add_argument("--threads", type=int,
                        help="torch intra-op threads (default: torch's choice; 1 is fastest when other processes "
                             "share the cores)")

def add_segmentation_flags(parser: argparse.ArgumentParser) -> None:
    """How long audio is cut and timed (``--max-segment-s``, ``--min-pause-s``, ``--word-timestamps``),
    declared once for ``transcribe`` and ``serve``."""
    from asr_s2s.vad import MAX_SEGMENT_S, MIN_PAUSE_S

    parser.add_argument("--max-segment-s", "--max-segment-seconds", dest="max_segment_s", type=float, metavar="S",
                        help=f"longest segment the model decodes; longer stretches are cut at pauses "
                             f"(default: {MAX_SEGMENT_S:g})")
    parser.add_argument("--min-pause-s", type=float, metavar="S",
                        help=f"shortest pause that separates segments (default: {MIN_PAUSE_S:g})")
    parser.add_argument("--word-timestamps", action=argparse.BooleanOptionalAction, default=None,
                        help="time every word by CTC forced alignment (default: when the model has a CTC head; "
                             "--word-timestamps makes a model without one an error)")


def check_device(name: str) -> None:
    """Refuse a torch device this machine cannot use, saying why, before any work starts."""
    import torch

    try:
        device = torch.device(name)
    except RuntimeError as exc:
        raise ConfigError(f"--device {name}: not a torch device ({exc}); use cpu, cuda or cuda:N") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = f"built with CUDA {torch.version.cuda}" if torch.version.cuda else "a CPU-only build"
            raise ConfigError(
                f"--device {name}: no CUDA GPU is visible (torch {torch.__version__}, {built}). "
                "Use --device cpu, or check nvidia-smi and CUDA_VISIBLE_DEVICES."
            )
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ConfigError(f"--device {name}: only {torch.cuda.device_count()} GPU(s) are visible (cuda:0 .. "
                              f"cuda:{torch.cuda.device_count() - 1})")
    elif device.type != "cpu":
        raise ConfigError(f"--device {name}: only cpu and cuda devices are supported")


def check_output_dir(value: str | None, flag: str) -> None:
    """Refuse, before any work, an output folder path that names an existing file."""
    if value is not None and Path(value).exists() and not Path(value).is_dir():
        raise ConfigError(f"{flag} {value}: that is an existing file, not a folder. "
                          "Give a folder path (it is created when missing).")


def _parse_scorer_weights(values: list[str]) -> dict[str, float]:
    weights = {}
    for item in values or []:
        name, sep, value = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError
            weights[name] = float(value)
        except ValueError:
            raise ConfigError(f"--scorer {item!r}: expected NAME=WEIGHT, e.g. --scorer length_bonus=0.5") from None
    return weights


def _parse_scorer_params(values: list[str]) -> dict[str, dict]:
    import yaml

    params: dict[str, dict] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        name, dot, param = key.partition(".")
        if not (sep and dot and name and param):
            raise ConfigError(f"--scorer-param {item!r}: expected NAME.KEY=VALUE, e.g. --scorer-param ngram.path=lm.arpa")
        try:
            params.setdefault(name, {})[param] = yaml.safe_load(value) if value else value
        except yaml.YAMLError:
            params.setdefault(name, {})[param] = value
    return params


# search options with a flag of the same name on evaluate and transcribe (--max-length-ratio, ...)
SEARCH_FLAGS = ("max_length_ratio", "min_length_ratio", "length_normalize", "end_margin", "pre_beam_ratio",
                "eos_threshold")


def _end_margin(text: str) -> float:
    """``--end-margin``: a positive number, or inf (also 'none' or 'off') for no end detection."""
    if text.lower() in ("inf", "none", "off"):
        return math.inf
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number or inf, got {text!r}") from None


def _checked_scorer_flags(args, registry) -> tuple[dict[str, float], dict[str, dict]]:
    """``--scorer`` weights and ``--scorer-param`` params, each name and key checked against the registry,
    so that a typo is reported as the flag the user typed rather than as a config path."""
    from asr_s2s.registry import accepted_params

    weights = _parse_scorer_weights(args.scorer)
    for name in weights:
        try:
            registry.get("scorer", name)
        except AsrS2SError as exc:
            raise ConfigError(f"--scorer {name}={weights[name]:g}: {exc}") from None
    params = _parse_scorer_params(args.scorer_param)
    for name, extra in params.items():
        try:
            accepted = accepted_params(registry.factory("scorer", name), injected={"model"})
        except AsrS2SError as exc:
            raise ConfigError(f"--scorer-param {name}.{next(iter(extra))}: {exc}") from None
        for key, value in extra.items():
            if key not in accepted:
                raise ConfigError(
                    f"--scorer-param {name}.{key}={value}: scorer {name!r} has no param {key!r}."
                    f"{did_you_mean(key, accepted)} Its params: {', '.join(accepted) or '(none)'}"
                )
    return weights, params


def decode_overrides(args, registry) -> dict:
    """The decode options the command line gives, by name, for ``with_overrides`` (None: not given)."""
    weights, params = _checked_scorer_flags(args, registry)
    return {
        "beam_size": args.beam_size, "scorers": weights, "scorer_params": params, "lm": args.lm,
        "hotwords": args.hotword, "batch_seconds": args.batch_seconds, "precision": args.precision,
        **{name: getattr(args, name) for name in SEARCH_FLAGS},
    }


def _decode_defaults(model_decode: dict | None) -> tuple[dict, str]:
    """The decode defaults ``--help`` shows, and where they come from."""
    from asr_s2s.config import DecodeConfig

    built_in = {f.name: getattr(DecodeConfig(), f.name) for f in dataclasses.fields(DecodeConfig)}
    if model_decode:
        return {**built_in, **model_decode}, "from --model's config.yaml"
    return built_in, "built in; a model package's decode section overrides it (give --model to see its values)"


def decode_parser(model_decode: dict | None = None) -> argparse.ArgumentParser:
    """The flags evaluate and transcribe share: the model, the search and the device.

    ``model_decode`` (a package's decode section) sets the defaults that ``--help`` shows.
    """
    decode = argparse.ArgumentParser(add_help=False)
    shown, source = _decode_defaults(model_decode)
    decode.add_argument("--model", required=True, help="model package directory (EXP_DIR/model)")
    decode.add_argument("--beam-size", type=int, metavar="K",
                        help=f"beam size; 1 with the decoder alone is greedy (default: {shown['beam_size']}, {source})")
    weights = ", ".join(f"{n}={w:g}" for n, w in shown["scorers"].items())
    decode.add_argument("--scorer", action="append", metavar="NAME=WEIGHT",
                        help=f"scorer weight, e.g. length_bonus=0.5 (repeatable; 0 turns one off; default: {weights}, "
                             f"{source})")
    decode.add_argument("--scorer-param", action="append", metavar="NAME.KEY=VALUE",
                        help="a scorer's param, e.g. ngram.path=lm.arpa (repeatable; VALUE is read as YAML)")
    decode.add_argument("--lm", metavar="DIR", help="language model package for the 'lm' scorer (give --scorer lm=WEIGHT)")
    decode.add_argument("--hotword", action="append", metavar="PHRASE",
                        help="phrase to boost with the 'hotwords' scorer (repeatable; give --scorer hotwords=WEIGHT)")
    decode.add_argument("--batch-seconds", type=float, metavar="S",
                        help=f"padded audio seconds decoded together (default: {shown['batch_seconds']:g}, {source})")
    decode.add_argument("--precision", choices=["fp32", "bf16"],
                        help="bf16: run the encoder under bf16 autocast, about 2x faster encoding on CPUs with AMX "
                             "(slower on CPUs without bf16 units, little gain on GPUs); the search stays fp32 "
                             "(default: the model's, fp32)")
    decode.add_argument("--max-length-ratio", type=float, metavar="R",
                        help=f"most output tokens per encoder frame (default: {shown['max_length_ratio']:g}, {source})")
    decode.add_argument("--min-length-ratio", type=float, metavar="R",
                        help=f"fewest output tokens per encoder frame (default: {shown['min_length_ratio']:g}, {source})")
    decode.add_argument("--length-normalize", action=argparse.BooleanOptionalAction, default=None,
                        help=f"rank finished hypotheses by score per token (default: {shown['length_normalize']}, {source})")
    decode.add_argument("--end-margin", type=_end_margin, metavar="M",
                        help="end detection: stop an utterance once its running hypotheses trail its best finished one "
                             f"by M; 'inf' turns it off (default: {shown['end_margin']}, {source})")
    decode.add_argument("--pre-beam-ratio", type=float, metavar="R",
                        help="partial scorers (ctc) score the best ceil(R x beam) tokens "
                             f"(default: {shown['pre_beam_ratio']:g}, {source})")
    decode.add_argument("--eos-threshold", type=float, metavar="G",
                        help="end a hypothesis only where the decoder's log-probability of <eos> is at least G times "
                             "its best other token's (1.5 keeps a word LM from cutting outputs short) "
                             f"(default: {shown['eos_threshold']}, {source}; none: always)")
    add_device_flags(decode, under_torchrun=True)
    return decode
