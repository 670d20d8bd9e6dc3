"""The clinical path with real parts: Orthanc (DICOMweb) as the PACS, ``monailabel start_server --studies
http://127.0.0.1:PORT/dicom-web`` serving the released model, and the REST calls a viewer makes (3D Slicer's
MONAILabel module: info, next sample, infer, save label).

A phantom study goes to the PACS as MR series; inference on a series stores a DICOM SEG back into the PACS that
references it and names and codes the lesion segment; read back, the SEG is the NIfTI prediction voxel for voxel in
world space. Series the model cannot read get a 422 naming the series, the server keeps serving and nothing is
stored (in the PACS or in the server's cache).
"""

from __future__ import annotations

import io
import shutil
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pydicom
import pydicom_seg
import pytest
import requests
import SimpleITK as sitk
from monailabel.client import MONAILabelClient

from demo.commands import cpu_conf
from demo.studies import phantom_studies
from monailabel_app.lib.dicomweb import sequence_of_series
from monailabel_app.local import LocalServer
from pacs import Orthanc, upload, write_series
from pacs.orthanc import DICOMWEB_PLUGIN

needs_orthanc = pytest.mark.skipif(
    shutil.which("Orthanc") is None or not DICOMWEB_PLUGIN.is_file(),
    reason="needs Debian's orthanc and orthanc-dicomweb (.ci/run installs them)",
)


@pytest.mark.parametrize(
    ("description", "protocol", "expected"),
    [
        ("Ax FLAIR", None, "FLAIR"),
        ("t2_tse_tra", None, "T2"),
        ("T1 MPRAGE POST GD", None, "T1c"),
        ("t1_mprage_sag", None, "T1"),
        ("ep2d_diff_3scan_trace_p2", None, "DWI"),
        ("", "T1CE", "T1c"),
        ("localizer", None, None),
    ],
)
def test_sequence_from_the_series_description(description: str, protocol: str | None, expected: str | None) -> None:
    assert sequence_of_series(description, protocol) == expected


def _on_grid(seg: sitk.Image, reference: nib.Nifti1Image) -> np.ndarray:
    """The SEG's mask sampled at the reference NIfTI's voxel centres (world space; 0 outside the SEG's frames)."""
    mask = sitk.GetArrayFromImage(seg).transpose(2, 1, 0)  # (x, y, z) = ITK index order
    ijk = np.stack(np.meshgrid(*(np.arange(s) for s in reference.shape), indexing="ij"), -1).reshape(-1, 3)
    world_ras = ijk @ reference.affine[:3, :3].T + reference.affine[:3, 3]
    world_lps = world_ras * [-1, -1, 1]
    direction = np.array(seg.GetDirection()).reshape(3, 3) * np.array(seg.GetSpacing())
    index = (world_lps - np.array(seg.GetOrigin())) @ np.linalg.inv(direction).T
    nearest = np.round(index).astype(int)
    assert np.abs(index - nearest).max() < 1e-3  # the SEG's grid is the image's grid
    inside = ((nearest >= 0) & (nearest < mask.shape)).all(1)
    out = np.zeros(len(ijk), dtype=mask.dtype)
    out[inside] = mask[tuple(nearest[inside].T)]
    return out.reshape(reference.shape)


