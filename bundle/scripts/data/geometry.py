"""Resampling between voxel grids given their RAS voxel-to-world affines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage


def resample(
    array: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: Sequence[int],
    order: int = 1,
    world: np.ndarray | None = None,
    dtype: np.dtype | type | None = np.float32,
) -> np.ndarray:
    """Sample ``array`` (``[C,] X, Y, Z`` on ``src_affine``) on the grid ``dst_affine``/``dst_shape``, 0 outside;
    ``world`` (4x4) maps destination to source world coordinates (a registration); ``dtype=None``: the input's."""
    world = np.eye(4) if world is None else np.asarray(world, dtype=float)
    vox = np.linalg.inv(np.asarray(src_affine, float)) @ world @ np.asarray(dst_affine, float)
    shape, planes = tuple(dst_shape), array[None] if array.ndim == 3 else array
    # a 4x4 (homogeneous) matrix carries the offset too
    out = np.stack(
        [ndimage.affine_transform(np.asarray(c, np.float32), vox, output_shape=shape, order=order) for c in planes]
    )
    out = out.astype(array.dtype if dtype is None else dtype, copy=False)
    return out[0] if array.ndim == 3 else out
