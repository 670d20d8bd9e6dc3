"""MoME+ cases: grouping a subject's images, stacking them on one grid, sequence dropout, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import LoadImaged

from scripts.data.cases import (
    DropSequencesd,
    FixedSubsetd,
    KeepSequencesd,
    StackSequencesd,
    group_cases,
    list_cases,
    load_cases,
)
from scripts.data.datalist import build, main
from scripts.data.modality import modality_in_name
from scripts.errors import InputError
from scripts.mome_plus import PLUS_MODALITIES


def _items(phantom_root: Path) -> list[dict]:
    return build({"brats": [str(phantom_root / "brats2021")], "isles": [str(phantom_root / "isles2022")]})


def test_a_brats_subject_is_one_case_of_four_sequences(phantom_root: Path) -> None:
    cases, skipped = group_cases(_items(phantom_root), PLUS_MODALITIES)
    brats = [c for c in cases if c["dataset"] == "BraTS2021"]
    assert len(brats) == 2 and all(c["available"] == [1, 1, 1, 1] for c in brats)
    assert all(Path(brats[0][s]).is_file() for s in PLUS_MODALITIES)
    assert len(skipped) == 2 and all("ISLES2022" in s and "DWI" in s for s in skipped)  # DWI: not a K=4 sequence
    five, _ = group_cases(_items(phantom_root), (*PLUS_MODALITIES, "DWI"))
    isles = [c for c in five if c["dataset"] == "ISLES2022"]
    assert isles and all(c["available"] == [0, 0, 0, 0, 1] for c in isles)


def test_duplicate_sequences_and_disagreeing_labels_are_refused() -> None:
    a = {"image": "a_flair.nii.gz", "label": "seg.nii.gz", "modality": "FLAIR", "dataset": "D", "subject": "1"}
    with pytest.raises(InputError, match="two FLAIR images, a_flair.nii.gz and b_flair.nii.gz"):
        group_cases([a, {**a, "image": "b_flair.nii.gz"}], PLUS_MODALITIES)
    with pytest.raises(InputError, match="different labels"):
        group_cases([a, {**a, "image": "a_t1.nii.gz", "modality": "T1", "label": "other.nii.gz"}], PLUS_MODALITIES)


def _write(path: Path, data: np.ndarray, affine: np.ndarray) -> str:
    nib.save(nib.Nifti1Image(data.astype(np.float32), affine), path)
    return str(path)


def _load(case: dict) -> dict:
    """The two transforms called one after the other (``Compose`` would wrap the refusal in a RuntimeError)."""
    loaded = LoadImaged(list(PLUS_MODALITIES), ensure_channel_first=True, allow_missing_keys=True)(case)
    return StackSequencesd(PLUS_MODALITIES)(loaded)


def test_stacking_fills_missing_sequences_with_zeros_and_resamples_other_grids(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    eye = np.eye(4)
    t1 = rng.random((16, 16, 16)) + 1
    case = {"T1": _write(tmp_path / "t1.nii.gz", t1, eye)}
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])  # FLAIR at 2 mm over the same field of view
    case["FLAIR"] = _write(tmp_path / "flair.nii.gz", np.full((8, 8, 8), 3.0), coarse)
    out = _load(case)
    assert out["image"].shape == (4, 16, 16, 16)
    assert out["available"].tolist() == [1, 0, 0, 1]
    torch.testing.assert_close(out["image"][0], torch.as_tensor(t1, dtype=torch.float32))
    assert (out["image"][1:3] == 0).all()
    inside = out["image"][3, :14, :14, :14]  # resampled onto the T1 grid (edges may fall outside the 2 mm one)
    torch.testing.assert_close(inside, torch.full_like(inside, 3.0))


def test_sequences_that_do_not_overlap_are_refused(tmp_path: Path) -> None:
    far = np.eye(4)
    far[:3, 3] = 500.0
    case = {
        "T1": _write(tmp_path / "t1.nii.gz", np.ones((8, 8, 8)), np.eye(4)),
        "T2": _write(tmp_path / "t2.nii.gz", np.ones((8, 8, 8)), far),
    }
    with pytest.raises(InputError, match="t2.nii.gz does not overlap t1.nii.gz"):
        _load(case)
    with pytest.raises(InputError, match="none of the sequences"):
        StackSequencesd(PLUS_MODALITIES)({"label": "x"})


def test_dropout_keeps_a_non_empty_subset_of_the_present_sequences() -> None:
    image = torch.arange(1.0, 5.0)[:, None, None, None].expand(4, 2, 2, 2).clone()
    sample = {"image": image, "available": torch.tensor([1.0, 0.0, 1.0, 1.0])}
    drop = DropSequencesd()
    drop.set_random_state(0)
    seen = set()
    for _ in range(200):
        out = drop(sample)
        kept = tuple(int(a) for a in out["available"].tolist())
        assert sum(kept) >= 1 and kept[1] == 0  # never an absent sequence, never nothing
        for k in range(4):
            expected = image[k] if kept[k] else torch.zeros_like(image[k])
            assert torch.equal(out["image"][k], expected)
        seen.add(kept)
    assert len(seen) == 7  # all 2^3 - 1 subsets of the three present sequences
    only_all = DropSequencesd(prior=lambda subset: float(len(subset) == 3))
    assert only_all(sample)["available"].tolist() == [1.0, 0.0, 1.0, 1.0]


def test_an_evaluation_keeps_the_named_sequences_by_any_spelling() -> None:
    image = torch.arange(1.0, 5.0)[:, None, None, None].expand(4, 2, 2, 2).clone()
    sample = {"image": image, "available": torch.ones(4)}
    out = KeepSequencesd(PLUS_MODALITIES, ["t1ce", "flair", "FLAIR"])(sample)
    assert out["available"].tolist() == [0, 1, 0, 1] and (out["image"][0] == 0).all() and (out["image"][1] == 2).all()
    with pytest.raises(InputError, match="got a case without T2"):
        KeepSequencesd(PLUS_MODALITIES, ["T2"])({"image": image, "available": torch.tensor([1.0, 1.0, 0.0, 1.0])})
    with pytest.raises(InputError, match="expected a non-empty subset"):
        KeepSequencesd(PLUS_MODALITIES, ["DWI"])
    assert KeepSequencesd(PLUS_MODALITIES, None)(sample)["available"].tolist() == [1, 1, 1, 1]


def test_validation_keeps_one_fixed_subset_per_case() -> None:
    image = torch.arange(1.0, 5.0)[:, None, None, None].expand(4, 2, 2, 2).clone()
    kept = {}
    for n in range(40):
        label = f"/d/sub{n}/Masks/seg.nii.gz"
        sample = {"image": image, "available": torch.tensor([1.0, 1.0, 1.0, 1.0]), "label": label}
        first, again = FixedSubsetd()(sample), FixedSubsetd()(sample)
        assert torch.equal(first["available"], again["available"]) and first["available"].sum() >= 1
        assert torch.equal(first["image"][first["available"] == 0], torch.zeros_like(image[first["available"] == 0]))
        kept[n] = tuple(first["available"].tolist())
    assert len(set(kept.values())) >= 8  # cases are spread over the 15 subsets, not all on one


def test_a_case_is_on_its_labels_grid_and_a_label_on_no_sequences_grid_is_refused(tmp_path: Path) -> None:
    coarse = np.diag([2.0, 2.0, 2.0, 1.0])
    _write(tmp_path / "t1.nii.gz", np.random.default_rng(0).random((8, 8, 8)) + 1, coarse)  # another grid
    _write(tmp_path / "flair.nii.gz", np.random.default_rng(1).random((16, 16, 16)) + 1, np.eye(4))
    _write(tmp_path / "seg.nii.gz", np.zeros((16, 16, 16)), np.eye(4))  # on the FLAIR grid
    case = {"T1": "t1.nii.gz", "FLAIR": "flair.nii.gz", "label": "seg.nii.gz", "available": [1, 0, 0, 1]}
    path = tmp_path / "datalist_cases.json"
    path.write_text(json.dumps({"sequences": list(PLUS_MODALITIES), "training": [case]}))
    (item,) = load_cases(path, "training", PLUS_MODALITIES)
    assert item["reference"] == "FLAIR"
    loaded = LoadImaged([*PLUS_MODALITIES, "label"], ensure_channel_first=True, allow_missing_keys=True)(item)
    assert StackSequencesd(PLUS_MODALITIES)(loaded)["image"].shape == (4, 16, 16, 16)
    _write(tmp_path / "seg.nii.gz", np.zeros((12, 12, 12)), np.eye(4))
    with pytest.raises(InputError, match="seg.nii.gz .* is on the grid of none of its sequences"):
        load_cases(path, "training", PLUS_MODALITIES)


def test_the_datalist_cli_writes_cases_on_the_same_subject_splits(phantom_root: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "cases.json"
    args = ["--out", str(out), "--phantoms", str(phantom_root), "--val", "0", "--test", "0.5", "--seed", "0"]
    cases = main([*args, "--cases", "t1", "t1ce", "t2", "flair"])
    assert cases["sequences"] == list(PLUS_MODALITIES)
    singles = main(["--out", str(tmp_path / "singles.json"), *args[2:]])
    for split in ("training", "test"):
        subjects = {(i["dataset"], i["subject"]) for i in singles[split] if i["modality"] in PLUS_MODALITIES}
        assert {(c["dataset"], c["subject"]) for c in cases[split]} == subjects
    case = next(c for c in cases["training"] if c["dataset"] == "BraTS2021")
    assert (out.parent / case["FLAIR"]).is_file() and (out.parent / case["label"]).is_file()  # relative to the file
    assert "skipped (training): ISLES2022" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([*args, "--cases", "t1", "T1"])
    assert "expected distinct sequence names" in capsys.readouterr().err


@pytest.mark.parametrize(
    "name, sequence",
    [
        ("BraTS2021_00001_t1ce.nii.gz", "T1c"),
        ("BraTS-GLI-00001-000-t2f.nii.gz", "FLAIR"),
        ("FLAIR_preprocessed.nii.gz", "FLAIR"),
        ("sub-01_ses-1_T1w.nii", "T1"),
        ("brain_t1_gd.mha", "T1c"),
        ("case_t2-flair.nii.gz", "FLAIR"),
        ("seg.nii.gz", None),
        ("x_adc.nii.gz", None),
    ],
)
def test_a_file_name_states_its_sequence(name: str, sequence: str | None) -> None:
    assert modality_in_name(name) == sequence


def test_a_name_stating_two_sequences_is_refused() -> None:
    with pytest.raises(InputError, match="t1_to_flair.nii.gz: its name names FLAIR and T1"):
        modality_in_name("t1_to_flair.nii.gz")


def _touch(folder: Path, *names: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name in names:
        (folder / name).write_bytes(b"")  # list_cases reads names only; the cohort checks each file in its turn
    return folder


def test_case_folders_and_a_case_csv_are_listed_with_their_first_sequence(tmp_path: Path) -> None:
    root = tmp_path / "cases"
    _touch(root / "a", "a_flair.nii.gz", "a_t1.nii.gz", "a_seg.nii.gz", "notes.txt")
    _touch(root / "b", "b_dwi.nii.gz")
    _touch(root / ".hidden", "x_t1.nii.gz")
    (tmp_path / "t2.nii.gz").write_bytes(b"")
    table = tmp_path / "cases.csv"
    table.write_text("Case,t2f,T1w,label\nc1,,t2.nii.gz,\nc2,/abs/flair.nii.gz,t2.nii.gz,seg.nii.gz\n")
    a, b, c1, c2 = list_cases([root, table], PLUS_MODALITIES)
    assert a["case"] == "a" and a["sequences"] == ["T1", "FLAIR"] and a["reference"] == "T1"
    assert a["image"] == a["T1"] == str(root / "a" / "a_t1.nii.gz")
    assert a["ignored"] == ["a_seg.nii.gz (no sequence in its name)"]
    assert "none of the sequences" in b["error"] and "b_dwi.nii.gz (DWI" in b["error"]
    assert c1["sequences"] == ["T1"] and c1["T1"] == str(tmp_path / "t2.nii.gz")
    assert c2["sequences"] == ["FLAIR", "T1"] and c2["image"] == "/abs/flair.nii.gz"  # CSV column order
    assert list_cases(root / "a", PLUS_MODALITIES)[0]["case"] == "a"  # one case folder


@pytest.mark.parametrize(
    "content, message",
    [
        ("case,FLIAR\nc1,x.nii.gz\n", "unknown modality 'FLIAR' in the header"),
        ("case,flair,t2f\nc1,x.nii.gz,y.nii.gz\n", "two columns for FLAIR"),
        ("case,DWI\nc1,x.nii.gz\n", "no column for any of T1, T1c, T2, FLAIR"),
        ("case,FLAIR\nc1,x.nii.gz\nc1,y.nii.gz\n", "two cases are named 'c1'"),
        ("case,FLAIR\n../up,x.nii.gz\n", "a case name is a plain file name"),
        ("case,FLAIR\n", "no rows"),
    ],
)
def test_bad_case_csvs_are_refused(tmp_path: Path, content: str, message: str) -> None:
    table = tmp_path / "cases.csv"
    table.write_text(content)
    with pytest.raises(InputError, match=message):
        list_cases(table, PLUS_MODALITIES)


def test_a_folder_without_cases_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no images .* in it or in its sub-folders"):
        list_cases(_touch(tmp_path / "empty", "readme.txt"), PLUS_MODALITIES)
    with pytest.raises(InputError, match="input case folder or CSV not found"):
        list_cases(tmp_path / "missing.nii.gz", PLUS_MODALITIES)
    (tmp_path / "one_flair.nii.gz").write_bytes(b"")
    with pytest.raises(InputError, match="is one image: MoME\\+ reads cases"):
        list_cases(tmp_path / "one_flair.nii.gz", PLUS_MODALITIES)
