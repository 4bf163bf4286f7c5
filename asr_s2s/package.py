"""Self-contained model packages: config, tokens, CMVN and safetensors weights.

Layout of a package directory::

    config.yaml        model and default decoding config
    tokens.txt         one token per line
    cmvn.json          global feature mean and std
    model.safetensors  weights (no pickled code anywhere)
    versions.json      package versions that wrote it

Loading never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import yaml
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from asr_s2s.config import DecodeConfig, ExperimentConfig, ModelConfig, from_dict, to_dict
from asr_s2s.errors import AsrS2SError, ConfigError, ModelPackageError
from asr_s2s.features import CMVNStats
from asr_s2s.files import default_mode, exchange, fsync_directory, fsync_file
from asr_s2s.interfaces import Decoder, LanguageModel
from asr_s2s.model import ASRModel
from asr_s2s.registry import Registry
from asr_s2s.tokenizer import CharTokenizer

FORMAT_VERSION = 1
FILES = ("config.yaml", "tokens.txt", "cmvn.json", "model.safetensors", "versions.json")
LM_FILES = ("config.yaml", "tokens.txt", "model.safetensors", "versions.json")
LM_KIND = "lm"  # config.yaml's ``kind`` in a language-model package


def save_package(model: ASRModel, decode: DecodeConfig, path: str | os.PathLike, registry: Registry | None = None) -> Path:
    """Write ``model`` as a package directory, atomically replacing any old one."""

    def write(tmp: Path) -> None:
        config = {"format_version": FORMAT_VERSION, "model": to_dict(model.config), "decode": to_dict(decode)}
        (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
        model.tokenizer.save(tmp / "tokens.txt")
        model.frontend.cmvn.save(tmp / "cmvn.json")
        _save_weights(model, tmp / "model.safetensors")
        (tmp / "versions.json").write_text(json.dumps(_versions(registry), indent=2) + "\n")

    return _write_atomically(Path(path), write)


def save_lm_package(
    lm: LanguageModel, config: Mapping[str, Any], tokenizer: CharTokenizer, path: str | os.PathLike,
    registry: Registry | None = None,
) -> Path:
    """Write a language model (``config`` is its ``{name: ..., **params}``) as a package directory."""

    def write(tmp: Path) -> None:
        meta = {"format_version": FORMAT_VERSION, "kind": LM_KIND, "lm": dict(config)}
        (tmp / "config.yaml").write_text(yaml.safe_dump(meta, sort_keys=False))
        tokenizer.save(tmp / "tokens.txt")
        _save_weights(lm, tmp / "model.safetensors")
        (tmp / "versions.json").write_text(json.dumps(_versions(registry), indent=2) + "\n")

    return _write_atomically(Path(path), write)


def _save_weights(module: torch.nn.Module, path: Path) -> None:
    weights = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    save_file(weights, str(path), metadata={"format_version": str(FORMAT_VERSION)})


def _write_atomically(path: Path, write: Callable[[Path], None]) -> Path:
    """Fill a temporary sibling directory with ``write``, flush it to disk, then swap it in for ``path``.

    Where the system can (Linux), the swap is one atomic exchange: a reader finds
    the old package or the new one, never neither. The folder gets the usual
    mode (``0o777`` less the umask), not ``mkdtemp``'s private ``0o700``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        write(tmp)
        for file in tmp.iterdir():
            os.chmod(file, default_mode())  # safetensors writes 0o600
            fsync_file(file)
        os.chmod(tmp, default_mode(directory=True))
        fsync_directory(tmp)
        if path.exists() and exchange(tmp, path):
            shutil.rmtree(tmp)  # it now holds the old package
        elif path.exists():  # no atomic exchange here: a moment without either
            old = path.with_name(path.name + ".old")
            shutil.rmtree(old, ignore_errors=True)
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    fsync_directory(path.parent)
    return path


def _versions(registry: Registry | None) -> dict:
    from importlib.metadata import version

    versions = {"python": platform.python_version(), "torch": torch.__version__}
    for dist in ("asr-s2s", "torchaudio", "safetensors"):
        try:
            versions[dist] = version(dist)
        except Exception:  # noqa: BLE001 - not installed as a distribution
            versions[dist] = "unknown"
    if registry is not None:
        versions["plugins"] = sorted({c.distribution for c in registry.components()})
    return versions


