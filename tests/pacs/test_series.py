"""NIfTI -> MR DICOM series -> a real Orthanc -> MONAI Label's DICOMweb datastore -> NIfTI: the same voxels in the
same places (world coordinates of voxel centres within 0.1 mm), on a phantom and on an oblique, flipped grid."""

from __future__ import annotations

import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from pacs import Orthanc, upload, write_series
from pacs.orthanc import DICOMWEB_PLUGIN

pytestmark = pytest.mark.skipif(
    shutil.which("Orthanc") is None or not DICOMWEB_PLUGIN.is_file(),
    reason="needs Debian's orthanc and orthanc-dicomweb (.ci/run installs them)",
)


def _world(affine: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    ijk = np.stack(np.meshgrid(*(np.arange(s) for s in shape), indexing="ij"), -1).reshape(-1, 3)
    return ijk @ affine[:3, :3].T + affine[:3, 3]


def _same_volume(original: Path, converted: str) -> tuple[float, float]:
    """Largest distance (mm) from a converted voxel centre to the original voxel centre it lands on, and the largest
    intensity difference between the two."""
    a, b = nib.load(original), nib.load(converted)
    assert sorted(a.shape) == sorted(b.shape)
    world = _world(b.affine, b.shape)
    index = world @ np.linalg.inv(a.affine)[:3, :3].T + np.linalg.inv(a.affine)[:3, 3]
    nearest = np.round(index).astype(int)
    distance = np.linalg.norm((index - nearest) @ a.affine[:3, :3].T, axis=1).max()
    assert ((nearest >= 0) & (nearest < a.shape)).all()  # every converted voxel lies on the original grid
    values = np.asarray(a.dataobj, dtype=np.float64)[tuple(nearest.T)]
    return float(distance), float(np.abs(values - np.asarray(b.dataobj, dtype=np.float64).reshape(-1)).max())


def test_geometry_survives_the_pacs(tmp_path: Path, phantom_root: Path) -> None:
    from monailabel_app.lib.dicomweb import dicomweb_datastore

    phantom = sorted((phantom_root / "brats2021").rglob("*_t2.nii.gz"))[0]
    oblique = tmp_path / "oblique.nii.gz"
    turn = np.deg2rad(17)
    affine = np.eye(4)
    affine[:3, :3] = np.array([[np.cos(turn), -np.sin(turn), 0], [np.sin(turn), np.cos(turn), 0], [0, 0, 1]])
    affine[:3, :3] = affine[:3, :3] @ np.diag([-1.2, 0.9, 2.5])  # the first axis runs right-to-left
    affine[:3, 3] = [31.0, -12.5, -40.0]
    rng = np.random.default_rng(0)
    nib.save(nib.Nifti1Image((rng.random((30, 36, 20)) * 800).astype(np.float32), affine), oblique)

    with Orthanc(tmp_path / "pacs") as pacs:
        for number, (source, sequence) in enumerate(((phantom, "T2 TSE"), (oblique, "FLAIR 3D")), start=1):
            upload(pacs.dicomweb, write_series(source, tmp_path / sequence, sequence, "sub-01", number))
        store = dicomweb_datastore(pacs.dicomweb, cache_path=str(tmp_path / "cache"))
        by_description = {s["MainDicomTags"]["SeriesDescription"]: s["MainDicomTags"] for s in pacs.series()}
        assert set(store.list_images()) == {t["SeriesInstanceUID"] for t in by_description.values()}
        for source, sequence, expected in ((phantom, "T2 TSE", "T2"), (oblique, "FLAIR 3D", "FLAIR")):
            uid = by_description[sequence]["SeriesInstanceUID"]
            converted = store.get_image_uri(uid)
            distance, intensity = _same_volume(source, converted)
            span = float(np.ptp(np.asarray(nib.load(source).dataobj)))
            print(f"{sequence}: voxel centres within {distance:.2e} mm, intensities within {intensity:.3g}")
            assert distance < 0.1 and intensity <= span / 65535 + 1e-3
            assert store.get_image_info(uid)["modality"] == expected  # the sequence, from SeriesDescription
