"""MONAI Label's DICOMweb datastore, set up for brain MR and checked before anything is converted or stored.

What the stock datastore does not do, and a PACS user needs:

* lists MR series where the search filter is MONAI Label's default (``Modality=CT``); any other
  ``MONAI_LABEL_DICOMWEB_SEARCH_FILTER`` is used as given;
* reads the sequence from ``SeriesDescription`` / ``ProtocolName`` into the image info ``modality``, so a label
  saved from a viewer trains that sequence's expert;
* refuses a series it cannot segment with a 422 naming the series (not MR, multi-frame, a broken file, slices not
  evenly spaced or not parallel) and keeps nothing of it in its cache; a refused series is left out of the
  unlabelled images, so active learning never offers it again (a request for it is checked again);
* writes DICOM SEG with dcmqi's ``itkimage2segimage`` from the locked ``dcmqi`` wheel (MONAI Label would download
  dcmqi from the internet), with the lesion segment named and coded (SNOMED CT), and stores it in the PACS.
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import sys
from io import BytesIO
from pathlib import Path
from typing import Any

import numpy as np
from fastapi import HTTPException
from monailabel.config import settings
from monailabel.datastore.dicom import DICOMwebClientX, DICOMWebDatastore
from monailabel.datastore.utils.convert import nifti_to_dicom_seg
from monailabel.datastore.utils.dicom import dicom_web_download_series, dicom_web_upload_dcm
from pydicom import dcmread

from monailabel_app.lib.errors import not_found, unprocessable
from monailabel_app.lib.server import check_id

__all__ = ["LESION_SEGMENT", "MRDICOMwebDatastore", "dicomweb_datastore", "sequence_of_series"]

logger = logging.getLogger(__name__)

#: The lesion segment of every SEG the app writes (dcmqi metadata): SNOMED CT "Lesion" in the category
#: "Morphologically altered structure", the codes DICOM's segmentation context groups use for lesions.
LESION_SEGMENT = {
    "name": "lesion",
    "model_name": "MoME",
    "segmentAttribute": {
        "labelID": 1,
        "SegmentLabel": "lesion",
        "SegmentDescription": "Brain lesion (MoME)",
        "SegmentAlgorithmType": "AUTOMATIC",
        "SegmentAlgorithmName": "MoME",
        "SegmentedPropertyCategoryCodeSequence": {
            "CodeValue": "49755003",
            "CodingSchemeDesignator": "SCT",
            "CodeMeaning": "Morphologically Altered Structure",
        },
        "SegmentedPropertyTypeCodeSequence": {
            "CodeValue": "52988006",
            "CodingSchemeDesignator": "SCT",
            "CodeMeaning": "Lesion",
        },
        "recommendedDisplayRGBValue": [255, 64, 64],
    },
}

#: Series description / protocol name patterns -> sequence, tried in this order (FLAIR before T2, T1c before T1).
_SEQUENCE_PATTERNS = (
    ("FLAIR", r"FLAIR|T2F\b|DARK.?FLUID"),
    ("DWI", r"DWI|DIFFUSION|TRACE|EP2D.?DIFF|\bB.?1000\b"),
    ("T1c", r"T1.?(C|CE|GD|POST|\+C)\b|POST.?(GD|CONTRAST)|\bGAD|\+C\b"),
    ("T2", r"T2"),
    ("T1", r"T1|MPRAGE|SPGR|BRAVO"),
)

#: Largest spread of slice gaps accepted, as a share of the median gap (rounding in exported positions is far less).
_SPACING_TOLERANCE = 0.01


def sequence_of_series(description: str | None, protocol: str | None = None) -> str | None:
    """The MR sequence a series' description or protocol names, or ``None`` (unknown: fused loss only)."""
    for text in (description, protocol):
        upper = (text or "").upper()
        for sequence, pattern in _SEQUENCE_PATTERNS:
            if re.search(pattern, upper):
                return sequence
    return None


