"""Converters on the phantom trees, splits, and what bad input gets."""

from __future__ import annotations

import csv
import gzip
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from scripts.data import converters
from scripts.data.datalist import PHANTOM_FOLDERS, load, main, split
from scripts.errors import InputError


def _run(args: list[str]) -> dict:
    return main(args)


@pytest.mark.parametrize(
    ("flag", "folder", "n_subjects", "modalities", "dataset", "lesion"),
    [
        ("brats", "brats2021", 2, {"T1", "T1c", "T2", "FLAIR"}, "BraTS2021", "glioma"),
        ("brats", "brats_mets", 2, {"T1", "T1c", "T2", "FLAIR"}, "BraTS2023-MET", "metastasis"),
        ("atlas", "atlas2", 2, {"T1"}, "ATLAS2", "stroke_chronic"),
        ("isles", "isles2022", 2, {"DWI"}, "ISLES2022", "stroke_acute"),
        ("msseg", "msseg2016", 2, {"T1", "T1c", "T2", "FLAIR"}, "MSSEG2016", "ms"),
        ("wmh", "wmh2017", 2, {"T1", "FLAIR"}, "WMH2017", "wmh"),
    ],
)
def test_converter_on_phantom_tree(phantom_root, flag, folder, n_subjects, modalities, dataset, lesion) -> None:
    items = converters.CONVERTERS[flag](phantom_root / folder)
    assert {i["subject"] for i in items} and len({i["subject"] for i in items}) == n_subjects
    assert {i["modality"] for i in items} == modalities
    assert len(items) == n_subjects * len(modalities)
    assert {i["dataset"] for i in items} == {dataset}
    assert {i["lesion_type"] for i in items} == {lesion}
    for item in items:
        assert Path(item["image"]).is_file() and Path(item["label"]).is_file()
        img, lab = nib.load(item["image"]), nib.load(item["label"])
        assert img.shape == lab.shape  # every listed image is on its label's grid (ISLES FLAIR is not listed)


def test_wmh_other_pathology_is_explicit(phantom_root) -> None:
    default = converters.wmh2017(phantom_root / "wmh2017")
    merged = converters.wmh2017(phantom_root / "wmh2017", other="lesion")
    assert {tuple(i["label_values"]) for i in default} == {(1,)}
    assert {tuple(i["label_values"]) for i in merged} == {(1, 2)}
    with pytest.raises(ValueError, match="other pathology"):
        converters.wmh2017(phantom_root / "wmh2017", other="ignore")


def test_cli_builds_disjoint_deterministic_splits(phantom_root, tmp_path) -> None:
    out = tmp_path / "datalist.json"
    first = _run(["--out", str(out), "--phantoms", str(phantom_root), "--val", "0.5", "--test", "0", "--seed", "3"])
    again = _run(
        [
            "--out",
            str(tmp_path / "again.json"),
            "--phantoms",
            str(phantom_root),
            "--val",
            "0.5",
            "--test",
            "0",
            "--seed",
            "3",
        ]
    )
    assert first == again
    on_disk = json.loads(out.read_text())
    assert set(on_disk) >= {"training", "validation", "test"}
    n = sum(len(on_disk[s]) for s in ("training", "validation", "test"))
    assert n == 2 * (4 + 4 + 1 + 1 + 4 + 2)
    subjects = {s: {(i["dataset"], i["subject"]) for i in on_disk[s]} for s in ("training", "validation")}
    assert not subjects["training"] & subjects["validation"]
    assert {i["dataset"] for i in on_disk["validation"]} == {i["dataset"] for i in on_disk["training"]}
    # relative paths resolve against the datalist's folder
    items = load(out, "training")
    assert all(Path(i["image"]).is_file() for i in items)
    assert {i["modality"] for i in load(out, "training", modality="flair")} == {"FLAIR"}


def test_holdout_dataset_goes_to_test_only(phantom_root) -> None:
    items = converters.wmh2017(phantom_root / "wmh2017") + converters.atlas2(phantom_root / "atlas2")
    out = split(items, 0.5, 0.0, seed=0, holdout=("ATLAS2",))
    assert {i["dataset"] for i in out["test"]} == {"ATLAS2"}
    assert "ATLAS2" not in {i["dataset"] for i in out["training"] + out["validation"]}


def _copy(phantom_root: Path, folder: str, tmp_path: Path) -> Path:
    dst = tmp_path / folder
    shutil.copytree(phantom_root / folder, dst)
    return dst


def _fails(tmp_path: Path, args: list[str], capsys, *needles: str) -> None:
    out = tmp_path / "datalist.json"
    with pytest.raises(SystemExit) as err:
        _run(["--out", str(out), *args])
    assert err.value.code == 2
    message = capsys.readouterr().err
    for needle in needles:
        assert needle in message, message
    assert not out.exists()
    assert not list(tmp_path.glob(".datalist.json*"))  # no temporary left behind


