"""Each profile's tree uses exactly the public dataset's folders and file names (docs/DATASETS.md)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from phantoms import MODALITIES, PROFILES
from phantoms.profiles import get_profile

B21 = "brats2021/RSNA_ASNR_MICCAI_BraTS2021_TrainingData/BraTS2021_00000"
MET = "brats_mets/ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData/BraTS-MET-00001-000"
ATL = "atlas2/ATLAS_2/Training/R001"
ISL = "isles2022/ISLES-2022"
MSS = "msseg2016/Training/Center_01/Patient_01"
WMH = "wmh2017/Utrecht/0"

EXPECTED = {
    "brats2021": {f"{B21}/BraTS2021_00000_{m}.nii.gz" for m in ("flair", "t1", "t1ce", "t2", "seg")}
    | {f"{B21}/BraTS2021_00000_phantom.json"},
    "brats_mets": {f"{MET}/BraTS-MET-00001-000-{m}.nii.gz" for m in ("t1n", "t1c", "t2w", "t2f", "seg")}
    | {f"{MET}/BraTS-MET-00001-000-phantom.json"},
    "atlas2": {
        f"{ATL}/dataset_description.json",
        f"{ATL}/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_T1w.nii.gz",
        f"{ATL}/sub-r001s001/ses-1/anat/sub-r001s001_ses-1_space-MNI152NLin2009aSym_label-L_desc-T1lesion_mask.nii.gz",
        f"{ATL}/sourcedata/phantom/sub-r001s001_ses-1_phantom.json",
    },
    "isles2022": {
        f"{ISL}/dataset_description.json",
        f"{ISL}/participants.tsv",
        f"{ISL}/README",
        f"{ISL}/sub-strokecase0001/ses-0001/anat/sub-strokecase0001_ses-0001_FLAIR.nii.gz",
        f"{ISL}/sub-strokecase0001/ses-0001/anat/sub-strokecase0001_ses-0001_FLAIR.json",
        f"{ISL}/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.nii.gz",
        f"{ISL}/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_dwi.json",
        f"{ISL}/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_adc.nii.gz",
        f"{ISL}/sub-strokecase0001/ses-0001/dwi/sub-strokecase0001_ses-0001_adc.json",
        f"{ISL}/derivatives/sub-strokecase0001/ses-0001/sub-strokecase0001_ses-0001_msk.nii.gz",
        f"{ISL}/sourcedata/phantom/sub-strokecase0001_ses-0001_phantom.json",
    },
    "msseg2016": {f"{MSS}/Preprocessed_Data/{m}_preprocessed.nii.gz" for m in ("FLAIR", "T1", "GADO", "T2", "DP")}
    | {f"{MSS}/Masks/Consensus.nii.gz", f"{MSS}/Masks/Brain_Mask.nii.gz", f"{MSS}/phantom.json"},
    "wmh2017": {f"{WMH}/pre/FLAIR.nii.gz", f"{WMH}/pre/T1.nii.gz", f"{WMH}/wmh.nii.gz", f"{WMH}/phantom.json"},
}


def _files(root: Path, top: str) -> set[str]:
    return {str(p.relative_to(root)) for p in (root / top).rglob("*") if p.is_file()}


def _layout_files(profile: str, index: int) -> set[str]:
    p = get_profile(profile)
    layout = p.layout(p, index)
    return {*layout.files.values(), layout.sidecar, *layout.bids_json.values()}


@pytest.mark.parametrize("profile", list(PROFILES))
def test_tree_has_exactly_the_public_file_names(phantom_tree: Path, profile: str) -> None:
    # the first subject's names are written out by hand above; the tree's second subject follows the same layout
    assert _layout_files(profile, 0) <= EXPECTED[profile]
    site_files = {"atlas2": {"atlas2/ATLAS_2/Training/R002/dataset_description.json"}}  # subject 2 is at site 2
    second = _layout_files(profile, 1) | site_files.get(profile, set())
    assert _files(phantom_tree, profile) == EXPECTED[profile] | second


def test_top_level_holds_only_profiles_manifest_and_qa(phantom_tree: Path) -> None:
    assert {p.name for p in phantom_tree.iterdir()} == {*PROFILES, "phantom_manifest.json", "qa"}
    assert not list(phantom_tree.parent.glob(".tree.partial-*"))


def test_site_and_subject_numbering_follow_the_datasets() -> None:
    def files(profile: str, i: int) -> dict[str, str]:
        p = get_profile(profile)
        return p.layout(p, i).files

    assert files("wmh2017", 1)["FLAIR"] == "wmh2017/Singapore/50/pre/FLAIR.nii.gz"
    assert files("wmh2017", 5)["label"] == "wmh2017/GE3T/101/wmh.nii.gz"
    assert files("atlas2", 4)["T1"].startswith("atlas2/ATLAS_2/Training/R002/sub-r002s002/ses-1/anat/sub-r002s002_")
    assert (
        files("msseg2016", 4)["T1c"]
        == "msseg2016/Training/Center_07/Patient_02/Preprocessed_Data/GADO_preprocessed.nii.gz"
    )
    assert files("isles2022", 41)["DWI"].endswith(
        "sub-strokecase0042/ses-0001/dwi/sub-strokecase0042_ses-0001_dwi.nii.gz"
    )
    assert files("brats_mets", 9)["FLAIR"].endswith("BraTS-MET-00010-000/BraTS-MET-00010-000-t2f.nii.gz")


def test_manifest_describes_every_subject(phantom_tree: Path, manifest: dict) -> None:
    assert list(manifest["profiles"]) == list(PROFILES)
    assert manifest["spacing_mm"] == 2.0 and manifest["seed"] == 0
    allowed_types = {"glioma", "metastasis", "ms", "wmh", "stroke_hyperacute", "stroke_acute", "stroke_subacute"}
    allowed_types |= {"stroke_chronic"}
    for name, prof in manifest["profiles"].items():
        assert prof["modalities"] == list(get_profile(name).modalities)
        assert len(prof["subjects"]) == manifest["subjects_per_profile"]
        for entry in prof["subjects"]:
            assert set(entry["images"]) == set(prof["modalities"]) and set(entry["images"]) <= set(MODALITIES)
            assert entry["lesion_type"] in allowed_types and entry["lesion_type"] in prof["lesion_types"]
            for rel in [*entry["images"].values(), entry["label"], entry["sidecar"], *entry["extra_images"].values()]:
                assert (phantom_tree / rel).is_file(), rel


def test_nifti_geometry_dtypes_and_label_vocabulary(phantom_tree: Path, manifest: dict) -> None:
    for name, prof in manifest["profiles"].items():
        entry = prof["subjects"][0]
        label = nib.load(phantom_tree / entry["label"])
        assert label.get_data_dtype() == np.uint8
        values = set(np.unique(np.asarray(label.dataobj)).tolist())
        assert values - {0} and values <= {0, *map(int, prof["labels"])}, (name, values)
        for modality, rel in entry["images"].items():
            img = nib.load(phantom_tree / rel)
            assert img.get_data_dtype() == np.float32
            assert nib.aff2axcodes(img.affine) == ("R", "A", "S")
            assert np.allclose(img.affine[:3, :3], np.diag(img.header.get_zooms()[:3]))
            if name != "isles2022" or modality == "FLAIR":
                assert img.shape == (99, 117, 95) and np.allclose(img.header.get_zooms(), 2.0)
                assert np.allclose(img.affine[:3, 3], (-97.5, -133.5, -71.5))  # MNI152NLin2009aSym grid at 2 mm
        if name == "isles2022":  # DWI, ADC and mask share a native grid; FLAIR has its own
            dwi, adc, flair = (nib.load(phantom_tree / entry["images"][m]) for m in ("DWI", "ADC", "FLAIR"))
            assert dwi.shape == adc.shape == label.shape and np.allclose(dwi.affine, label.affine)
            assert dwi.shape != flair.shape and not np.allclose(dwi.affine, flair.affine)
            assert np.allclose(dwi.header.get_zooms(), (2.0, 2.0, 4.0))


def test_sidecar_records_the_parameters_that_made_the_subject(phantom_tree: Path, manifest: dict) -> None:
    for name, prof in manifest["profiles"].items():
        entry = prof["subjects"][0]
        meta = json.loads((phantom_tree / entry["sidecar"]).read_text())
        assert meta["profile"] == name and meta["seed"] == 0 and meta["subject"] == entry["subject"]
        for modality in prof["modalities"]:
            p = meta["protocol"][modality]
            assert modality == "ADC" or {"TR", "TE", "sequence", "slice_mm"} <= set(p)
        assert meta["protocol"].get("FLAIR", {"TI": 1})["TI"] > 0
        assert {"WM", "GM", "CSF"} <= set(meta["tissue_params"])
        assert set(meta["tissue_params"]["WM"]) == {"T1", "T2", "PD", "ADC", "CGd"}
        lesion = meta["lesions"][0]
        assert lesion["lesion_type"] == entry["lesion_type"] and lesion["count"] >= 1
        assert lesion["total_volume_ml"] > 0 and lesion["volumes_ml"]
        for acq in meta["acquisition"].values():
            assert "units" in acq or {"bias_max_over_min", "noise_sigma"} <= set(acq)
    isles = manifest["profiles"]["isles2022"]["subjects"][0]
    assert json.loads((phantom_tree / isles["images"]["DWI"].replace(".nii.gz", ".json")).read_text())["bValue"] == 1000