def check_series(folder: Path, series_uid: str) -> None:
    """Refuse (422) a downloaded series the model cannot read as one 3D MR volume; the message names the series."""
    files = sorted(folder.glob("*.dcm"))
    if not files:
        raise unprocessable(f"series {series_uid}: the PACS returned no instances")
    datasets = []
    for f in files:
        try:
            datasets.append(dcmread(str(f)))
        except Exception as e:
            raise unprocessable(f"series {series_uid}: {f.name} is not a readable DICOM file ({e})") from e
    first = datasets[0]
    modality = str(first.get("Modality", ""))
    what = f"series {series_uid} ({first.get('SeriesDescription', 'no description')})"
    if modality != "MR":
        raise unprocessable(f"{what} is a {modality or 'no-modality'} series; this model segments MR images")
    if any(int(ds.get("NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise unprocessable(
            f"{what} is multi-frame (enhanced MR); export it as single-frame (classic) MR images to segment it"
        )
    if len(datasets) < 3:
        raise unprocessable(f"{what} has {len(datasets)} slice(s); a 3D volume of at least 3 slices is needed")
    for f, ds in zip(files, datasets, strict=True):
        if "PixelData" not in ds or "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
            raise unprocessable(f"{what}: {f.name} lacks pixel data or its position/orientation in the patient")
        expected = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * int(ds.BitsAllocated) // 8
        if not ds.file_meta.TransferSyntaxUID.is_compressed and len(ds.PixelData) < expected:
            raise unprocessable(f"{what}: {f.name} is truncated ({len(ds.PixelData)} of {expected} pixel bytes)")
    orientations = np.array([[float(v) for v in ds.ImageOrientationPatient] for ds in datasets])
    if np.abs(orientations - orientations[0]).max() > 1e-3:
        raise unprocessable(f"{what}: its slices are not parallel (different ImageOrientationPatient)")
    normal = np.cross(orientations[0, :3], orientations[0, 3:])
    positions = np.sort([float(np.array(ds.ImagePositionPatient, dtype=float) @ normal) for ds in datasets])
    gaps = np.diff(positions)
    median = float(np.median(gaps))
    if median <= 0 or float(gaps.max() - gaps.min()) > _SPACING_TOLERANCE * median:
        raise unprocessable(
            f"{what}: inconsistent slice spacing (gaps from {gaps.min():.3f} to {gaps.max():.3f} mm; a missing or "
            "duplicated slice?); a volume needs evenly spaced slices"
        )


class MRDICOMwebDatastore(DICOMWebDatastore):
    """The stock DICOMweb datastore with the checks, sequence and SEG writing in the module docstring."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.refused: dict[str, str] = {}  #: series id -> why it was refused, until a later check passes

    def get_unlabeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return [s for s in super().get_unlabeled_images(label_tag, labels) if s not in self.refused]

    def list_images(self) -> list[str]:
        # uncached: the stock list is kept for MONAI_LABEL_DICOMWEB_CACHE_EXPIRY (2 h), so a series sent to the
        # PACS after the server started stays invisible that long
        return DICOMWebDatastore.list_images.__wrapped__(self)

    def get_labeled_images(self, label_tag: str | None = None, labels: list[str] | None = None) -> list[str]:
        return DICOMWebDatastore.get_labeled_images.__wrapped__(self, label_tag, labels)

    def _dicom_info(self, series_id: str) -> dict[str, Any]:
        info = super()._dicom_info(series_id)
        found = self._client.search_for_series(
            search_filters={"SeriesInstanceUID": series_id}, fields=["SeriesDescription", "ProtocolName"]
        )
        tags = found[0] if found else {}
        description = (tags.get("0008103E", {}).get("Value") or [""])[0]
        protocol = (tags.get("00181030", {}).get("Value") or [""])[0]
        info["SeriesDescription"] = description
        info["modality"] = sequence_of_series(description, protocol)  # the app's sequence key (None = unknown)
        return info

    def get_image_uri(self, image_id: str) -> str:
        check_id(image_id)
        converted = Path(self._datastore.image_path()) / f"{image_id}.nii.gz"
        if converted.is_file():
            return str(converted)
        folder = Path(self._datastore.image_path()) / image_id
        try:
            if not folder.is_dir() or not any(folder.iterdir()):
                found = self._client.search_for_series(search_filters={"SeriesInstanceUID": image_id})
                if not found:
                    raise not_found(f"series {image_id} is not in the PACS ({self._client.base_url})")
                dicom_web_download_series(None, image_id, str(folder), self._client, self._fetch_by_frame)
            check_series(folder, image_id)
            uri = super().get_image_uri(image_id)
        except Exception as e:
            if isinstance(e, HTTPException) and e.status_code == 422:
                self.refused[image_id] = str(e.detail)
            shutil.rmtree(folder, ignore_errors=True)  # a refused or half-downloaded series leaves nothing behind
            converted.unlink(missing_ok=True)
            raise
        self.refused.pop(image_id, None)
        return uri

    def store_prediction(self, image_id: str, label: str) -> dict[str, Any] | None:
        """Write ``label`` (on the series' grid) as a DICOM SEG referencing the series and store it in the PACS;
        ``None`` for an empty label (a SEG needs a segment)."""
        series_dir = Path(self._datastore.image_path()) / image_id
        seg = nifti_to_dicom_seg(str(series_dir), label, [LESION_SEGMENT], use_itk=True)
        if not seg:
            return None
        try:
            ds = dcmread(seg, stop_before_pixels=True)
            uid = dicom_web_upload_dcm(seg, self._client) or str(ds.SeriesInstanceUID)
            return {
                "SeriesInstanceUID": uid,
                "StudyInstanceUID": str(ds.StudyInstanceUID),
                "SOPInstanceUID": str(ds.SOPInstanceUID),
            }
        finally:
            os.unlink(seg)

    def save_label(
        self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any], label_id: str = ""
    ) -> str:
        check_id(image_id)
        info = dict(label_info or {})
        info.setdefault("label_info", [LESION_SEGMENT])  # the stock SEG writer names the segment from this
        return super().save_label(image_id, label_filename, label_tag, info, label_id)

    def retrieve_seg(self, study_uid: str, series_uid: str) -> bytes:
        """The stored SEG instance, as the PACS returns it (the file a viewer would get)."""
        (instance,) = self._client.retrieve_series(study_uid, series_uid)
        buffer = BytesIO()
        instance.save_as(buffer, write_like_original=False)
        return buffer.getvalue()


def _dcmqi_on_path() -> None:
    """dcmqi's converters are console scripts of the locked wheel, beside this interpreter; MONAI Label calls them
    by name, so the venv's ``bin`` must be on ``PATH`` even when the server was started without activating it."""
    bin_dir = str(Path(sys.executable).parent)
    if bin_dir not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = bin_dir + os.pathsep + os.environ.get("PATH", "")
    if shutil.which("itkimage2segimage") is None:
        raise RuntimeError("dcmqi's itkimage2segimage is missing: `make setup` installs it from the lock")


def dicomweb_datastore(url: str, cache_path: str | None = None) -> MRDICOMwebDatastore:
    """The app's datastore for ``--studies http(s)://.../dicom-web`` (credentials and prefixes: MONAI Label's
    ``MONAI_LABEL_DICOMWEB_*`` settings)."""
    from dicomweb_client.session_utils import create_session_from_user_pass

    _dcmqi_on_path()
    session = None
    if settings.MONAI_LABEL_DICOMWEB_USERNAME and settings.MONAI_LABEL_DICOMWEB_PASSWORD:
        session = create_session_from_user_pass(
            settings.MONAI_LABEL_DICOMWEB_USERNAME, settings.MONAI_LABEL_DICOMWEB_PASSWORD
        )
    client = DICOMwebClientX(
        url=url,
        session=session,
        qido_url_prefix=settings.MONAI_LABEL_QIDO_PREFIX,
        wado_url_prefix=settings.MONAI_LABEL_WADO_PREFIX,
        stow_url_prefix=settings.MONAI_LABEL_STOW_PREFIX,
    )
    search = settings.MONAI_LABEL_DICOMWEB_SEARCH_FILTER
    if search == {"Modality": "CT"}:  # MONAI Label's default (start_server exports it, so it cannot be told apart)
        search = {"Modality": "MR"}
    cache = cache_path or settings.MONAI_LABEL_DICOMWEB_CACHE_PATH.strip() or None
    logger.info(f"DICOMweb datastore {url}: search {search}; cache {cache or 'default'}")
    return MRDICOMwebDatastore(
        client=client,
        search_filter=search,
        cache_path=cache,
        fetch_by_frame=settings.MONAI_LABEL_DICOMWEB_FETCH_BY_FRAME,
        convert_to_nifti=True,
    )
