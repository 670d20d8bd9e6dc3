"""Whole-volume inference: sliding window with Gaussian blending, optional mirroring TTA and bf16 autocast.

Window outputs are accumulated in float32 whatever the autocast dtype (the reference accumulates in float16, which
can overflow with MoME's unbounded fused logits). Also: the image list an inference run works on.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import numpy as np
import torch
from monai.inferers import Inferer, sliding_window_inference

from scripts.errors import InputError
from scripts.io import SUFFIXES, check_image, has_image_suffix
from scripts.precision import BF16_CHOICES, bf16_autocast

__all__ = [
    "AutocastInferer",
    "MirroredSlidingWindowInferer",
    "gaussian_weights",
    "list_images",
    "missing_weights",
    "whole_window",
]


def _float32(out):
    """Every tensor of a network output (a tensor, or dicts/lists of them, as MoME's training forward returns)."""
    if isinstance(out, dict):
        return {k: _float32(v) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_float32(v) for v in out)
    return out.float()


class AutocastInferer(Inferer):
    """One forward of the whole patch (as ``SimpleInferer``) under bfloat16 autocast where the device has native
    bf16 (:mod:`scripts.precision`), outputs returned in float32 so that the loss, the curriculum and the metrics
    are computed in float32. ``channels_last``: the input in channels-last-3d memory order (the network's
    parameters should be too), which oneDNN's bf16 convolutions run fastest in.
    """

    def __init__(self, bf16: bool | str = False, channels_last: bool = False) -> None:
        super().__init__()
        if bf16 not in BF16_CHOICES:
            raise InputError(f"--bf16 must be True, False or force, got {bf16!r}")
        self.bf16, self.channels_last = bf16, bool(channels_last)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs):
        if self.channels_last and inputs.ndim == 5:
            inputs = inputs.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16_autocast(self.bf16, inputs.device)):
            return _float32(network(inputs, *args, **kwargs))


def _flip(out, dims: tuple[int, ...]):
    if not dims:
        return out
    if isinstance(out, dict):
        return {k: torch.flip(v, dims) for k, v in out.items()}
    return torch.flip(out, dims)


def gaussian_weights(roi: Sequence[int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """nnU-Net's blending weights for one window: a discrete Gaussian (sigma = roi / 8) around voxel ``roi // 2``,
    scaled to a maximum of 1, its zeros set to the smallest non-zero weight.

    MONAI's own Gaussian clamps every weight below 1e-3 of the maximum, so near window corners two overlapping
    windows get equal weights where nnU-Net (which the official weights were validated with) lets the window whose
    centre is nearer dominate; with these weights our sliding window blends as nnU-Net's does.
    """
    from scipy.ndimage import gaussian_filter

    delta = np.zeros(tuple(int(r) for r in roi), np.float64)
    delta[tuple(int(r) // 2 for r in roi)] = 1.0
    weights = gaussian_filter(delta, [r * sigma_scale for r in roi], 0, mode="constant", cval=0)
    weights /= weights.max()
    weights[weights == 0] = weights[weights > 0].min()
    return torch.as_tensor(weights, dtype=torch.float32)


def whole_window(shape: Sequence[int], divisor: int) -> list[int]:
    """One window over a whole image: each axis rounded up to a multiple of the network's stride."""
    return [int(math.ceil(int(s) / divisor) * divisor) for s in shape]


class MirroredSlidingWindowInferer(Inferer):
    """MONAI's sliding window averaged over all mirror combinations of ``mirror_axes`` (nnU-Net TTA), with
    nnU-Net's Gaussian blending (:func:`gaussian_weights`).

    ``roi_size=None`` runs one window over the whole image (padded to a multiple of ``divisor``, the network's
    stride): the fast default, where the lean eval forward keeps memory to about one U-Net's.
    ``mirror_axes=(0, 1, 2)`` gives nnU-Net's 8 passes; ``()`` a single pass. With ``bf16`` the network runs under
    bfloat16 autocast where the device has native bf16 (:mod:`scripts.precision`; ``"force"``: always). Networks
    returning a dict (``MoME(..., with_aux=True)``) are handled per key.
    """

    def __init__(
        self,
        roi_size: Sequence[int] | None,
        overlap: float = 0.5,
        sw_batch_size: int = 1,
        mode: str = "gaussian",
        mirror_axes: Sequence[int] = (),
        bf16: bool | str = False,
        divisor: int = 32,
        **network_kwargs,
    ) -> None:
        super().__init__()
        self.roi_size = None if roi_size is None else [int(r) for r in roi_size]
        self.window_kwargs = {"sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode}
        self.mirror_axes = tuple(int(a) for a in mirror_axes)
        if bf16 not in BF16_CHOICES:
            raise InputError(f"--bf16 must be True, False or force, got {bf16!r}")
        self.bf16 = bf16
        self.divisor = int(divisor)
        self.network_kwargs = network_kwargs

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs):
        bf16 = bf16_autocast(self.bf16, inputs.device)

        def run(x: torch.Tensor):
            with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=bf16):
                return _float32(network(x, *args, **self.network_kwargs, **kwargs))

        roi = self.roi_size or whole_window(inputs.shape[2:], self.divisor)
        weights = None
        if self.window_kwargs["mode"] == "gaussian" and self.roi_size is not None:
            weights = gaussian_weights(roi).to(inputs.device)
        window = partial(sliding_window_inference, roi_size=roi, roi_weight_map=weights, **self.window_kwargs)
        total, count = None, 0
        for n in range(len(self.mirror_axes) + 1):
            for axes in itertools.combinations(self.mirror_axes, n):
                dims = tuple(2 + a for a in axes)
                out = _flip(window(_flip(inputs, dims), predictor=run), dims)
                if total is None:
                    total = out
                elif isinstance(out, dict):
                    total = {k: total[k] + v for k, v in out.items()}
                else:
                    total = total + out
                count += 1
        if isinstance(total, dict):
            return {k: v / count for k, v in total.items()}
        return total / count


def list_images(inputs: str | Sequence[str]) -> list[dict]:
    """``[{"image": path}, ...]`` for image files and/or folders of images (any modality, no label needed).

    Every file is checked completely (:func:`scripts.io.check_image`) before inference starts, so a missing,
    corrupt, 4D or NaN-filled file stops the run with its name instead of failing later or being skipped.
    """
    if isinstance(inputs, (str, Path)):
        inputs = [inputs]
    files: list[Path] = []
    for entry in inputs:
        path = Path(entry)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and has_image_suffix(p))
            if not found:
                raise InputError(f"no images ({', '.join(SUFFIXES)}) in folder {path}")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise InputError(f"input image or folder not found: {path}")
    for path in files:
        check_image(path)
    return [{"image": str(p)} for p in files]


def missing_weights(path: str | Path) -> None:
    """Stop with a message that says how to get weights (the bundle ships none)."""
    raise InputError(
        f"no trained weights at {path}. Train first (python -m monai.bundle run --config_file configs/train.json "
        "--dataset_dir DIR), convert the official release (python -m scripts.convert_official --src DIR), "
        "or point --ckpt_path at a model.pt"
    )
