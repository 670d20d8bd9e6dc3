"""Access to the MoME bundle from the app: its code (the ``scripts`` package) and the weights the app serves.

The bundle is only read, never written: fine-tuned weights go to the app's own model folder. Weights are looked up
in that folder first and in the bundle's ``models/`` second, so a bundle trained on the command line is served
until the first fine-tuning replaces it.
"""

from __future__ import annotations

import importlib
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import torch

__all__ = ["ServedWeights", "bundle_module", "load_state_dict", "served_weights"]

_lock = threading.Lock()
_records: dict[tuple[str, str], dict] = {}


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
    """The weights file that answers requests now. ``version`` changes whenever training replaces the file;
    ``record`` is what the file says about itself (``scripts.record``: preset, spacing, registration, ...)."""

    path: Path
    version: str
    preset: str
    record: dict = field(default_factory=dict)


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
    """The first existing file among ``candidates``, with its version and record; ``None`` if there is none.

    The record is read once per file version (``scripts.record.read``: the file's own record, or for an older file
    the preset from its tensor shapes); the file is memory-mapped for that, so asking is cheap even for the
    187 M-parameter paper network.
    """
    for path in candidates:
        if path is None or not path.is_file():
            continue
        stat = path.stat()
        version = f"{stat.st_mtime_ns}-{stat.st_size}"
        key = (str(path), version)
        with _lock:
            record = _records.get(key)
        if record is None:
            try:
                record = bundle_module(bundle, "scripts.record").read(path) or {}
            except ValueError as e:  # InputError: not a readable weights file
                raise ValueError(str(e)) from e
            if "preset" not in record:
                raise ValueError(f"{path}: state dict matches no MoME preset")
            with _lock:
                _records[key] = record
        return ServedWeights(path=path, version=version, preset=record["preset"], record=dict(record))
    return None
