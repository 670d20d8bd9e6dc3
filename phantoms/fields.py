"""Smooth random fields and warps on a grid: the building block of deformations, textures, bias and lesion borders.

Fields are drawn on a coarse grid and upsampled, because filtering white noise on the full 1 mm grid costs seconds
per field while a coarse draw costs milliseconds and gives the same spectrum at these correlation lengths.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["integrate_velocity", "resize", "smooth_noise", "warp"]


def resize(volume: np.ndarray, shape: Sequence[int], order: int = 1) -> np.ndarray:
    """Resample ``volume`` to exactly ``shape`` (corners aligned), as float32."""
    factors = [s / v for s, v in zip(shape, volume.shape, strict=True)]
    out = ndimage.zoom(volume.astype(np.float32, copy=False), factors, order=order, mode="nearest", prefilter=order > 1)
    if out.shape != tuple(shape):  # zoom rounds the output shape; pad/crop the odd voxel
        pad = [(0, max(0, s - o)) for s, o in zip(shape, out.shape, strict=True)]
        out = np.pad(out, pad, mode="edge")[tuple(slice(0, s) for s in shape)]
    return out


def smooth_noise(
    shape: Sequence[int], spacing: float, corr_mm: float, rng: np.random.Generator, order: int = 1
) -> np.ndarray:
    """Zero-mean, unit-variance Gaussian random field with correlation length about ``corr_mm``."""
    step = max(corr_mm / 2.0, spacing)
    coarse_shape = [max(3, math.ceil(s * spacing / step) + 3) for s in shape]
    coarse = rng.standard_normal(coarse_shape, dtype=np.float32)
    coarse = ndimage.gaussian_filter(coarse, sigma=1.0, mode="wrap")
    field = resize(coarse, shape, order=order)
    field -= field.mean()
    std = float(field.std())
    if std > 0:
        field /= std
    return field


def integrate_velocity(velocity: np.ndarray, steps: int = 6) -> np.ndarray:
    """Displacement of the flow of a stationary velocity field (scaling and squaring), in the field's voxel units.

    ``velocity`` has shape ``(3, X, Y, Z)``. The result is diffeomorphic for smooth fields, so the subject warp
    never folds tissue.
    """
    disp = velocity / float(2**steps)
    grid = np.indices(velocity.shape[1:], dtype=np.float32)
    for _ in range(steps):
        coords = grid + disp
        disp = disp + np.stack([ndimage.map_coordinates(d, coords, order=1, mode="nearest") for d in disp])
    return disp.astype(np.float32)


def warp(volume: np.ndarray, coords: np.ndarray, order: int = 1, cval: float = 0.0) -> np.ndarray:
    """Sample ``volume`` at voxel coordinates ``coords`` (shape ``(3, *out_shape)``), as float32."""
    out = ndimage.map_coordinates(volume, coords, order=order, mode="constant", cval=cval, prefilter=False)
    return out.astype(np.float32, copy=False)