def load_package(path: str | os.PathLike, registry: Registry | None = None) -> tuple[ASRModel, ExperimentConfig]:
    """Load a package directory written by :func:`save_package`.

    :returns: the model in eval mode, and its config (train options at defaults).
    :raises ModelPackageError: naming the missing, corrupt or mismatched file.
    """
    path = Path(path)
    if not path.is_dir():
        raise ModelPackageError(f"{path}: no such model directory")
    raw = _read_config(path, FILES, kind=None)
    registry = registry or Registry()
    try:
        config = ExperimentConfig(
            model=from_dict(ModelConfig, raw.get("model", {}), "model"),
            decode=_package_paths(from_dict(DecodeConfig, raw.get("decode", {}), "decode"), path, registry),
        )
    except (ConfigError, AttributeError) as exc:
        raise ModelPackageError(f"{path / 'config.yaml'}: {exc}") from None
    try:
        tokenizer = CharTokenizer.load(path / "tokens.txt")
        cmvn = CMVNStats.load(path / "cmvn.json")
    except Exception as exc:  # noqa: BLE001 - any parse failure means a broken package
        raise ModelPackageError(f"{path}: unreadable tokens.txt or cmvn.json: {exc}") from None
    model = _build_checked(lambda: ASRModel(config.model, tokenizer, cmvn, registry), path, len(tokenizer))
    return model.eval(), config


def load_lm_package(path: str | os.PathLike, registry: Registry | None = None) -> tuple[LanguageModel, CharTokenizer]:
    """Load a language-model package written by :func:`save_lm_package`.

    :returns: the model in eval mode and its tokenizer.
    :raises ModelPackageError: naming the missing, corrupt or mismatched file.
    """
    path = Path(path)
    raw = _read_config(path, LM_FILES, kind=LM_KIND)
    try:
        tokenizer = CharTokenizer.load(path / "tokens.txt")
    except Exception as exc:  # noqa: BLE001 - any parse failure means a broken package
        raise ModelPackageError(f"{path}: unreadable tokens.txt: {exc}") from None
    config = raw.get("lm")
    if not isinstance(config, dict):
        raise ModelPackageError(f"{path / 'config.yaml'}: 'lm' must be a mapping such as {{name: lstm, ...}}")
    registry = registry or Registry()
    lm = _build_checked(lambda: registry.build("lm", config, "lm", vocab_size=len(tokenizer)), path, len(tokenizer))
    return lm.eval(), tokenizer


def load_lm_package_for(model: ASRModel, path: str | os.PathLike, registry: Registry | None = None) -> LanguageModel:
    """Load a language-model package whose tokens are ``model``'s, on ``model``'s device, in eval mode.

    :raises ModelPackageError: for a broken package or a different token list.
    """
    lm, tokenizer = load_lm_package(path, registry)
    if tokenizer.tokens != model.tokenizer.tokens:
        raise ModelPackageError(
            f"{path}: the language model's tokens.txt ({len(tokenizer)} tokens) differs from the "
            f"acoustic model's ({model.vocab_size} tokens); train the LM with the same tokens"
        )
    return lm.to(next(model.parameters()).device).eval()


def init_decoder_from_lm(model: ASRModel, path: str | os.PathLike, registry: Registry | None = None) -> None:
    """Start ``model``'s decoder from the language-model package at ``path`` (its matching weights).

    :raises ModelPackageError: for a broken package or a different token list.
    :raises ConfigError: when the decoder cannot take the LM's weights (kind or sizes).
    """
    if type(model.decoder).init_from_language_model is Decoder.init_from_language_model:
        raise ConfigError(f"decoder {model.decoder.name!r} cannot start from a language model")
    lm = load_lm_package_for(model, path, registry)
    try:
        model.decoder.init_from_language_model(lm)
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def _read_config(path: Path, files: tuple[str, ...], kind: str | None) -> dict:
    """config.yaml of a package holding ``files``, checked for format version and kind."""
    if not path.is_dir():
        raise ModelPackageError(f"{path}: no such model directory")
    what = "language-model package" if kind == LM_KIND else "model package"
    linked = [f for f in files if (path / f).is_symlink()]
    if linked:  # its target could be any file, and messages would quote it
        raise ModelPackageError(f"{path}: {', '.join(linked)} is a symbolic link; a {what} must hold its own files "
                                "(copy them in)")
    raw = None
    if (path / "config.yaml").is_file():
        try:
            raw = yaml.safe_load((path / "config.yaml").read_text())
        except yaml.YAMLError as exc:
            raise ModelPackageError(f"{path / 'config.yaml'}: {exc}") from None
        if not isinstance(raw, dict):
            raise ModelPackageError(f"{path / 'config.yaml'}: expected a mapping, got {type(raw).__name__}")
        found = raw.pop("kind", None)
        if found != kind:
            other = "a language-model package (from train-lm)" if found == LM_KIND else "an acoustic model package"
            raise ModelPackageError(f"{path}: this is {other}, not a {what}")
    missing = [f for f in files if not (path / f).is_file()]
    if missing:
        raise ModelPackageError(f"{path}: not a {what}; missing {', '.join(missing)}")
    version = raw.pop("format_version", None)
    if version != FORMAT_VERSION:
        raise ModelPackageError(f"{path / 'config.yaml'}: format_version {version!r}; this asr-s2s reads {FORMAT_VERSION}")
    return raw