def test_missing_label_is_named(phantom_root, tmp_path, capsys) -> None:
    root = _copy(phantom_root, "wmh2017", tmp_path)
    label = next(root.rglob("wmh.nii.gz"))
    label.unlink()
    _fails(tmp_path, ["--wmh", str(root)], capsys, "no label for image", str(label))


def test_shape_and_affine_mismatch_are_named(phantom_root, tmp_path, capsys) -> None:
    root = _copy(phantom_root, "atlas2", tmp_path)
    label = next(root.rglob("*_mask.nii.gz"))
    img = nib.load(label)
    data = np.asarray(img.dataobj)
    nib.save(nib.Nifti1Image(data[:-2], img.affine), label)
    _fails(tmp_path, ["--atlas", str(root)], capsys, "does not match", label.name)
    shifted = img.affine.copy()
    shifted[0, 3] += 5
    nib.save(nib.Nifti1Image(data, shifted), label)
    _fails(tmp_path, ["--atlas", str(root)], capsys, "not on the grid", label.name)


def test_corrupt_nifti_is_named(phantom_root, tmp_path, capsys) -> None:
    root = _copy(phantom_root, "isles2022", tmp_path)
    image = next(root.rglob("*_dwi.nii.gz"))
    raw = gzip.decompress(image.read_bytes())
    image.write_bytes(gzip.compress(raw)[: len(raw) // 50])  # truncated gzip stream
    _fails(tmp_path, ["--isles", str(root)], capsys, "cannot be read", image.name)


def test_unknown_modality_and_empty_folder(phantom_root, tmp_path, capsys) -> None:
    item = converters.atlas2(phantom_root / "atlas2")[0]
    table = tmp_path / "cases.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label", "modality"])
        writer.writerow([item["image"], item["label"], "T3"])
    _fails(tmp_path, ["--csv", str(table)], capsys, "unknown modality 'T3'", "cases.csv line 2")
    empty = tmp_path / "empty"
    empty.mkdir()
    _fails(tmp_path, ["--brats", str(empty)], capsys, "no BraTS", str(empty))
    _fails(tmp_path, ["--wmh", str(tmp_path / "nowhere")], capsys, "does not exist", "nowhere")


def test_csv_and_nnunet_folder_forms(phantom_root, tmp_path) -> None:
    items = converters.brats(phantom_root / "brats2021")[:4]
    table = tmp_path / "cases.csv"
    with table.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "label", "modality", "subject"])
        for i in items:
            writer.writerow([i["image"], i["label"], "", i["subject"]])  # empty modality = unknown, allowed
    assert {i["modality"] for i in converters.csv_table(table)} == {None}

    ds = tmp_path / "Dataset001_Lesions"
    (ds / "imagesTr").mkdir(parents=True)
    (ds / "labelsTr").mkdir()
    (ds / "dataset.json").write_text(
        json.dumps(
            {
                "channel_names": {"0": "FLAIR", "1": "t1ce"},
                "labels": {"background": 0, "lesion": 1},
                "numTraining": 1,
                "file_ending": ".nii.gz",
            }
        )
    )
    subject = items[0]["subject"]
    by_mod = {i["modality"]: i for i in converters.brats(phantom_root / "brats2021") if i["subject"] == subject}
    shutil.copy(by_mod["FLAIR"]["image"], ds / "imagesTr" / "case_0000.nii.gz")
    shutil.copy(by_mod["T1c"]["image"], ds / "imagesTr" / "case_0001.nii.gz")
    shutil.copy(by_mod["FLAIR"]["label"], ds / "labelsTr" / "case.nii.gz")
    found = converters.nnunet_folder(ds)
    assert sorted(i["modality"] for i in found) == ["FLAIR", "T1c"]
    assert {i["dataset"] for i in found} == {"Dataset001_Lesions"}


def test_load_errors_name_the_file(tmp_path) -> None:
    with pytest.raises(InputError, match="dataset folder not found"):
        load(tmp_path / "missing" / "datalist.json")
    with pytest.raises(InputError, match="datalist not found"):
        load(tmp_path / "datalist.json")
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "a.nii.gz"}]}))
    with pytest.raises(InputError, match="item 0 of 'training' has no 'label'"):
        load(tmp_path / "datalist.json")
    with pytest.raises(InputError, match="no 'validation' list"):
        load(tmp_path / "datalist.json", "validation")
    # a hand-edited datalist: checked from the headers before anything is loaded or cached
    (tmp_path / "datalist.json").write_text(json.dumps({"training": [{"image": "a.nii.gz", "label": "b.nii.gz"}]}))
    with pytest.raises(InputError, match="a.nii.gz: no such file"):
        load(tmp_path / "datalist.json")
    assert load(tmp_path / "datalist.json", check=False)[0]["image"].endswith("a.nii.gz")


def test_phantom_folder_map_covers_every_profile() -> None:
    from phantoms import PROFILES

    assert sorted(n for names in PHANTOM_FOLDERS.values() for n in names) == sorted(PROFILES)
