"""Reading and checking volumes: the one place that knows image suffixes, reads a whole 3D volume and says in one
sentence, starting with the file name, why a file cannot be used. Every entry point (datalist CLI, inference list,
:class:`LoadVolumed`, MONAI Label app) checks through here; the header checks (:func:`read_header`) come first.
"""

from __future__ import annotations

import math
import os
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import NibabelWriter
from monai.transforms import LoadImaged
from monai.utils import ensure_tuple

from scripts.atomic import atomic_path
from scripts.errors import InputError

#: Image files the bundle and the app read (NIfTI through nibabel; NRRD and MetaImage through ITK).
SUFFIXES: tuple[str, ...] = (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")
#: Header sizes beyond these are refused before any voxel is read (a 0.4 mm whole-head 7T scan is ~600^3).
MAX_AXIS = 2048
MAX_VOXELS = 1024 * 1024 * 512
#: Affines of an image and its label may differ by this much (mm, per matrix entry) and still be one grid.
AFFINE_TOLERANCE = 1e-3


class VolumeError(InputError):
    """A file the bundle cannot use; the message names the file and says what was expected."""


@dataclass(frozen=True)
class VolumeInfo:
    """What the header says: spatial shape (trailing singleton axes dropped), channels, RAS affine, voxel sizes."""

    path: Path
    shape: tuple[int, ...]
    affine: np.ndarray
    spacing: tuple[float, ...]
    dtype: str
    channels: int = 1

    @property
    def name(self) -> str:
        return self.path.name


def has_image_suffix(name: str | Path) -> bool:
    return str(name).lower().endswith(SUFFIXES)


def strip_suffix(name: str | Path) -> str:
    """The file name without its image suffix (``case7_flair.nii.gz`` -> ``case7_flair``)."""
    name = Path(name).name
    return next((name[: -len(s)] for s in SUFFIXES if name.lower().endswith(s)), name)


def _one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: " + " ".join(str(error).split())


def _matrix(affine: np.ndarray) -> str:
    return str(np.round(np.asarray(affine, float)[:3], 3).tolist())


def _squeeze(shape: tuple[int, ...]) -> tuple[int, ...]:
    """Drop trailing singleton axes past the third (a ``(x, y, z, 1)`` NIfTI is one 3D volume)."""
    shape = tuple(int(s) for s in shape)
    while len(shape) > 3 and shape[-1] == 1:
        shape = shape[:-1]
    return shape


def _is_nifti(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def _nifti_header(path: Path) -> VolumeInfo:
    img = nib.load(path)
    header = img.header
    zooms = tuple(float(z) for z in header.get_zooms()[:3])
    if int(header["sform_code"]) == 0 and int(header["qform_code"]) == 0:
        # nibabel silently turns zero voxel sizes into 1 mm; read what the file says
        with nib.openers.ImageOpener(path) as f:
            raw = type(header).from_fileobj(f, check=False)
        zooms = tuple(float(z) for z in raw["pixdim"][1:4])
    return VolumeInfo(path, _squeeze(img.shape), np.asarray(img.affine, float), zooms, str(header.get_data_dtype()))


def _itk_header(path: Path) -> VolumeInfo:
    import itk

    io = itk.ImageIOFactory.CreateImageIO(str(path), itk.CommonEnums.IOFileMode_ReadMode)
    if io is None:
        raise VolumeError(f"{path.name}: no reader for this file")
    io.SetFileName(str(path))
    io.ReadImageInformation()
    n = io.GetNumberOfDimensions()
    shape = tuple(int(io.GetDimensions(i)) for i in range(n))
    spacing = tuple(float(io.GetSpacing(i)) for i in range(n))
    m = min(n, 3)
    lps = np.eye(4)
    for i in range(m):
        lps[:m, i] = np.asarray(io.GetDirection(i)[:m], float) * spacing[i]
        lps[i, 3] = io.GetOrigin(i)
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps  # ITK's physical space is LPS; ours is RAS
    pixel = io.GetPixelTypeAsString(io.GetPixelType()).lower()
    component = io.GetComponentTypeAsString(io.GetComponentType()).lower()
    dtype = f"complex {component}" if "complex" in pixel else component
    return VolumeInfo(path, _squeeze(shape), affine, spacing, dtype, channels=int(io.GetNumberOfComponents()))


def read_header(path: str | Path) -> VolumeInfo:
    """The header of an image file, without its voxels; unreadable files raise :class:`VolumeError`."""
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: no such file")
    if not has_image_suffix(path):
        raise VolumeError(f"{path.name}: not an image file; expected one of {', '.join(SUFFIXES)}")
    try:
        return _nifti_header(path) if _is_nifti(path) else _itk_header(path)
    except VolumeError:
        raise
    except Exception as e:  # nibabel, gzip and ITK raise many different types for a damaged file
        raise VolumeError(f"{path.name}: cannot be read as an image ({_one_line(e)})") from e


def check_header(info: VolumeInfo, what: str = "image") -> VolumeInfo:
    """3D, one channel, real-valued, sane sizes and voxel spacing: everything decidable without the voxels."""
    name = info.name
    if "complex" in info.dtype:
        raise VolumeError(f"{name}: complex-valued {what} ({info.dtype}); expected a magnitude image")
    if info.channels != 1:
        raise VolumeError(f"{name}: {info.channels} channels per voxel; expected one 3D {what} of one sequence")
    if len(info.shape) != 3:
        raise VolumeError(
            f"{name}: shape {info.shape}; expected one 3D {what} of one MR sequence (split a 4D or multi-sequence "
            "file into one file per sequence)"
        )
    if min(info.shape) < 2:
        raise VolumeError(f"{name}: shape {info.shape} is not a 3D volume (an axis has fewer than 2 voxels)")
    if max(info.shape) > MAX_AXIS or math.prod(info.shape) > MAX_VOXELS:
        raise VolumeError(
            f"{name}: header size {info.shape} is implausible (more than {MAX_AXIS} voxels on an axis or "
            f"{MAX_VOXELS} in all); is the header damaged?"
        )
    spacing = info.spacing[:3]
    if len(spacing) < 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise VolumeError(f"{name}: voxel sizes {tuple(spacing)} mm; expected three positive sizes")
    if not np.isfinite(info.affine).all() or abs(np.linalg.det(info.affine[:3, :3])) < 1e-12:
        raise VolumeError(f"{name}: the voxel-to-world matrix is not invertible: {_matrix(info.affine)}")
    return info


def read_volume(path: str | Path) -> tuple[VolumeInfo, np.ndarray]:
    """Header and every voxel (decompressed completely, so a truncated file fails here and not mid-training)."""
    info = read_header(path)
    try:
        if _is_nifti(info.path):
            array = np.asarray(nib.load(info.path).dataobj)
        else:
            import itk  # slow to import, and only NRRD and MetaImage files need it

            array = itk.array_from_image(itk.imread(str(info.path))).transpose()  # a copy: a view dies with the image
    except Exception as e:
        raise VolumeError(f"{info.name}: cannot be read as an image ({_one_line(e)})") from e
    return info, array.reshape(info.shape) if array.size == math.prod(info.shape) else array


def check_array(array: np.ndarray | torch.Tensor, name: str, what: str = "image") -> None:
    """Real, finite and not constant (a constant image z-scores to NaN and segments as nothing)."""
    values = torch.as_tensor(np.asarray(array)) if not isinstance(array, torch.Tensor) else array
    if values.is_complex():
        raise VolumeError(f"{name}: complex-valued {what}; expected a magnitude image")
    if values.dtype == torch.bool:
        values = values.to(torch.uint8)
    bad = int((~torch.isfinite(values)).sum()) if values.is_floating_point() else 0
    if bad:
        raise VolumeError(f"{name}: {bad} NaN or infinite voxels; expected finite intensities")
    if what == "image" and values.numel() and bool(values.min() == values.max()):
        raise VolumeError(f"{name}: every voxel is {float(values.flatten()[0]):g}; expected an MR image")


def check_image(path: str | Path) -> VolumeInfo:
    """One readable 3D single-channel image with finite, non-constant intensities."""
    info = check_header(read_header(path))
    check_array(read_volume(info.path)[1], info.name)
    return info


def check_label(
    path: str | Path, image: str | Path | VolumeInfo | None = None, values: Collection[int] | None = None
) -> VolumeInfo:
    """A 3D label of non-negative integers (within ``values`` when given) on the grid of its image."""
    info = check_header(read_header(path), what="label")
    _, array = read_volume(info.path)
    check_array(array, info.name, what="label")
    if (array < 0).any() or not np.array_equal(array, np.round(array)):
        raise VolumeError(f"{info.name}: label values must be non-negative integers (0 background, 1 lesion)")
    extra = [] if values is None else sorted(set(np.unique(array).astype(int).tolist()) - set(values) - {0})
    if extra:
        expected = sorted({0, *values})
        raise VolumeError(f"{info.name}: label values {extra} are not labels of this model; expected {expected}")
    if image is not None:
        _same_grid(info, image if isinstance(image, VolumeInfo) else read_header(image))
    return info


def check_pair(image: str | Path, label: str | Path | None = None) -> VolumeInfo:
    """Without reading voxels: the image is a usable 3D volume and its label (if any) is on the same grid."""
    info = check_header(read_header(image))
    if label is not None:
        _same_grid(check_header(read_header(label), what="label"), info)
    return info


def _same_grid(label: VolumeInfo, image: VolumeInfo) -> None:
    if label.shape != image.shape:
        shapes = f"label shape {label.shape} does not match the image {image.name} {image.shape}"
        raise VolumeError(f"{label.name}: {shapes}")
    if not np.allclose(label.affine, image.affine, atol=AFFINE_TOLERANCE):
        raise VolumeError(
            f"{label.name}: the label is not on the grid of its image {image.name} (same shape, other position or "
            f"orientation): image {_matrix(image.affine)}, label {_matrix(label.affine)}"
        )


class LoadVolumed(LoadImaged):
    """``LoadImaged`` whose read failures (``EOFError``, ITK's ``RuntimeError``...) and bad images are a
    :class:`VolumeError` naming the file. Each of ``check_keys`` (default: the image) is checked in memory: one channel,
    three spatial axes, finite, not constant. A subclass, so MONAI Label still recognises it as the loading step."""

    def __init__(self, keys: KeysCollection, check_keys: KeysCollection | None = None, **kwargs) -> None:
        super().__init__(keys, **kwargs)
        self.check_keys = tuple(self.keys[:1] if check_keys is None else ensure_tuple(check_keys))

    def __call__(self, data, reader=None) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            if isinstance(d[key], (str, Path)) and not Path(d[key]).is_file():
                raise VolumeError(f"{d[key]}: no such file")
        try:
            d = super().__call__(d, reader)
        except VolumeError:
            raise
        except Exception as e:  # a damaged file raises whatever its reader raises
            names = ", ".join(Path(str(d[k])).name for k in self.key_iterator(d))
            raise VolumeError(f"{names}: cannot be read as an image ({_one_line(e)})") from e
        for key in (k for k in self.check_keys if k in d):
            name = Path(str(getattr(d[key], "meta", {}).get("filename_or_obj", key))).name
            shape = tuple(d[key].shape)
            if len(shape) != 4 or shape[0] != 1:
                raise VolumeError(f"{name}: loaded as shape {shape}; expected one channel and three spatial axes")
            check_array(d[key], name)
        return d


class AtomicNibabelWriter(NibabelWriter):
    """MONAI's NIfTI writer (``SaveImaged(writer=...)``) through :func:`scripts.atomic.atomic_path`: a killed run
    leaves no half-written label that a resumed run or a viewer would take for a finished one."""

    def write(self, filename: str | os.PathLike, verbose: bool = False, **obj_kwargs: Any) -> None:
        name = Path(filename).name
        suffix = ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix
        with atomic_path(filename, suffix=suffix) as tmp:
            super().write(tmp, verbose=verbose, **obj_kwargs)
