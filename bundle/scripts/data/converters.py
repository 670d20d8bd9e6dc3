"""Public-dataset converters: find every (subject, modality) image with its lesion label in a dataset's own layout.

Items ``{image, label, modality, dataset, lesion_type, subject}``, plus ``label_values`` (the lesion values) where
not every non-zero value is: BraTS 2021 1, 2, 4, BraTS 2023 1, 2, 3 (whole tumour), WMH 2017 1 (2, "other pathology",
with ``other="lesion"``). Not listed: ISLES 2022 ADC and FLAIR (own grid, no mask), MSSEG 2016 proton density."""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Callable
from pathlib import Path

from scripts.data.modality import canonical_modality

Item = dict


def _item(image: Path, label: Path, modality: str | None, dataset: str, lesion_type: str, subject: str, **extra):
    if not label.is_file():
        raise FileNotFoundError(f"no label for image {image}: expected {label}")
    fields = {"image": str(image), "label": str(label), "modality": modality, "dataset": dataset}
    return {**fields, "lesion_type": lesion_type, "subject": subject, **extra}


def _need(items: list[Item], root: Path, what: str) -> list[Item]:
    if not items:
        raise ValueError(f"no {what} found under {root}")
    return items


def _root(root: str | Path) -> Path:
    root = Path(root)
    if not root.is_dir():
        raise NotADirectoryError(f"dataset folder does not exist or is not a folder: {root}")
    return root


_BRATS21 = {"t1": "T1", "t1ce": "T1c", "t2": "T2", "flair": "FLAIR"}
_BRATS23 = {"t1n": "T1", "t1c": "T1c", "t2w": "T2", "t2f": "FLAIR"}
_BRATS23_TYPES = {"GLI": "glioma", "MET": "metastasis", "MEN": "meningioma", "PED": "glioma", "SSA": "glioma"}


def brats(root: str | Path) -> list[Item]:
    """BraTS 2021 (``BraTS2021_00000/BraTS2021_00000_t1ce.nii.gz``) and BraTS 2023 naming (``BraTS-MET-00001-000``)."""
    root = _root(root)
    items = []
    for folder in sorted(p for p in root.rglob("BraTS*") if p.is_dir()):
        name = folder.name
        if re.fullmatch(r"BraTS2021_\d+", name):
            dataset, lesion, values, sep, suffixes = "BraTS2021", "glioma", [1, 2, 4], "_", _BRATS21
        elif m := re.fullmatch(r"BraTS-([A-Z]{3})-\d+-\d+", name):
            lesion = _BRATS23_TYPES.get(m[1], "tumour")
            dataset, values, sep, suffixes = f"BraTS2023-{m[1]}", [1, 2, 3], "-", _BRATS23
        else:
            continue
        for suffix, modality in suffixes.items():
            if (image := folder / f"{name}{sep}{suffix}.nii.gz").is_file():
                seg = folder / f"{name}{sep}seg.nii.gz"
                items.append(_item(image, seg, modality, dataset, lesion, name, label_values=values))
    return _need(items, root, "BraTS subject folders (BraTS2021_NNNNN or BraTS-XXX-NNNNN-NNN) with images")


def atlas2(root: str | Path) -> list[Item]:
    """ATLAS v2.0 BIDS (only ``Training`` has masks): ``sub-*_T1w.nii.gz``, ``..._desc-T1lesion_mask.nii.gz`` beside."""
    root = _root(root)
    search = root / "Training" if (root / "Training").is_dir() else root
    items = []
    for image in sorted(search.rglob("sub-*_T1w.nii.gz")):
        label = image.with_name(image.name.replace("_T1w.nii.gz", "_label-L_desc-T1lesion_mask.nii.gz"))
        subject = image.name.split("_")[0]
        items.append(_item(image, label, "T1", "ATLAS2", "stroke_chronic", subject))
    return _need(items, search, "ATLAS v2.0 images (sub-*_T1w.nii.gz)")


def isles2022(root: str | Path) -> list[Item]:
    """ISLES 2022 BIDS: ``sub-strokecase0001/ses-0001/dwi/..._dwi.nii.gz``, mask under ``derivatives/``."""
    root = _root(root)
    items = []
    for image in sorted(p for p in root.rglob("sub-*_dwi.nii.gz") if "derivatives" not in p.parts):
        subject, session = image.parts[-4], image.parts[-3]
        label = image.parents[3] / "derivatives" / subject / session / f"{subject}_{session}_msk.nii.gz"
        items.append(_item(image, label, "DWI", "ISLES2022", "stroke_acute", subject))
    return _need(items, root, "ISLES 2022 DWI images (sub-*/ses-*/dwi/*_dwi.nii.gz)")


