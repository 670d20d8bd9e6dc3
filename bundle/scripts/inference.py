"""Whole-volume inference: sliding window with Gaussian blending, optional mirroring TTA and bf16 autocast, window
outputs accumulated in float32 (the reference accumulates in float16, which can overflow with MoME's unbounded fused
logits)."""

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
from scripts.precision import BF16_CHOICES, bf16_autocast


def _map(fn: Callable, out, *more):
    """``fn`` on every tensor of a network output (a tensor, or dicts/lists of them), and those of ``more`` with it."""
    if isinstance(out, dict):
        return {k: _map(fn, v, *(m[k] for m in more)) for k, v in out.items()}
    if isinstance(out, (list, tuple)):
        return type(out)(_map(fn, *vs) for vs in zip(out, *more, strict=True))
    return fn(out, *more)


class AutocastInferer(Inferer):
    """One forward of the whole patch (as ``SimpleInferer``) under bf16 autocast where native (see
    :mod:`scripts.precision`), outputs in float32 for the loss and metrics. ``channels_last``: the input in
    channels-last-3d order (the network's parameters should be too), which oneDNN's bf16 convolutions run fastest in."""

    def __init__(self, bf16: bool | str = False, channels_last: bool = False) -> None:
        super().__init__()
        if bf16 not in BF16_CHOICES:
            raise InputError(f"--bf16 must be True, False or force, got {bf16!r}")
        self.bf16, self.channels_last = bf16, bool(channels_last)

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs):
        if self.channels_last and inputs.ndim == 5:
            inputs = inputs.contiguous(memory_format=torch.channels_last_3d)
        with torch.autocast(inputs.device.type, dtype=torch.bfloat16, enabled=bf16_autocast(self.bf16, inputs.device)):
            return _map(torch.Tensor.float, network(inputs, *args, **kwargs))


def gaussian_weights(roi: Sequence[int], sigma_scale: float = 1 / 8) -> torch.Tensor:
    """nnU-Net's blending weights for one window: a discrete Gaussian (sigma = roi / 8) around voxel ``roi // 2``,
    scaled to a maximum of 1, its zeros set to the smallest non-zero weight. MONAI's Gaussian clamps weights below
    1e-3 of the maximum, so near window corners two overlapping windows weigh equally where nnU-Net (which the
    official weights were validated with) lets the nearer centre dominate."""
    from scipy.ndimage import gaussian_filter

    delta = np.zeros(tuple(int(r) for r in roi), np.float64)
    delta[tuple(int(r) // 2 for r in roi)] = 1.0
    weights = gaussian_filter(delta, [r * sigma_scale for r in roi], 0, mode="constant", cval=0)
    weights /= weights.max()
    weights[weights == 0] = weights[weights > 0].min()
    return torch.as_tensor(weights, dtype=torch.float32)


class MirroredSlidingWindowInferer(AutocastInferer):
    """MONAI's sliding window averaged over all mirror combinations of ``mirror_axes`` (nnU-Net TTA: ``(0, 1, 2)``
    gives its 8 passes), with nnU-Net's Gaussian blending (:func:`gaussian_weights`) and ``bf16`` as
    :class:`AutocastInferer`'s. ``roi_size=None`` runs one window over the whole image (padded to a multiple of
    ``divisor``, the network's stride): the fast default, where the lean eval forward keeps memory to about one
    U-Net's. Networks returning a dict (``MoME(..., with_aux=True)``) are handled per key."""

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
        super().__init__(bf16)
        self.roi_size = None if roi_size is None else [int(r) for r in roi_size]
        self.window_kwargs = {"sw_batch_size": sw_batch_size, "overlap": overlap, "mode": mode}
        self.mirror_axes = tuple(int(a) for a in mirror_axes)
        self.divisor, self.network_kwargs = int(divisor), network_kwargs

    def __call__(self, inputs: torch.Tensor, network: Callable, *args, **kwargs):
        def run(x: torch.Tensor):
            return AutocastInferer.__call__(self, x, network, *args, **self.network_kwargs, **kwargs)

        def flip(out, dims: tuple[int, ...]):
            return _map(lambda t: torch.flip(t, dims), out) if dims else out

        # one whole-image window: each axis rounded up to a multiple of the network's stride
        roi = self.roi_size or [math.ceil(s / self.divisor) * self.divisor for s in inputs.shape[2:]]
        gaussian = self.window_kwargs["mode"] == "gaussian" and self.roi_size is not None
        weights = gaussian_weights(roi).to(inputs.device) if gaussian else None
        window = partial(sliding_window_inference, roi_size=roi, roi_weight_map=weights, **self.window_kwargs)
        total, count = None, 0
        for n in range(len(self.mirror_axes) + 1):
            for axes in itertools.combinations(self.mirror_axes, n):
                dims = tuple(2 + a for a in axes)
                out = flip(window(flip(inputs, dims), predictor=run), dims)
                total = out if total is None else _map(torch.add, total, out)
                count += 1
        return _map(lambda t: t / count, total)


def missing_weights(path: str | Path) -> None:
    """Stop with a message that says how to get weights (the bundle ships none)."""
    raise InputError(
        f"no trained weights at {path}. Train first (python -m monai.bundle run --config_file configs/train.json "
        "--dataset_dir DIR), convert the official release (python -m scripts.convert_official --src DIR), "
        "or point --ckpt_path at a model.pt"
    )
