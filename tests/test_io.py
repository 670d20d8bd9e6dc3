"""The image I/O module: readable 3D volumes; labels of non-negative integers on their image's grid (NIfTI, NRRD)."""

from __future__ import annotations

from pathlib import Path

import itk
import nibabel as nib
import numpy as np
import pytest

from scripts.io import VolumeError, check_image, check_label, read_volume


def _nifti(path: Path, array: np.ndarray) -> Path:
    nib.save(nib.Nifti1Image(array, np.diag([2.0, 2.0, 2.0, 1.0])), path)
    return path


def test_a_slicer_nrrd_label_is_checked_against_a_nifti_image(tmp_path: Path) -> None:
    image = _nifti(tmp_path / "img.nii.gz", np.random.default_rng(0).random((10, 12, 14), dtype=np.float32))
    label = np.zeros((10, 12, 14), np.uint8)
    label[2:5, 3:6, 4:7] = 1
    nrrd = tmp_path / "label.nrrd"

    def write(array: np.ndarray) -> None:
        out = itk.image_from_array(array.transpose().copy())  # ITK arrays are z, y, x
        out.SetSpacing([2.0, 2.0, 2.0])  # the image's grid; ITK's physical space is LPS, NIfTI's RAS
        out.SetDirection(itk.matrix_from_array(np.diag([-1.0, -1.0, 1.0])))
        itk.imwrite(out, str(nrrd))

    write(label)
    assert check_label(nrrd, image).shape == (10, 12, 14)
    write(label[:, :, :10])
    with pytest.raises(VolumeError, match="does not match"):
        check_label(nrrd, image)


@pytest.mark.parametrize("suffix", [".nrrd", ".mha"])
def test_itk_formats_read_the_voxels_on_disk(tmp_path: Path, suffix: str) -> None:
    """The array outlives the ITK image it came from (a view of a freed image read garbage, up to 1e38)."""
    array = np.random.default_rng(1).random((20, 24, 28), dtype=np.float32)
    path = tmp_path / f"image{suffix}"
    itk.imwrite(itk.image_from_array(array.transpose().copy()), str(path))
    first = read_volume(path)[1]
    second = read_volume(path)[1]
    np.testing.assert_array_equal(first, array)
    np.testing.assert_array_equal(second, array)


def test_singleton_fourth_axis_is_one_volume_but_four_sequences_are_not(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    assert check_image(_nifti(tmp_path / "a.nii.gz", rng.random((8, 8, 8, 1), np.float32))).shape == (8, 8, 8)
    with pytest.raises(VolumeError, match="one file per sequence"):
        check_image(_nifti(tmp_path / "b.nii.gz", rng.random((8, 8, 8, 4), np.float32)))


@pytest.mark.parametrize(
    ("values", "message"),
    [(np.float32(0.5), "non-negative integers"), (np.float32(-1), "non-negative integers"), (np.nan, "NaN")],
)
def test_label_values_must_be_class_indices(tmp_path: Path, values: float, message: str) -> None:
    label = np.zeros((8, 8, 8), np.float32)
    label[0, 0, 0] = values
    with pytest.raises(VolumeError, match=message):
        check_label(_nifti(tmp_path / "l.nii.gz", label), None)
