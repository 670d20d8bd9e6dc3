"""Weights that describe themselves: ``model.pt`` is ``{"model": state_dict, "mome": record}``.

The record (:data:`FIELDS`) is what the weights were made with: inference, evaluation and MONAI Label take those
knobs from it and refuse a contradicting one. Files without one load with the knobs given (preset from shapes)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from scripts.errors import InputError

KEY = "mome"
FIELDS = (
    "network", "preset", "modalities", "num_classes", "gate_activation",
    "spacing", "register", "normalization", "patch_size",
)  # fmt: skip
#: What to run for weights of another network than the config builds.
NETWORK_CONFIGS = {
    "MoME": "use configs/inference.json (one image of any sequence)",
    "MoMEPlus": "use configs/inference.json with configs/inference_plus.json (cases of several sequences)",
    "ZeroFillUNet": "evaluate it with configs/train_plus_baseline.json before evaluate.json and evaluate_plus.json",
}
#: z-score over the brain (non-zero voxels) or the whole crop box (the reference's plan: the official weights').
NORMALIZATIONS = ("brain", "box")


class Record:
    """The record as an object with ``state_dict``, so MONAI's checkpoint saver writes it next to the weights."""

    def __init__(self, **fields: Any) -> None:
        if unknown := sorted(set(fields) - set(FIELDS)):
            raise ValueError(f"unknown record field(s) {unknown}; expected {FIELDS}")
        if fields.get("normalization") not in (None, *NORMALIZATIONS):
            raise InputError(f"--normalization {fields['normalization']!r}: expected one of {NORMALIZATIONS}")
        self.fields = {k: _plain(v) for k, v in fields.items()}

    def state_dict(self) -> dict:
        return dict(self.fields)

    def load_state_dict(self, state: Mapping) -> None:
        self.fields = dict(state)


def _plain(v: Any) -> Any:
    if isinstance(v, (tuple, list)):
        return [_plain(x) for x in v]
    if isinstance(v, torch.Tensor):
        return v.tolist()
    return v


def read(path: str | Path | None) -> dict | None:
    """The record of a weights file; without one ``{"preset": <from the tensor shapes>}``; ``None`` for no file."""
    if path is None or not Path(path).is_file():
        return None
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as e:
        why = " ".join(str(e).split())[:200]
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__}: {why})") from e
    if not isinstance(ckpt, Mapping):
        raise InputError(f"{path}: expected {{'model': state_dict, 'mome': record}}, found a {type(ckpt).__name__}")
    if isinstance(ckpt.get(KEY), Mapping):
        return dict(ckpt[KEY])
    from scripts.mome import preset_of

    try:
        return {"preset": preset_of(ckpt.get("model", ckpt))}
    except ValueError:
        return {}


def value(record: Mapping | None, name: str, default: Any) -> Any:
    """A knob's value from the record, else ``default``."""
    return record[name] if record and name in record else default


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (int, float)) and isinstance(b, (int, float)) and not isinstance(a, bool):
        return math.isclose(float(a), float(b), rel_tol=1e-6)
    return _plain(a) == _plain(b)


def check(path: str | Path | None, record: Mapping | None, **knobs: Any) -> bool:
    """Every knob given agrees with the record of the weights at ``path``; refuses naming both values."""
    if not record:
        return True
    if "network" in knobs and "network" in record and knobs["network"] != record["network"]:
        raise InputError(
            f"{path} holds {record['network']} weights and this config builds a {knobs['network']}: "
            + NETWORK_CONFIGS.get(str(record["network"]), "use the configs the weights were trained with")
        )
    wrong = [f"--{k} {v!r} (the weights say {record[k]!r})" for k, v in knobs.items()
             if k in record and not _same(v, record[k])]  # fmt: skip
    if wrong:
        raise InputError(
            f"{path} was made for other settings than given: {'; '.join(wrong)}. Drop these options to use the "
            "weights' own, or use weights made with them"
        )
    return True
