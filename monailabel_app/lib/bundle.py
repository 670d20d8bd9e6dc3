"""Access to the MoME bundle from the app: its code (the ``scripts`` package) and the weights the app serves.

The bundle is only read, never written: fine-tuned weights go to the app's own model folder. Weights are looked up
in that folder first and in the bundle's ``models/`` second, so a bundle trained on the command line is served
until the first fine-tuning replaces it.
"""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["ServedWeights", "bundle_module", "load_state_dict", "served_weights"]

_lock = threading.Lock()
_presets: dict[tuple[str, str], str] = {}


def bundle_module(bundle: Path, name: str) -> ModuleType:
    """Import ``name`` (``scripts.mome``, ``scripts.data.modality``) from the bundle folder.

    MONAI Label unloads ``scripts`` around every bundle call, so the folder is put on the path for the import.
    """
    path = str(bundle)
    with _lock:
        added = path not in sys.path
        if added:
            sys.path.insert(0, path)
        try:
            return importlib.import_module(name)
        finally:
            if added:
                sys.path.remove(path)


@dataclass(frozen=True)
class ServedWeights:
    """The weights file that answers requests now. ``version`` changes whenever training replaces the file."""

    path: Path
    version: str
    preset: str


def load_state_dict(path: Path, map_location: str | torch.device = "cpu", mmap: bool = False) -> dict:
    """The network state dict of a bundle checkpoint (``{"model": state_dict}`` or a bare state dict)."""
    try:
        checkpoint = torch.load(path, map_location=map_location, weights_only=True, mmap=mmap)
    except Exception as e:
        raise ValueError(f"{path} is not a readable PyTorch checkpoint: {e}") from e
    state = checkpoint.get("model", checkpoint) if isinstance(checkpoint, dict) else None
    if not isinstance(state, dict):
        raise ValueError(f"{path} holds no state dict (expected {{'model': state_dict}})")
    return state


def served_weights(candidates: list[Path | None], bundle: Path) -> ServedWeights | None:
    """The first existing file among ``candidates``, with its version and MoME preset; ``None`` if there is none.

    The preset is read from the tensor shapes (``scripts.mome.preset_of``) once per file version; the file is
    memory-mapped for that, so asking is cheap even for the 187 M-parameter paper network.
    """
    for path in candidates:
        if path is None or not path.is_file():
            continue
        stat = path.stat()
        version = f"{stat.st_mtime_ns}-{stat.st_size}"
        key = (str(path), version)
        with _lock:
            preset = _presets.get(key)
        if preset is None:
            state = load_state_dict(path, mmap=True)
            try:
                preset = bundle_module(bundle, "scripts.mome").preset_of(state)
            except ValueError as e:
                raise ValueError(f"{path}: {e}") from e
            with _lock:
                _presets[key] = preset
        return ServedWeights(path=path, version=version, preset=preset)
    return None
