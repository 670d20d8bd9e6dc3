"""The evaluation module computes every number in one place: Dice and HD95 (mm) on the native grid, gate shares."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scripts.evaluation import case_metrics, gate_usage, summarise


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
