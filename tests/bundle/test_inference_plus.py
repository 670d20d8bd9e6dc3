"""MoME+ inference (inference.json + inference_plus.json) on phantom cases: case folders and a CSV with sequences
missing, a sequence on another grid, and the cases that must fail as rows of their own (no usable sequence, two
images of one sequence, sequences that do not overlap). The weights are an untrained small MoME+ with its record:
these tests check where labels go and what the reports say, not how well it segments."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.mome_plus import PLUS_MODALITIES, MoMEPlus
from scripts.record import KEY

from .test_workflows import _chain, workflow

_BRATS = {"T1": "t1", "T1c": "t1ce", "T2": "t2", "FLAIR": "flair"}


@pytest.fixture(scope="module")
def weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("plus_weights")
    torch.manual_seed(0)
    record = {"network": "MoMEPlus", "preset": "small", "modalities": list(PLUS_MODALITIES), "num_classes": 2,
              "gate_activation": None, "spacing": 2.0, "register": False, "normalization": "brain",
              "patch_size": [32, 32, 32]}  # fmt: skip
    torch.save({"model": MoMEPlus("small").state_dict(), KEY: record}, folder / "model_plus.pt")
    return folder


@pytest.fixture(scope="module")
def subject(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One BraTS 2021 phantom's four sequences cropped to 48^3 around its centre (their files keep BraTS names)."""
    folder = tmp_path_factory.mktemp("subject")
    flair = sorted(phantom_root.rglob("BraTS2021_*_flair.nii.gz"))[0]
    out = {}
    for sequence, suffix in _BRATS.items():
        img = nib.load(str(flair).replace("_flair.nii.gz", f"_{suffix}.nii.gz"))
        c = [s // 2 for s in img.shape[:3]]
        crop = img.slicer[c[0] - 24 : c[0] + 24, c[1] - 24 : c[1] + 24, c[2] - 24 : c[2] + 24]
        out[sequence] = folder / f"sub_{suffix}.nii.gz"
        nib.save(crop, out[sequence])
    return out


def _link(folder: Path, files: dict[str, Path]) -> Path:
    folder.mkdir(parents=True)
    for path in files.values():
        (folder / path.name).symlink_to(path)
    return folder


def _rows(out: Path) -> dict[str, dict]:
    with (out / "cohort.csv").open(newline="") as f:
        return {r["case"]: r for r in csv.DictReader(f)}


def test_cases_from_folders_and_a_csv_get_labels_on_their_first_sequence(
    subject: dict[str, Path], weights: Path, tmp_path: Path
) -> None:
    cases = tmp_path / "cases"
    _link(cases / "full.v1", subject)  # a dot in a case's name stays in its outputs' names
    _link(cases / "flair_t2", {s: subject[s] for s in ("FLAIR", "T2")})
    # T1 on a coarser, shifted grid of the same space: resampled onto the case's first sequence
    t1 = nib.load(subject["T1"])
    coarse = nib.Nifti1Image(
        np.asarray(t1.dataobj)[::2, ::2, ::2].astype(np.float32), t1.affine @ np.diag([2, 2, 2, 1])
    )
    (cases / "resampled").mkdir()
    nib.save(coarse, cases / "resampled" / "T1.nii.gz")
    (cases / "resampled" / "FLAIR.nii.gz").symlink_to(subject["FLAIR"])
    # the bad cases, each a row of its own
    (cases / "dwi_only").mkdir()
    (cases / "dwi_only" / "case_dwi.nii.gz").symlink_to(subject["T2"])
    (cases / "dwi_only" / "seg.nii.gz").symlink_to(subject["T2"])
    _link(cases / "two_flairs", {"FLAIR": subject["FLAIR"]})
    (cases / "two_flairs" / "FLAIR.nii.gz").symlink_to(subject["FLAIR"])
    far = nib.Nifti1Image(np.asarray(t1.dataobj).astype(np.float32), t1.affine @ _shift(500.0))
    (cases / "apart").mkdir()
    nib.save(far, cases / "apart" / "T1.nii.gz")
    (cases / "apart" / "FLAIR.nii.gz").symlink_to(subject["FLAIR"])
    table = tmp_path / "cases.csv"  # FLAIR first: the label goes on the FLAIR grid; T1c missing (empty cell)
    table.write_text(f"case,FLAIR,T1c,T1\nfrom_csv,{subject['FLAIR']},,{subject['T1']}\n")

    out = tmp_path / "out"
    wf = workflow(["inference.json", "inference_plus.json"], workflow_type="infer", cpu=False,
                  input=[str(cases), str(table)], output_dir=str(out), ckpt_dir=str(weights))  # fmt: skip
    wf.initialize()
    with pytest.raises(Exception) as err:
        wf.run()
    assert "3 of 7 scans failed" in _chain(err.value)
    rows = _rows(out)
    assert set(rows) == {"full.v1", "flair_t2", "resampled", "dwi_only", "two_flairs", "apart", "from_csv"}
    assert "none of the sequences T1, T1c, T2, FLAIR" in rows["dwi_only"]["error"]
    assert (
        "case_dwi.nii.gz (DWI, not one of this model's), seg.nii.gz (no sequence in its name)"
        in rows["dwi_only"]["error"]
    )
    assert "two FLAIR images" in rows["two_flairs"]["error"] and "sub_flair.nii.gz" in rows["two_flairs"]["error"]
    assert "FLAIR.nii.gz does not overlap T1.nii.gz in space" in rows["apart"]["error"]
    expected = {
        "full.v1": ("T1", "T1+T1c+T2+FLAIR"),
        "flair_t2": ("T2", "T2+FLAIR"),
        "resampled": ("T1", "T1+FLAIR"),
        "from_csv": ("FLAIR", "FLAIR+T1"),
    }
    for case, (reference, sequences) in expected.items():
        row = rows[case]
        assert row["status"] == "ok", row
        assert row["sequence"] == sequences
        report = json.loads(Path(row["report"]).read_text())
        assert report["case"] == case and report["reference"] == reference
        assert list(report["sequences"]) == sequences.split("+")
        ref = coarse if case == "resampled" else nib.load(subject[reference])
        seg = nib.load(out / f"{case}_seg.nii.gz")
        assert Path(row["prediction"]) == out / f"{case}_seg.nii.gz"
        assert seg.shape == ref.shape  # the first given sequence's grid
        np.testing.assert_allclose(seg.affine, ref.affine, atol=1e-4)
        assert set(report["gate_share"]) == set(PLUS_MODALITIES)


def _shift(mm: float) -> np.ndarray:
    m = np.eye(4)
    m[0, 3] = mm
    return m


def test_single_sequence_inference_refuses_mome_plus_weights(subject: dict[str, Path], weights: Path, tmp_path: Path):
    wf = workflow(["inference.json"], workflow_type="infer", cpu=False, input=str(subject["FLAIR"]),
                  output_dir=str(tmp_path / "out"), ckpt_path=str(weights / "model_plus.pt"))  # fmt: skip
    with pytest.raises(Exception) as err:
        wf.initialize()
    assert "holds MoMEPlus weights and this config builds a MoME: use configs/inference.json with" in _chain(err.value)
