"""A real PACS for the clinical path: Orthanc with DICOMweb, and phantoms (or any NIfTI) as MR DICOM series."""

from __future__ import annotations

from pacs.orthanc import Orthanc, OrthancError
from pacs.series import upload, write_series

__all__ = ["Orthanc", "OrthancError", "upload", "write_series"]
