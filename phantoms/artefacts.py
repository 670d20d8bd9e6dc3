"""Acquisition artefacts (§2.8): slice-thickness blur, smooth bias field, Rician noise."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import ndimage

from phantoms import fields

__all__ = ["bias_field", "rician", "slice_blur"]

_FWHM = 2.0 * math.sqrt(2.0 * math.log(2.0))


def slice_blur(volume: np.ndarray, spacing: float, inplane_mm: float, slice_mm: float) -> np.ndarray:
    """Gaussian slice profile (FWHM = acquired voxel size) on top of the working grid's own resolution.

    Slices are axial (the third axis). A voxel size at or below the grid spacing leaves that axis untouched.
    """
    sig = []
    for fwhm in (inplane_mm, inplane_mm, slice_mm):
        extra = math.sqrt(max(fwhm**2 - spacing**2, 0.0)) / _FWHM / spacing
        sig.append(extra if extra > 0.15 else 0.0)
    if not any(sig):
        return volume
    return ndimage.gaussian_filter(volume, sigma=sig, mode="nearest").astype(np.float32)


def bias_field(
    shape: Sequence[int], spacing: float, brain: np.ndarray, max_over_min: float, rng: np.random.Generator
) -> np.ndarray:
    """Multiplicative coil-sensitivity field: exp of a smooth ~5^3 random grid, scaled to ``max/min`` over the brain."""
    coarse = rng.standard_normal((5, 5, 5), dtype=np.float32)
    field = fields.resize(coarse, shape, order=3)
    inside = field[brain] if brain.any() else field.ravel()
    lo, hi = float(inside.min()), float(inside.max())
    log_field = (field - 0.5 * (lo + hi)) * (math.log(max_over_min) / max(hi - lo, 1e-6))
    return np.exp(log_field).astype(np.float32)


def rician(signal: np.ndarray, sigma: float, rng: np.random.Generator) -> np.ndarray:
    """|S + sigma (n1 + i n2)|: Rician in tissue, Rayleigh in the background (noise added after the bias field)."""
    n1 = rng.standard_normal(signal.shape, dtype=np.float32)
    n2 = rng.standard_normal(signal.shape, dtype=np.float32)
    re = signal + np.float32(sigma) * n1
    im = np.float32(sigma) * n2
    return np.sqrt(re * re + im * im).astype(np.float32)