def _bad_series(folder: Path, source: Path) -> dict[str, list[Path]]:
    """A CT series, a multi-frame MR, an MR with a missing slice, and an MR with one truncated file."""
    bad = {}
    for name in ("ct", "multiframe", "gap", "broken"):
        bad[name] = write_series(source, folder / name, f"bad {name}", "sub-bad", series_number=10 + len(bad))
    for f in bad["ct"]:
        ds = pydicom.dcmread(f)
        ds.Modality = "CT"
        ds.save_as(f)
    first = pydicom.dcmread(bad["multiframe"][0])
    frames = [pydicom.dcmread(f).PixelData for f in bad["multiframe"][:3]]
    first.NumberOfFrames, first.PixelData = 3, b"".join(frames)
    first.save_as(bad["multiframe"][0])
    bad["multiframe"] = bad["multiframe"][:1]
    bad["gap"].pop(len(bad["gap"]) // 2)
    ds = pydicom.dcmread(bad["broken"][5])
    ds.PixelData = ds.PixelData[: len(ds.PixelData) // 3]
    ds.save_as(bad["broken"][5])
    return bad


@pytest.mark.slow
@needs_orthanc
def test_pacs_study_to_dicom_seg_and_back(tmp_path: Path) -> None:
    studies, labels = phantom_studies(tmp_path, subjects=1)
    flair = studies / "BraTS2021_00000_flair.nii.gz"
    with Orthanc(tmp_path / "pacs") as pacs:
        start = time.perf_counter()
        upload(pacs.dicomweb, write_series(flair, tmp_path / "dicom" / "flair", "Ax FLAIR", "BraTS2021_00000", 1))
        upload_s = time.perf_counter() - start
        upload(
            pacs.dicomweb,
            write_series(studies / "BraTS2021_00000_t2.nii.gz", tmp_path / "dicom" / "t2", "T2", "BraTS2021_00000", 2),
        )
        bad = _bad_series(tmp_path / "dicom", studies / "BraTS2021_00000_t1.nii.gz")
        for files in bad.values():
            upload(pacs.dicomweb, files)
        series = {
            s["MainDicomTags"]["SeriesDescription"]: s["MainDicomTags"]["SeriesInstanceUID"] for s in pacs.series()
        }
        cache = tmp_path / "cache"
        env = {"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(cache)}
        conf = {**cpu_conf(), "model_dir": str(tmp_path / "model")}  # the released weights, as `make serve`
        with LocalServer(tmp_path / "server", pacs.dicomweb, conf, env=env) as server:
            client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
            info = client.info()
            assert info["models"]["mome"]["ready"] is True
            stats = requests.get(f"{server.url}/datastore/?output=stats", timeout=30).json()
            assert stats["total"] == len(series) - 1 and stats["completed"] == 0  # MR only: the CT is not listed

            # Slicer's calls: next sample, then infer on it
            # (three MR series are unreadable: active learning skips them instead of failing the request)
            good = {series["Ax FLAIR"], series["T2"]}
            assert client.next_sample("first", {})["id"] == min(good)
            assert {client.next_sample("random", {})["id"] for _ in range(4)} <= good
            seg_before = len(pacs.series())
            start = time.perf_counter()
            label_file, params = client.infer("mome", series["Ax FLAIR"], {})
            infer_s = time.perf_counter() - start
            print(f"upload of one series {upload_s:.2f} s; infer + SEG stored in the PACS {infer_s:.2f} s")
            stored = params["dicom_seg"]
            assert len(pacs.series()) == seg_before + 1

            (seg_file,) = pacs.instances_of(stored["SeriesInstanceUID"])
            seg = pydicom.dcmread(io.BytesIO(seg_file))
            assert (
                seg.Modality == "SEG"
                and seg.StudyInstanceUID
                == pydicom.dcmread(next((tmp_path / "dicom" / "flair").glob("*.dcm"))).StudyInstanceUID
            )
            assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == series["Ax FLAIR"]
            (segment,) = seg.SegmentSequence
            assert segment.SegmentLabel == "lesion"
            assert segment.SegmentedPropertyTypeCodeSequence[0].CodeValue == "52988006"  # SNOMED CT "Lesion"
            assert segment.SegmentedPropertyTypeCodeSequence[0].CodingSchemeDesignator == "SCT"

            prediction = nib.load(label_file)
            predicted = np.asarray(prediction.dataobj) > 0
            from_seg = _on_grid(pydicom_seg.MultiClassReader().read(seg).image, prediction) > 0
            assert predicted.any() and np.array_equal(from_seg, predicted)  # 100 % voxel agreement
            truth_on_grid = _on_grid(sitk.ReadImage(str(labels["BraTS2021_00000_flair"])), prediction) > 0
            assert (predicted & truth_on_grid).sum() > 0.3 * truth_on_grid.sum()  # no flipped axes: it overlaps

            # output=dicom_seg answers the SEG the PACS now holds
            res = requests.post(f"{server.url}/infer/mome?image={series['T2']}&output=dicom_seg", timeout=300)
            assert res.status_code == 200, res.text
            returned = pydicom.dcmread(io.BytesIO(res.content))
            assert returned.Modality == "SEG" and returned.ReferencedSeriesSequence[0].SeriesInstanceUID == series["T2"]
            assert returned.SeriesInstanceUID in {s["MainDicomTags"]["SeriesInstanceUID"] for s in pacs.series()}

            # Slicer's "submit label": a final label becomes a SEG in the PACS, and the series counts as labelled
            before = len(pacs.series())
            client.save_label(series["Ax FLAIR"], label_file, tag="final")
            assert len(pacs.series()) == before + 1
            labelled = requests.get(f"{server.url}/datastore/?output=stats", timeout=30).json()
            assert labelled["completed"] >= 1

            # bad series: a message naming the series, nothing stored, the server keeps serving
            before = len(pacs.series())
            for name, uid in (
                ("ct", series["bad ct"]),
                ("multiframe", series["bad multiframe"]),
                ("gap", series["bad gap"]),
                ("broken", series["bad broken"]),
            ):
                res = requests.post(f"{server.url}/infer/mome?image={uid}", timeout=120)
                assert res.status_code == 422 and uid in res.json()["detail"], (name, res.status_code, res.text)
                print(f"{name}: {res.json()['detail']}")
                assert not any(uid in p.name for p in cache.rglob("*")), name
            assert len(pacs.series()) == before
            assert server.get("/info/")[0] == 200
