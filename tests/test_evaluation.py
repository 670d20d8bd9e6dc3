"""Per-case numbers (``scripts.metrics``: Dice and HD95 in mm on the native grid, gate shares) and the evaluation's
tables: the averages, the lesion-wise groups and size bins, and the ``cases.csv`` / ``lesions.csv`` round trip."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from scripts.evaluation import fused_metrics, read_cases, summarise, write_cases, write_lesions
from scripts.metrics import case_metrics, gate_usage


def test_dice_and_hd95_in_millimetres() -> None:
    pred, label = np.zeros((10, 10, 10), bool), np.zeros((10, 10, 10), bool)
    pred[2, 5, 5] = True
    label[5, 5, 5] = True
    m = case_metrics(pred, label, spacing=(2.0, 1.0, 1.0))
    assert m["dice"] == 0.0
    assert m["hd95"] == pytest.approx(6.0)  # 3 voxels of 2 mm along the first axis
    assert case_metrics(pred, label, spacing=(1.0, 1.0, 1.0))["hd95"] == pytest.approx(3.0)
    label[2, 5, 5] = True  # 2 * 1 / (1 + 2)
    assert case_metrics(pred, label, (1, 1, 1))["dice"] == pytest.approx(2 / 3)


def test_empty_masks() -> None:
    empty = np.zeros((4, 4, 4), bool)
    one = empty.copy()
    one[1, 1, 1] = True
    assert case_metrics(empty, empty, (1, 1, 1))["dice"] == 1.0
    assert math.isnan(case_metrics(empty, empty, (1, 1, 1))["hd95"])
    assert case_metrics(one, empty, (1, 1, 1))["dice"] == 0.0
    assert math.isnan(case_metrics(empty, one, (1, 1, 1))["hd95"])
    with pytest.raises(ValueError, match="shape"):
        case_metrics(one, one[:3], (1, 1, 1))


def test_gate_usage_is_a_share_inside_the_brain() -> None:
    gate = torch.zeros(3 * 2, 4, 4, 4)  # 3 experts x 2 classes
    gate[0:2] = 1.0  # expert 0 everywhere
    gate[2:4, :2] = -3.0  # expert 1, magnitude 3, only in the first half
    brain = torch.zeros(4, 4, 4, dtype=torch.bool)
    brain[:2] = True
    assert gate_usage(gate, brain, 3) == pytest.approx([2 / 8, 6 / 8, 0.0])
    assert gate_usage(gate, ~brain, 3) == pytest.approx([1.0, 0.0, 0.0])


def test_averages() -> None:
    cases = [
        {"dataset": "A", "modality": "T1", "lesion_type": "x", "dice": 0.2, "hd95": 1.0},
        {"dataset": "A", "modality": "T1", "lesion_type": "x", "dice": 0.4, "hd95": float("nan")},
        {"dataset": "A", "modality": "FLAIR", "lesion_type": "x", "dice": 0.9, "hd95": 3.0},
        {"dataset": "B", "modality": None, "lesion_type": None, "dice": 0.5, "hd95": 2.0},
    ]
    s = summarise(cases)
    assert s["dice"]["task"] == pytest.approx({"A/FLAIR": 0.9, "A/T1": 0.3, "B/unknown": 0.5})
    assert s["average"]["task_level"] == pytest.approx((0.9 + 0.3 + 0.5) / 3)
    assert s["average"]["dataset_level"] == pytest.approx(((0.2 + 0.4 + 0.9) / 3 + 0.5) / 2)
    assert s["average"]["case_level"] == pytest.approx(2.0 / 4)
    assert s["hd95_case_level"] == pytest.approx(2.0)  # NaN (an empty mask) is left out


def _case(dataset: str, modality: str | None, image: str, pred: np.ndarray, truth: np.ndarray) -> dict:
    row = {"image": image, "subject": image, "dataset": dataset, "modality": modality, "lesion_type": "x"}
    return row | fused_metrics(pred, truth, (1.0, 1.0, 1.0))


def _two_cases() -> list[dict]:
    truth = np.zeros((20, 20, 20), bool)
    truth[2:5, 2:5, 2:5] = True  # 27 voxels: 0.027 ml
    truth[2:12, 12:17, 12:14] = True  # 100 voxels: 0.1 ml (dilations by 3 end at y, z = 7 and 9: apart)
    hit_one = truth.copy()
    hit_one[2:12, 12:17, 12:14] = False  # the large lesion missed
    extra = truth.copy()
    extra[18, 2, 18] = True  # one false positive voxel
    return [_case("A", "T1", "a.nii.gz", hit_one, truth), _case("A", None, "b.nii.gz", extra, truth)]


def test_lesion_wise_summary_and_size_bins() -> None:
    a, b = _two_cases()
    # case a: Dice 1 and 0 over 2 lesions; case b: Dice 1 and 1 over 2 lesions + 1 FP
    assert (a["lesion_dice"], a["tp"], a["fn"], a["fp"]) == (0.5, 1, 1, 0)
    assert (b["lesion_dice"], b["tp"], b["fn"], b["fp"]) == (pytest.approx(2 / 3), 2, 0, 1)
    s = summarise([a, b])
    lw = s["lesion_wise"]
    assert lw["task"]["A/T1"]["lesion_dice"] == 0.5 and lw["task"]["A/unknown"]["lesion_f1"] == pytest.approx(0.8)
    assert lw["dataset"]["A"]["lesion_dice"] == pytest.approx((0.5 + 2 / 3) / 2)
    assert lw["dataset"]["A"]["dice"] == s["dice"]["dataset"]["A"]  # voxel Dice beside the lesion-wise scores
    assert lw["average"]["case_level"]["avd_ml"] == pytest.approx((0.1 + 0.001) / 2)
    assert lw["average"]["case_level"]["lesion_hd95"] == pytest.approx((374 / 2 + 374 / 3) / 2)
    bins = s["by_size_bin"]
    assert list(bins) == ["<0.1 ml", "0.1-1 ml", "1-10 ml", ">=10 ml"]
    assert bins["<0.1 ml"] == {"n_lesions": 2, "detected_share": 1.0, "dice": 1.0, "hd95": 0.0}
    assert bins["0.1-1 ml"]["n_lesions"] == 2 and bins["0.1-1 ml"]["detected_share"] == 0.5
    assert bins["1-10 ml"]["n_lesions"] == 0 and math.isnan(bins["1-10 ml"]["dice"])
    assert set(summarise([])) >= {"lesion_wise", "by_size_bin"}
    older = [
        {k: v for k, v in c.items() if k in ("dataset", "modality", "lesion_type", "dice", "hd95")} for c in (a, b)
    ]
    assert math.isnan(summarise(older)["lesion_wise"]["task"]["A/T1"]["lesion_dice"])  # rows without the scores


def test_cases_and_lesions_round_trip(tmp_path: Path) -> None:
    cases = _two_cases()
    write_cases(cases, tmp_path / "cases.csv")
    assert read_cases(tmp_path / "cases.csv")[0]["lesions"] is None  # no lesions.csv beside it
    write_lesions(cases, tmp_path / "lesions.csv")
    back = read_cases(tmp_path / "cases.csv")
    for c, r in zip(cases, back, strict=True):
        for key in ("lesion_dice", "lesion_f1", "avd_ml"):
            assert r[key] == pytest.approx(c[key], abs=1e-4)
        assert r["lesion_hd95"] == pytest.approx(c["lesion_hd95"], abs=0.01)
        assert (r["tp"], r["fp"], r["fn"]) == (c["tp"], c["fp"], c["fn"])
        assert [(x["size_bin"], x["detected"]) for x in r["lesions"]] == [
            (x["size_bin"], x["detected"]) for x in c["lesions"]
        ]
    again, first = summarise(back), summarise(cases)
    for name, row in first["by_size_bin"].items():
        assert again["by_size_bin"][name] == pytest.approx(row, abs=1e-4, nan_ok=True)
    for task, row in first["lesion_wise"]["task"].items():
        assert again["lesion_wise"]["task"][task] == pytest.approx(row, abs=0.01)
