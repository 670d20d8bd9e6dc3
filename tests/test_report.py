"""The per-scan report's numbers and QC rules on hand-built masks with known answers."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from scripts.data.registration import registration_overlap
from scripts.report import QC_LIMITS, Uncertaintyd, lesion_table, qc_flags


def test_lesion_table_volumes_and_centroids() -> None:
    mask = np.zeros((20, 20, 10), bool)
    mask[2:4, 2:4, 2:4] = True  # 8 voxels, centre voxel (2.5, 2.5, 2.5)
    mask[10:15, 10:12, 5:6] = True  # 10 voxels, centre (12, 10.5, 5)
    affine = np.diag([2.0, 1.0, 3.0, 1.0])  # 6 mm^3 voxels
    affine[:3, 3] = (-20.0, 5.0, 0.0)
    rows = lesion_table(mask, affine)
    assert [r["voxels"] for r in rows] == [10, 8]  # largest first
    assert rows[0]["volume_ml"] == pytest.approx(10 * 6 / 1000)
    assert rows[0]["centroid_world_mm"] == pytest.approx([12 * 2 - 20, 10.5 + 5, 5 * 3])
    assert rows[1]["centroid_world_mm"] == pytest.approx([2.5 * 2 - 20, 2.5 + 5, 2.5 * 3])
    assert rows[0]["centroid_mni_mm"] is None  # not registered
    # native world = M @ MNI world: a pure shift of +10 mm in x puts the MNI centroid 10 mm to the left
    shift = np.eye(4)
    shift[0, 3] = 10.0
    moved = lesion_table(mask, affine, shift)
    assert moved[0]["centroid_mni_mm"] == pytest.approx([12 * 2 - 20 - 10, 15.5, 15])
    assert lesion_table(np.zeros((4, 4, 4), bool), affine) == []


def _report(**changes) -> dict:
    base = {"spacing_mm": [1.0, 1.0, 1.0], "extent_mm": [180.0, 220.0, 180.0], "n_lesions": 2, "brain_z": [-2, 5]}
    base |= {"uncertainty": 0.001, "registration": {"overlap": 0.9}}
    return base | changes


@pytest.mark.parametrize(
    ("changes", "flag"),
    [
        ({}, None),
        ({"registration": {"overlap": 0.3}}, "registration"),
        ({"spacing_mm": [1.0, 1.0, 9.0]}, "envelope"),
        ({"extent_mm": [20.0, 220.0, 180.0]}, "envelope"),
        ({"brain_z": [-1.0, 40.0]}, "envelope"),
        ({"n_lesions": 0}, "empty_prediction"),
        ({"uncertainty": 2 * QC_LIMITS["max_uncertainty"]}, "uncertainty"),
    ],
)
def test_qc_flags_each_rule(changes: dict, flag: str | None) -> None:
    flags = qc_flags(_report(**changes))
    assert [f["flag"] for f in flags] == ([flag] if flag else [])
    assert all(f["reason"] for f in flags)


def test_registration_overlap_good_and_failed() -> None:
    brain = np.zeros((40, 40, 40), bool)
    brain[10:30, 8:32, 10:30] = True
    image = np.where(brain, 1.0, 0.0).astype(np.float32)
    assert registration_overlap(image, brain, skull_stripped=True) > 0.85  # the smoothed foreground is a bit larger
    shifted = np.roll(image, 15, axis=0)  # a registration that missed by 15 voxels
    assert registration_overlap(shifted, brain, skull_stripped=True) < QC_LIMITS["min_registration_overlap"]
    head = np.zeros_like(image)
    head[4:36, 2:38, 4:36] = 1.0  # skull and scalp around the brain: the brain is covered
    assert registration_overlap(head, brain, skull_stripped=False) > 0.95


def test_uncertainty_map_from_the_forward_pass() -> None:
    k, c = 2, 2
    experts = torch.zeros(k * c, 4, 4, 4)
    experts[1, :2] = 20.0  # expert 0 says lesion in the first half
    experts[2, :2] = 20.0  # expert 1 says background there; both say background elsewhere
    experts[[0, 2], 2:] = 20.0
    image = torch.ones(1, 4, 4, 4)
    d = Uncertaintyd(num_classes=c)({"pred": {"logits": torch.zeros(c, 4, 4, 4), "experts": experts}, "image": image})
    u = d["uncertainty"][0]
    assert u[:2].mean().item() == pytest.approx(np.log(2), abs=1e-3)  # opposite one-hot experts: ln 2 nats (map: 0.001)
    assert u[2:].abs().max().item() < 1e-6
    assert d["uncertainty_score"] == pytest.approx(np.log(2) / 2, abs=1e-4)
