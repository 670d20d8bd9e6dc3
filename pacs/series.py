"""NIfTI volumes as MR DICOM series (one per sequence, one study per subject), and their upload by DICOMweb STOW-RS.

A phantom (or any NIfTI) becomes what a scanner would send: single-frame MR Image Storage instances, one per slice
along the volume's third voxel axis, with the geometry in the patient (LPS) frame DICOM uses and the sequence in
``SeriesDescription``/``ProtocolName`` (which the app reads to route a series to its expert). Voxel values are stored
as 16-bit integers with one rescale slope and intercept for the whole series, so a reader gets the intensities back
to within slope/2. UIDs are derived from the subject, sequence and slice, so writing the same volume again gives the
same instances (re-uploading is a no-op in a PACS).
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from pathlib import Path

import nibabel as nib
import numpy as np
from pydicom.dataset import Dataset, FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

__all__ = ["read_datasets", "upload", "write_series"]

#: RAS (NIfTI) -> LPS (DICOM)
_RAS_TO_LPS = np.diag([-1.0, -1.0, 1.0])


def _uid(*parts: object) -> str:
    return generate_uid(entropy_srcs=[str(p) for p in parts])


def _geometry(affine: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Origin, unit axis directions (columns i, j, k) in LPS, and voxel sizes of a NIfTI affine."""
    m = _RAS_TO_LPS @ affine[:3, :3]
    spacing = np.linalg.norm(m, axis=0)
    directions = m / spacing
    if abs(float(directions[:, 0] @ directions[:, 1])) > 1e-4:
        raise ValueError("the image's first two voxel axes are not orthogonal: DICOM slices cannot describe it")
    return _RAS_TO_LPS @ affine[:3, 3], directions, spacing, m


def write_series(
    nifti: str | Path,
    out_dir: str | Path,
    sequence: str,
    subject: str,
    series_number: int = 1,
    study_uid: str | None = None,
) -> list[Path]:
    """Write ``nifti`` as one MR series under ``out_dir`` (one file per slice); returns the files in slice order."""
    image = nib.load(str(nifti))
    data = np.asarray(image.dataobj, dtype=np.float64)
    if data.ndim != 3:
        raise ValueError(f"{nifti}: a 3D volume is needed for a DICOM series, got shape {data.shape}")
    origin, directions, spacing, m = _geometry(image.affine)
    low, high = float(data.min()), float(data.max())
    low = float(f"{low:.6g}")  # quantise with the slope and intercept as the header stores them
    slope = float(f"{(high - low) / 65535.0:.6g}") if high > low else 1.0
    pixels = np.round((data - low) / slope).clip(0, 65535).astype(np.uint16)
    study_uid = study_uid or _uid("study", subject)
    series_uid = _uid("series", subject, sequence, series_number)
    frame_uid = _uid("frame", subject)
    now = datetime.datetime(2026, 1, 1, 12, 0, 0)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    normal = np.cross(directions[:, 0], directions[:, 1])
    files = []
    for k in range(data.shape[2]):
        position = origin + m[:, 2] * k
        sop_uid = _uid("instance", series_uid, k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = FileDataset(None, {}, file_meta=meta, preamble=b"\0" * 128)
        ds.is_little_endian, ds.is_implicit_VR = True, False
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, sop_uid
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study_uid, series_uid, frame_uid
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = subject, subject, "", "O"
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
        ds.StudyID, ds.AccessionNumber, ds.ReferringPhysicianName = "1", "", ""
        ds.StudyDescription = "MoME phantom"
        ds.Modality, ds.Manufacturer, ds.BodyPartExamined = "MR", "MoME phantom generator", "BRAIN"
        ds.SeriesNumber, ds.InstanceNumber = series_number, k + 1
        ds.SeriesDescription = ds.ProtocolName = sequence
        ds.ImageType = ["DERIVED", "SECONDARY"]
        ds.ScanningSequence, ds.SequenceVariant, ds.ScanOptions, ds.MRAcquisitionType = "RM", "NONE", "", "3D"
        ds.PositionReferenceIndicator = ""
        ds.ImagePositionPatient = [f"{v:.6f}" for v in position]
        ds.ImageOrientationPatient = [f"{v:.8f}" for v in (*directions[:, 0], *directions[:, 1])]
        ds.PixelSpacing = [f"{spacing[1]:.6f}", f"{spacing[0]:.6f}"]  # row spacing (along j), column spacing (i)
        ds.SliceThickness = ds.SpacingBetweenSlices = f"{spacing[2]:.6f}"
        ds.SliceLocation = f"{float(position @ normal):.6f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = data.shape[1], data.shape[0]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = f"{low:.6g}", f"{slope:.6g}", "US"
        ds.PixelData = np.ascontiguousarray(pixels[:, :, k].T).tobytes()  # rows along j, columns along i
        path = out / f"{sequence}_{k:04d}.dcm"
        ds.save_as(path, write_like_original=False)
        files.append(path)
    return files


def read_datasets(files: Iterable[str | Path]) -> list[Dataset]:
    from pydicom import dcmread

    return [dcmread(str(f)) for f in files]


def upload(dicomweb_url: str, files: Iterable[str | Path]) -> None:
    """Store the files in the PACS through DICOMweb STOW-RS (the way a modality or a router sends them)."""
    from dicomweb_client import DICOMwebClient

    DICOMwebClient(url=dicomweb_url).store_instances(read_datasets(files))
