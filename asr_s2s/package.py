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

import json
import os
import platform
import shutil
import tempfile
from pathlib import Path

import torch
import yaml
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from asr_s2s.config import DecodeConfig, ExperimentConfig, ModelConfig, from_dict, to_dict
from asr_s2s.errors import ConfigError, ModelPackageError
from asr_s2s.features import CMVNStats
from asr_s2s.model import ASRModel
from asr_s2s.plugins import Registry
from asr_s2s.tokenizer import CharTokenizer

FORMAT_VERSION = 1
FILES = ("config.yaml", "tokens.txt", "cmvn.json", "model.safetensors", "versions.json")


def save_package(model: ASRModel, decode: DecodeConfig, path: str | os.PathLike, registry: Registry | None = None) -> Path:
    """Write ``model`` as a package directory, atomically replacing any old one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    config = {"format_version": FORMAT_VERSION, "model": to_dict(model.config), "decode": to_dict(decode)}
    (tmp / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    model.tokenizer.save(tmp / "tokens.txt")
    model.frontend.cmvn.save(tmp / "cmvn.json")
    weights = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(tmp / "model.safetensors"), metadata={"format_version": str(FORMAT_VERSION)})
    (tmp / "versions.json").write_text(json.dumps(_versions(registry), indent=2) + "\n")
    if path.exists():
        old = path.with_name(path.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(path, old)
        os.replace(tmp, path)
        shutil.rmtree(old)
    else:
        os.replace(tmp, path)
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
    missing = [f for f in FILES if not (path / f).is_file()]
    if missing:
        raise ModelPackageError(f"{path}: not a model package; missing {', '.join(missing)}")
    try:
        raw = yaml.safe_load((path / "config.yaml").read_text())
        if not isinstance(raw, dict):
            raise ConfigError(f"expected a mapping, got {type(raw).__name__}")
        version = raw.pop("format_version", None)
        if version != FORMAT_VERSION:
            raise ModelPackageError(f"{path / 'config.yaml'}: format_version {version!r}; this asr-s2s reads {FORMAT_VERSION}")
        config = ExperimentConfig(
            model=from_dict(ModelConfig, raw.get("model", {}), "model"),
            decode=from_dict(DecodeConfig, raw.get("decode", {}), "decode"),
        )
    except (yaml.YAMLError, ConfigError, AttributeError) as exc:
        raise ModelPackageError(f"{path / 'config.yaml'}: {exc}") from None
    try:
        tokenizer = CharTokenizer.load(path / "tokens.txt")
        cmvn = CMVNStats.load(path / "cmvn.json")
    except Exception as exc:  # noqa: BLE001 - any parse failure means a broken package
        raise ModelPackageError(f"{path}: unreadable tokens.txt or cmvn.json: {exc}") from None
    model = ASRModel(config.model, tokenizer, cmvn, registry or Registry())
    weights_file = path / "model.safetensors"
    try:
        weights = load_file(str(weights_file))
    except (SafetensorError, OSError, ValueError) as exc:
        raise ModelPackageError(f"{weights_file}: corrupt or truncated weights ({exc})") from None
    try:
        model.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        detail = str(exc).split("\n", 1)[-1].strip()
        raise ModelPackageError(
            f"{weights_file}: weights do not match config.yaml/tokens.txt ({len(tokenizer)} tokens): {detail}"
        ) from None
    return model.eval(), config


