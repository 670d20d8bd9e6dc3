"""Checks on what clients send: an image must be one readable 3D volume, a label must also fit its image.

Run before anything is stored or inferred, so a truncated upload, a 4D multi-sequence file or a label drawn on
another grid is refused with a message instead of failing later inside a transform (or, worse, training on it).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["VolumeError", "VolumeInfo", "check_image", "check_label", "read_volume"]

_NIFTI = (".nii", ".nii.gz")


class VolumeError(ValueError):
    """The file is not something the app can use; the message says why."""


@dataclass(frozen=True)
class VolumeInfo:
    shape: tuple[int, ...]
    affine: np.ndarray


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton axes past the third (a ``(x, y, z, 1)`` NIfTI is one 3D volume)."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def read_volume(path: str | Path, data: bool = True) -> tuple[VolumeInfo, np.ndarray | None]:
    """Shape and affine, and (``data=True``) the voxels, read completely so that a truncated file fails here."""
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path.name}: no such file")
    try:
        if path.name.lower().endswith(_NIFTI):
            img = nib.load(path)
            info = VolumeInfo(_squeeze(img.shape), np.asarray(img.affine))
            array = np.asarray(img.dataobj) if data else None
        else:
            from monai.transforms import LoadImage

            img = LoadImage(image_only=True)(str(path))
            info = VolumeInfo(_squeeze(tuple(img.shape)), np.asarray(img.affine))
            array = img.numpy() if data else None
    except Exception as e:  # nibabel, gzip and ITK raise many different types for a damaged file
        raise VolumeError(f"{path.name} could not be read as an image ({type(e).__name__}: {e})") from e
    return info, array


def check_image(path: str | Path) -> VolumeInfo:
    """One 3D single-channel image (MoME takes one sequence at a time)."""
    info, array = read_volume(path)
    if len(info.shape) != 3:
        raise VolumeError(
            f"expected one 3D image of one MR sequence, got shape {info.shape}; MoME segments each sequence on its "
            "own, so split a multi-sequence (4D) file into one image per sequence"
        )
    if min(info.shape) < 2:
        raise VolumeError(f"image shape {info.shape} is not a 3D volume")
    if array is not None and not np.isfinite(array).all():
        raise VolumeError("image contains NaN or infinite values")
    return info


def check_label(path: str | Path, image_path: str | Path | None) -> VolumeInfo:
    """A 3D label with non-negative integer values on the grid of its image (same shape)."""
    info, array = read_volume(path)
    if len(info.shape) != 3:
        raise VolumeError(f"expected a 3D label, got shape {info.shape}")
    if array is not None:
        if not np.isfinite(array).all():
            raise VolumeError("label contains NaN or infinite values")
        if (array < 0).any() or not np.array_equal(array, np.round(array)):
            raise VolumeError("label values must be non-negative integers (0 background, 1 lesion)")
    if image_path is not None and Path(image_path).is_file():
        image, _ = read_volume(image_path, data=False)
        if info.shape != image.shape:
            raise VolumeError(f"label shape {info.shape} does not match the image shape {image.shape}")
    return info