def _package_paths(decode: DecodeConfig, package: Path, registry: Registry) -> DecodeConfig:
    """``decode`` with each scorer's path params (``Scorer.path_params``) resolved inside ``package``.

    A package is untrusted: its config may name its own files (a bundled n-gram LM,
    a hotword list), never ``/etc/passwd`` or ``/dev/zero``.
    """
    root = package.resolve()
    params = {name: dict(p) for name, p in decode.scorer_params.items()}
    for name, given in params.items():
        try:
            path_params = registry.get("scorer", name).cls.path_params
        except AsrS2SError:
            continue  # an unknown scorer fails with its own message when the search is built
        for key in (k for k in path_params if given.get(k) is not None):
            where = root / str(given[key])
            inside = where.resolve()
            if not (inside.is_relative_to(root) and (inside.is_file() or inside.is_dir())):
                raise ConfigError(
                    f"decode.scorer_params.{name}.{key}: {str(given[key])!r} is not a file inside the package; "
                    f"a package may name only its own files (give another path yourself: --scorer-param "
                    f"{name}.{key}=PATH, or scorer_params in Python)"
                )
            given[key] = str(inside)
    return dataclasses.replace(decode, scorer_params=params)


def _build_checked(build: Callable[[], torch.nn.Module], package: Path, num_tokens: int) -> torch.nn.Module:
    """``build()`` with the package's weights, once the config's shapes match the weights file's header.

    The check builds on the ``meta`` device first, so a huge size in a config costs no memory.
    """
    weights_file, against = package / "model.safetensors", f"config.yaml/tokens.txt ({num_tokens} tokens)"
    try:
        with torch.device("meta"):
            expected = {k: tuple(v.shape) for k, v in build().state_dict().items()}
    except ConfigError as exc:
        raise ModelPackageError(f"{package / 'config.yaml'}: {exc}") from None
    try:
        with safe_open(str(weights_file), "pt") as weights:
            found = {k: tuple(weights.get_slice(k).get_shape()) for k in weights.keys()}  # noqa: SIM118
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelPackageError(f"{weights_file}: corrupt or truncated weights ({exc})") from None
    if found != expected:
        raise ModelPackageError(f"{weights_file}: weights do not match {against}: {_shape_difference(expected, found)}")
    module = build()
    _load_weights(module, weights_file, against)
    return module


def _shape_difference(expected: dict[str, tuple], found: dict[str, tuple]) -> str:
    missing, unexpected = sorted(expected.keys() - found.keys()), sorted(found.keys() - expected.keys())
    wrong = [f"{k}: config gives {expected[k]}, weights hold {found[k]}"
             for k in sorted(expected.keys() & found.keys()) if expected[k] != found[k]]
    parts = ([f"missing {', '.join(missing[:5])}"] if missing else []) + (
        [f"unexpected {', '.join(unexpected[:5])}"] if unexpected else []) + wrong[:5]
    return "; ".join(parts)


def _load_weights(module: torch.nn.Module, weights_file: Path, against: str) -> None:
    try:
        weights = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelPackageError(f"{weights_file}: corrupt or truncated weights ({exc})") from None
    try:
        module.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        detail = str(exc).split("\n", 1)[-1].strip()
        raise ModelPackageError(f"{weights_file}: weights do not match {against}: {detail}") from None


def model_id_of(path: str | os.PathLike) -> str:
    """``NAME@sha256:HEX`` of a model package: its folder (and parent) name and a digest of its weights."""
    path = Path(path).resolve()
    digest = hashlib.sha256()
    with open(path / "model.safetensors", "rb") as weights:
        for chunk in iter(lambda: weights.read(1 << 20), b""):
            digest.update(chunk)
    name = f"{path.parent.name}/{path.name}" if path.parent.name else path.name
    return f"{name}@sha256:{digest.hexdigest()[:16]}"