_MSSEG = (("GADO", "T1c"), ("FLAIR", "FLAIR"), ("T1", "T1"), ("T2", "T2"))  # first match wins: GADO before T1


def msseg2016(root: str | Path) -> list[Item]:
    """MSSEG 2016: ``<Centre>/<Patient>/{Preprocessed_Data/<FLAIR|T1|GADO|T2|DP>*,Masks/Consensus}.nii.gz``."""
    root = _root(root)
    items = []
    for pre in sorted(root.rglob("Preprocessed_Data")):
        patient = pre.parent
        subject, label = f"{patient.parent.name}_{patient.name}", patient / "Masks" / "Consensus.nii.gz"
        for image in sorted(pre.glob("*.nii*")):
            stem = image.name.split(".")[0].upper()
            if modality := next((mod for key, mod in _MSSEG if key in stem), None):  # not DP (proton density)
                items.append(_item(image, label, modality, "MSSEG2016", "ms", subject))
    return _need(items, root, "MSSEG 2016 Preprocessed_Data folders with images")


def wmh2017(root: str | Path, other: str = "background") -> list[Item]:
    """MICCAI WMH 2017: ``<site>/<id>/pre/{FLAIR,T1}.nii.gz`` and ``<site>/<id>/wmh.nii.gz``."""
    if other not in ("background", "lesion"):
        raise ValueError(f"WMH 'other pathology' must be 'background' or 'lesion', got {other!r}")
    root = _root(root)
    values = [1] if other == "background" else [1, 2]
    items = []
    for pre in sorted(p for p in root.rglob("pre") if p.is_dir()):
        case = pre.parent
        subject, label = f"{case.parent.name}_{case.name}", case / "wmh.nii.gz"
        for modality in ("FLAIR", "T1"):
            if (image := pre / f"{modality}.nii.gz").is_file():
                items.append(_item(image, label, modality, "WMH2017", "wmh", subject, label_values=values))
    return _need(items, root, "WMH 2017 cases (<site>/<id>/pre/FLAIR.nii.gz)")


def nnunet_folder(root: str | Path, dataset: str | None = None, lesion_type: str = "unknown") -> list[Item]:
    """An nnU-Net raw dataset: one item per channel file, modality from ``dataset.json`` ``channel_names``."""
    root = _root(root)
    meta_file = root / "dataset.json"
    if not meta_file.is_file():
        raise FileNotFoundError(f"{meta_file} not found: --folder expects an nnU-Net raw dataset folder")
    try:
        meta = json.loads(meta_file.read_text())
        channels = meta.get("channel_names") or meta["modality"]
    except (json.JSONDecodeError, KeyError) as e:
        raise ValueError(f"{meta_file}: needs a 'channel_names' mapping ({e})") from e
    ending = meta.get("file_ending", ".nii.gz")
    modalities = {int(k): canonical_modality(v, where=f"{meta_file} channel_names[{k!r}]") for k, v in channels.items()}
    dataset = dataset or root.name
    items = []
    for image in sorted((root / "imagesTr").glob(f"*_[0-9][0-9][0-9][0-9]{ending}")):
        case, channel = image.name[: -len(ending)].rsplit("_", 1)
        if int(channel) not in modalities:
            raise ValueError(f"{image}: channel {channel} is not in {meta_file} channel_names")
        label = root / "labelsTr" / f"{case}{ending}"
        items.append(_item(image, label, modalities[int(channel)], dataset, lesion_type, case))
    return _need(items, root / "imagesTr", f"nnU-Net images (<case>_XXXX{ending})")


def csv_table(path: str | Path) -> list[Item]:
    """Anything else: a CSV with ``image,label`` and optional ``modality,subject,dataset,lesion_type`` columns."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"CSV datalist not found: {path}")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    if not rows:
        raise ValueError(f"{path}: no rows")
    if missing := {"image", "label"} - set(rows[0]):
        raise ValueError(f"{path}: missing column(s) {sorted(missing)}; found {sorted(rows[0])}")
    items = []
    for n, row in enumerate(rows, start=2):
        image, label = (path.parent / row["image"]), (path.parent / row["label"])
        if not image.is_file():
            raise FileNotFoundError(f"{path} line {n}: image not found: {image}")
        modality = canonical_modality(row.get("modality"), where=f"{path} line {n}")
        subject = row.get("subject") or image.name.split(".")[0]
        dataset = row.get("dataset") or path.stem
        items.append(_item(image, label, modality, dataset, row.get("lesion_type") or "unknown", subject))
    return items


CONVERTERS: dict[str, Callable[..., list[Item]]] = dict(
    brats=brats, atlas=atlas2, isles=isles2022, msseg=msseg2016, wmh=wmh2017, folder=nnunet_folder, csv=csv_table
)
