"""Checks on the configs' top-level knobs, run first in ``initialize``, before any data is read or network built.

``--register false`` is the truthy *string* ``"false"`` to Python Fire, which would silently switch both
preprocessing branches on; a negative epoch count or a bad patch would fail deep inside Ignite or the network."""

from __future__ import annotations

from collections.abc import Sequence

from scripts.errors import InputError
from scripts.mome import PRESETS, preset_stride


def check_bools(**knobs: object) -> bool:
    if bad := {name: value for name, value in knobs.items() if not isinstance(value, bool)}:
        listed = ", ".join(f"--{name} {value!r}" for name, value in bad.items())
        raise InputError(f"these options must be True or False (Python spelling, capitalised): {listed}")
    return True


def _number(name: str, value: object, ok=lambda v: v > 0, what: str = "a number > 0") -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not ok(value):
        raise InputError(f"--{name} {value!r}: expected {what}")


def _whole(name: str, value: object, least: int) -> None:
    _number(name, value, lambda v: isinstance(v, int) and v >= least, f"a whole number >= {least}")


def _preset(preset: object) -> int:
    if preset not in PRESETS:
        raise InputError(f"--preset {preset!r}: expected one of {', '.join(PRESETS)}")
    return preset_stride(str(preset))


def _size(name: str, value: object, stride: int, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    sizes = list(value) if isinstance(value, Sequence) and not isinstance(value, str) else None
    if sizes is None or len(sizes) != 3 or not all(isinstance(s, int) and not isinstance(s, bool) for s in sizes):
        raise InputError(f"--{name} {value!r}: expected three whole numbers, e.g. [128,128,128]")
    if any(s < stride or s % stride for s in sizes):
        raise InputError(
            f"--{name} {sizes}: every size must be a positive multiple of {stride} (the network's stride for this "
            f"preset), e.g. {[max(stride, round(s / stride) * stride) for s in sizes]}"
        )
    if all(s == stride for s in sizes):
        raise InputError(f"--{name} {sizes}: too small; at least one size must be >= {2 * stride}")


def check_training(
    preset: object,
    patch_size: object,
    epochs: object,
    batch_size: object,
    learning_rate: object,
    spacing: object,
    iterations_per_epoch: object = None,
    val_interval: object = 1,
    num_workers: object = 0,
    cache_rate: object = 1.0,
    sw_roi_size: object = None,
) -> bool:
    """The training knobs are numbers the trainer and the network can use."""
    stride = _preset(preset)
    _size("patch_size", patch_size, stride)
    _size("sw_roi_size", sw_roi_size, stride, allow_none=True)
    _whole("epochs", epochs, 1)
    _whole("batch_size", batch_size, 1)
    _whole("val_interval", val_interval, 1)
    _whole("num_workers", num_workers, 0)
    if iterations_per_epoch is not None:
        _whole("iterations_per_epoch", iterations_per_epoch, 1)
    _number("learning_rate", learning_rate)
    _number("spacing", spacing)
    _number("cache_rate", cache_rate, lambda v: 0 <= v <= 1, "a number between 0 and 1")
    return True


def check_inference(preset: object, spacing: object, overlap: object, sw_roi_size: object = None) -> bool:
    """The inference knobs are numbers the sliding window and the network can use."""
    stride = _preset(preset)
    _size("sw_roi_size", sw_roi_size, stride, allow_none=True)
    _number("spacing", spacing)
    _number("overlap", overlap, lambda v: 0 <= v < 1, "a number in [0, 1)")
    return True


def check_plus(register: object) -> bool:
    """MoME+ cases are segmented in their own space: template registration is the single-sequence model's."""
    if register:
        raise InputError(
            "--register True: MoME+ cases are not registered to the template (its weights are trained with "
            "--register False); use such weights, or the single-sequence inference.json"
        )
    return True
