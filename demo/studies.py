"""Phantoms as a MONAI Label studies folder: one image per (subject, sequence), named ``<subject>_<sequence>``,
the app's file-name convention for the sequence."""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["phantom_studies", "studies_from_items"]


def studies_from_items(items: Iterable[Mapping], root: Path, studies: Path) -> dict[str, Path]:
    """Copy datalist ``items`` (paths relative to ``root``) into ``studies``; returns image id -> lesion mask.

    The masks (0/1, what an annotator saves for the app's one label) go to ``<studies>_labels/``, outside the
    datastore folder; the datasets' own multi-class labels (BraTS 1/2/4, ...) are made binary as the datalist does.
    """
    import nibabel as nib
    import numpy as np

    studies.mkdir(parents=True, exist_ok=True)
    masks = studies.parent / f"{studies.name}_labels"
    masks.mkdir(exist_ok=True)
    labels = {}
    for item in items:
        name = f"{item['subject']}_{(item.get('modality') or 'unknown').lower()}"
        shutil.copy(root / item["image"], studies / f"{name}.nii.gz")
        source = nib.load(root / item["label"])
        mask = (np.asarray(source.dataobj) > 0).astype(np.uint8)
        nib.save(nib.Nifti1Image(mask, source.affine), masks / f"{name}.nii.gz")
        labels[name] = masks / f"{name}.nii.gz"
    return labels


def phantom_studies(work: Path, subjects: int = 2) -> tuple[Path, dict[str, Path]]:
    """A datastore of 2 mm BraTS-like phantoms named ``<subject>_<sequence>.nii.gz``; returns it and the labels."""
    from phantoms import generate

    out = work / "phantoms"
    manifest = generate(out, profiles=["brats2021"], subjects=subjects, spacing=2, seed=0, workers=1)
    items = [
        {"image": rel, "label": subject["label"], "subject": subject["subject"], "modality": modality}
        for subject in manifest["profiles"]["brats2021"]["subjects"]
        for modality, rel in subject["images"].items()
    ]
    studies = work / "studies"
    return studies, studies_from_items(items, out, studies)
