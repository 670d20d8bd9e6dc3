"""Broken inputs of every kind a user may hand over, written to disk for the tests and the bad-input drill.

Each builder takes a folder and returns the path it made (``missing`` returns a path it did not make). The images
are a small 2 mm "head" (an ellipsoid of noisy tissue with one bright spherical lesion), 40 x 48 x 40 voxels, so
every check runs in milliseconds; :func:`good_case` writes a valid image and label for comparison.
"""

from __future__ import annotations

import gzip
import shutil
import struct
from collections.abc import Callable
from pathlib import Path

import nibabel as nib
import numpy as np

__all__ = ["AFFINE", "IMAGE_KINDS", "LABEL_KINDS", "SHAPE", "good_case", "head"]

SHAPE = (40, 48, 40)
AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])

Builder = Callable[[Path], Path]


def head(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A valid image (float32) and its lesion label (uint8)."""
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(s) - s / 2 for s in SHAPE), indexing="ij"))
    brain = ((grid / np.array([s * 0.4 for s in SHAPE])[:, None, None, None]) ** 2).sum(0) <= 1
    lesion = ((grid / 4.0) ** 2).sum(0) <= 1
    image = (brain * (100 + 10 * rng.standard_normal(SHAPE)) + lesion * 80).astype(np.float32)
    return image, lesion.astype(np.uint8)


def _nii(path: Path, data: np.ndarray, affine: np.ndarray | None = AFFINE) -> Path:
    nib.save(nib.Nifti1Image(data, affine), path)
    return path


def good_case(folder: Path, name: str = "good_t1") -> tuple[Path, Path]:
    image, label = head()
    return _nii(folder / f"{name}.nii.gz", image), _nii(folder / f"{name}_label.nii.gz", label)


def _with(name: str, data: np.ndarray, affine: np.ndarray | None = AFFINE, suffix: str = ".nii.gz") -> Builder:
    return lambda d: _nii(d / f"{name}{suffix}", data, affine)


def _missing(d: Path) -> Path:
    return d / "missing_t1.nii.gz"


def _empty(d: Path) -> Path:
    (d / "empty_t1.nii.gz").write_bytes(b"")
    return d / "empty_t1.nii.gz"


def _text(d: Path) -> Path:
    (d / "text_t1.nii.gz").write_text("this is not an image\n")
    return d / "text_t1.nii.gz"


def _truncated_gzip(d: Path) -> Path:
    path = _nii(d / "truncated_t1.nii.gz", head()[0])
    raw = gzip.decompress(path.read_bytes())
    path.write_bytes(gzip.compress(raw)[: len(raw) // 40])
    return path


def _truncated_raw(d: Path) -> Path:
    path = _nii(d / "truncated_t1.nii", head()[0])
    path.write_bytes(path.read_bytes()[: 352 + 1000])  # the header, then 250 of 76,800 voxels
    return path


def _patched(name: str, offset: int, fmt: str, *values: float) -> Builder:
    """A valid uncompressed NIfTI whose header bytes at ``offset`` are overwritten (dims, voxel sizes)."""

    def build(d: Path) -> Path:
        img = nib.Nifti1Image(head()[0], None)  # no sform/qform: the voxel sizes come from pixdim alone
        img.header.set_zooms((2.0, 2.0, 2.0))
        path = d / f"{name}.nii"
        nib.save(img, path)
        raw = bytearray(path.read_bytes())
        raw[offset : offset + struct.calcsize(fmt)] = struct.pack(fmt, *values)
        path.write_bytes(bytes(raw))
        return path

    return build


def _singular(d: Path) -> Path:
    """A voxel-to-world matrix with a zero column (nibabel cannot write it as a qform: only the sform)."""
    img = nib.Nifti1Image(head()[0], None)
    singular = AFFINE.copy()
    singular[0, 0] = 0.0
    img.header.set_sform(singular, code=1)
    return Path(nib.save(img, d / "singular_t1.nii.gz") or d / "singular_t1.nii.gz")


def _nrrd(name: str, data: np.ndarray) -> Builder:
    def build(d: Path) -> Path:
        import itk

        path = d / f"{name}.nrrd"
        itk.imwrite(itk.image_from_array(np.ascontiguousarray(data.transpose())), str(path))
        return path

    return build


def _mha_vector(d: Path) -> Path:
    import itk

    arr = np.stack([head()[0]] * 3, -1)  # three components per voxel
    image = itk.image_from_array(np.ascontiguousarray(arr.transpose(2, 1, 0, 3)), is_vector=True)
    itk.imwrite(image, str(d / "vector_t1.mha"))
    return d / "vector_t1.mha"


def _folder(d: Path) -> Path:
    (d / "folder_t1.nii.gz").mkdir()
    return d / "folder_t1.nii.gz"


def _suffix(d: Path) -> Path:
    path = _nii(d / "suffix_t1.nii.gz", head()[0])
    return Path(shutil.move(path, d / "suffix_t1.txt"))


def _image_kinds() -> dict[str, Builder]:
    good = head()[0]
    nan, inf = good.copy(), good.copy()
    nan[10:12, 10:12, 10:12] = np.nan
    inf[5, 5, 5] = np.inf
    return {
        "missing file": _missing,
        "empty file": _empty,
        "not an image (text)": _text,
        "truncated gzip": _truncated_gzip,
        "truncated uncompressed NIfTI": _truncated_raw,
        "2D image": _with("twod_t1", good[:, :, 20]),
        "4D image (4 sequences)": _with("fourd_t1", np.stack([good] * 4, -1)),
        "5D vector image": _with("vector5d_t1", good[..., None, None].repeat(3, 4)),
        "complex-valued image": _with("complex_t1", good.astype(np.complex64)),
        "NaN voxels": _with("nan_t1", nan),
        "infinite voxels": _with("inf_t1", inf),
        "constant image": _with("constant_t1", np.zeros(good.shape, np.float32)),
        "absurd header size": _patched("absurd_t1", 42, "<3h", 30000, 30000, 30000),  # dim[1..3]
        "zero voxel size": _patched("zerovox_t1", 80, "<f", 0.0),  # pixdim[1]
        "negative voxel size": _patched("negvox_t1", 84, "<f", -2.0),  # pixdim[2]
        "singular voxel-to-world matrix": _singular,
        "NRRD with NaN": _nrrd("nan_t1", nan),
        "NRRD 2D": _nrrd("twod_t1", good[:, :, 20]),
        "MHA with 3 components per voxel": _mha_vector,
        "a folder named like an image": _folder,
        "not an image file suffix": _suffix,
    }


def _label_kinds() -> dict[str, Builder]:
    label = head()[1]
    shifted = AFFINE.copy()
    shifted[0, 3] = 10.0
    outside, negative = label.copy(), label.astype(np.int16)
    outside[0, 0, 0], negative[0, 0, 0] = 7, -1
    fractional, nan = label.astype(np.float32), label.astype(np.float32)
    fractional[0, 0, 0], nan[0, 0, 0] = 0.5, np.nan

    def corrupt(d: Path) -> Path:
        (d / "corrupt_label.nii.gz").write_bytes(b"\x1f\x8bnot a gzip stream")
        return d / "corrupt_label.nii.gz"

    return {
        "label of another shape": _with("shape_label", label[:30]),
        "label on another grid (same shape)": _with("grid_label", label, shifted),
        "label value outside the label set": _with("value_label", outside),
        "negative label value": _with("negative_label", negative),
        "fractional label value": _with("fraction_label", fractional),
        "NaN in label": _with("nan_label", nan),
        "corrupt label file": corrupt,
        "4D label": _with("fourd_label", np.stack([label] * 2, -1)),
    }


#: Image kinds: every way an image file can be unusable.
IMAGE_KINDS: dict[str, Builder] = _image_kinds()
#: Label kinds: every way a label can be unusable for a valid image written by :func:`good_case`.
LABEL_KINDS: dict[str, Builder] = _label_kinds()
