"""Resampling between voxel grids given their RAS voxel-to-world affines."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["resample"]


def resample(
    array: np.ndarray,
    src_affine: np.ndarray,
    dst_affine: np.ndarray,
    dst_shape: Sequence[int],
    order: int = 1,
    world: np.ndarray | None = None,
    dtype: np.dtype | type | None = np.float32,
) -> np.ndarray:
    """Sample ``array`` (``C, X, Y, Z`` or ``X, Y, Z`` on ``src_affine``) on the grid ``dst_affine``/``dst_shape``.

    ``world`` (4x4, optional) maps destination world coordinates to source world coordinates, e.g. a registration.
    Points outside the source are 0; ``order`` 0 is nearest neighbour (labels), 1 trilinear. The result is
    ``dtype`` (``None``: the input's).
    """
    world = np.eye(4) if world is None else np.asarray(world, dtype=float)
    vox = np.linalg.inv(np.asarray(src_affine, float)) @ world @ np.asarray(dst_affine, float)
    channels = array[None] if array.ndim == 3 else array
    out = np.stack(
        [
            ndimage.affine_transform(
                np.asarray(c, dtype=np.float32), vox[:3, :3], vox[:3, 3], output_shape=tuple(dst_shape), order=order
            )
            for c in channels
        ]
    )
    out = out.astype(array.dtype if dtype is None else dtype, copy=False)
    return out[0] if array.ndim == 3 else out
