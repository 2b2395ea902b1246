"""A trained model on disk: `weights.safetensors` (tensors only) + `config.json` (its settings).

Safetensors holds nothing but named arrays, so loading a model folder never runs code (unlike
pickle-based `.pt` files). The config records what is needed to rebuild the network and to use it
the same way it was trained: model name, format version, input size, normalisation, class names,
the training-data fingerprint when the caller gives one, and the SHA-256 of the weights file, so a
damaged or half-replaced pair of files is caught at load time instead of giving wrong answers.

Files are read and written as numpy arrays (safetensors' format is the same whichever framework
wrote it), so loading a numpy-only model never imports torch; the torch models convert their
tensors in `save_weights` and `restore_module`, importing torch only there.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from safetensors.numpy import load_file, save_file

from jewelrec.errors import NotReadyError
from jewelrec.home import atomic_path, atomic_write_json

WEIGHTS_FILE = "weights.safetensors"
CONFIG_FILE = "config.json"
FORMAT_VERSION = 1

if TYPE_CHECKING:
    import torch


def save_weights(folder: Path, state_dict: Mapping[str, Any], config: dict[str, Any]) -> None:
    """Write folder/weights.safetensors, then folder/config.json, each atomically. Values are
    numpy arrays or torch tensors (a torch module's state_dict).

    `config` must name the model ("model"); "version" defaults to FORMAT_VERSION. The config is
    written last and carries the weights' hash, so a reader never pairs it with other weights.
    """
    if "model" not in config:
        raise ValueError("a model config needs a 'model' name")
    folder = Path(folder)
    tensors = {key: _as_array(value) for key, value in state_dict.items()}
    weights_path = folder / WEIGHTS_FILE
    with atomic_path(weights_path) as tmp:
        save_file(tensors, str(tmp))
        digest = _sha256(tmp)
    atomic_write_json(
        folder / CONFIG_FILE,
        {"version": FORMAT_VERSION, **config, "weights_sha256": digest},
    )


def _as_array(value: Any) -> np.ndarray:
    """A contiguous numpy array from an array or a torch tensor (never importing torch)."""
    if hasattr(value, "detach"):
        value = value.detach().cpu().contiguous().numpy()
    return np.ascontiguousarray(value)


def load_weights(folder: Path) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Read a folder written by `save_weights` (arrays by name); NotReadyError when it is
    missing or damaged."""
    folder = Path(folder)
    config_path, weights_path = folder / CONFIG_FILE, folder / WEIGHTS_FILE
    if not config_path.is_file() or not weights_path.is_file():
        raise NotReadyError(
            f"no trained model in {folder} ({CONFIG_FILE} or {WEIGHTS_FILE} is missing): "
            "run `jewelrec train` first"
        )
    try:
        config = json.loads(config_path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise damaged_model_error(folder, f"unreadable {CONFIG_FILE}: {exc}") from exc
    if not isinstance(config, dict) or "model" not in config:
        raise damaged_model_error(folder, f"{CONFIG_FILE} does not describe a model")
    version = config.get("version", FORMAT_VERSION)
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise damaged_model_error(folder, f"unsupported format version {version!r}")
    expected = config.get("weights_sha256")
    if expected is not None and _sha256(weights_path) != expected:
        raise damaged_model_error(folder, f"{WEIGHTS_FILE} does not match {CONFIG_FILE}")
    try:
        state_dict = load_file(str(weights_path))
    except Exception as exc:  # safetensors raises its own error types for bad headers/data
        raise damaged_model_error(folder, f"unreadable {WEIGHTS_FILE}: {exc}") from exc
    return state_dict, config


def restore_module(
    module: torch.nn.Module, state_dict: Mapping[str, np.ndarray], folder: Path
) -> torch.nn.Module:
    """Load weights into a freshly built module (strict); a mismatch means a damaged folder."""
    import torch

    tensors = {key: torch.from_numpy(np.array(value)) for key, value in state_dict.items()}
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as exc:
        raise damaged_model_error(folder, f"weights do not fit the network: {exc}") from exc
    return module.eval()


def expect_model(config: dict[str, Any], name: str, folder: Path) -> None:
    """Refuse a folder that holds a different model than the class loading it."""
    if config.get("model") != name:
        raise damaged_model_error(folder, f"it holds model {config.get('model')!r}, not {name!r}")


def damaged_model_error(folder: Path, reason: str) -> NotReadyError:
    """The one message for a model folder that cannot be used: what is wrong, and the fix."""
    return NotReadyError(
        f"the model in {folder} cannot be loaded ({reason}): run `jewelrec train` to rebuild it"
    )


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
