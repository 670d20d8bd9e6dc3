"""The metrics module: BraTS 2023 lesion-wise scores, lesion size bins, 26-connected lesions and expert disagreement,
each on a small hand-built label map whose answer is worked out in the comments."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from scripts.metrics import (
    HD95_PENALTY_MM,
    SIZE_BIN_NAMES,
    SIZE_BINS_ML,
    case_metrics,
    components,
    disagreement_map,
    expert_disagreement,
    lesion_wise,
    size_bin,
)

ISO = (1.0, 1.0, 1.0)


def _empty(n: int = 24) -> np.ndarray:
    return np.zeros((n, n, n), bool)


def _cube(mask: np.ndarray, corner: tuple[int, int, int], size: int = 3) -> np.ndarray:
    x, y, z = corner
    mask[x : x + size, y : y + size, z : z + size] = True
    return mask


def test_one_lesion_perfectly_hit() -> None:
    truth = _cube(_empty(), (5, 5, 5))
    m = lesion_wise(truth.copy(), truth, ISO)
    assert (m["lesion_dice"], m["lesion_hd95"]) == (1.0, 0.0)
    assert (m["tp"], m["fp"], m["fn"], m["f1"], m["avd_ml"]) == (1, 0, 0, 1.0, 0.0)
    # 27 voxels of 1 mm^3 = 0.027 ml
    expected = {"volume_ml": pytest.approx(0.027), "dice": 1.0, "hd95": 0.0, "detected": True, "size_bin": "<0.1 ml"}
    assert m["lesions"] == [expected]


def test_a_missed_lesion_scores_dice_0_and_hd95_374() -> None:
    truth = _cube(_cube(_empty(), (2, 2, 2)), (15, 15, 15))  # 10 voxels apart: far beyond two 3-voxel dilations
    pred = _cube(_empty(), (2, 2, 2))
    m = lesion_wise(pred, truth, ISO)
    assert [lesion["detected"] for lesion in m["lesions"]] == [True, False]
    assert m["lesions"][1]["dice"] == 0.0 and m["lesions"][1]["hd95"] == HD95_PENALTY_MM == 374.0
    assert m["lesion_dice"] == pytest.approx((1 + 0) / 2)
    assert m["lesion_hd95"] == pytest.approx((0 + 374) / 2)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 1)
    assert m["f1"] == pytest.approx(2 * 1 / (2 * 1 + 0 + 1))  # 2/3


def test_a_false_positive_component_joins_the_denominator() -> None:
    truth = _cube(_empty(), (2, 2, 2))
    pred = truth.copy()
    pred[20, 20, 20] = True  # 16 voxels from the lesion's dilation (which reaches index 7): matches nothing
    m = lesion_wise(pred, truth, ISO)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 1, 0)
    assert m["lesion_dice"] == pytest.approx(1 / (1 + 1))  # the hit's Dice 1 over one lesion + one FP
    assert m["lesion_hd95"] == pytest.approx((0 + 374) / 2)
    assert m["f1"] == pytest.approx(2 / (2 + 1 + 0))
    assert m["avd_ml"] == pytest.approx(0.001)  # 28 - 27 voxels of 1 mm^3
    assert len(m["lesions"]) == 1  # FP components are not lesions of the ground truth


def test_predicted_components_within_the_dilation_merge_into_one_match() -> None:
    truth, pred = _empty(20), _empty(20)
    truth[5:10, 10, 10] = True  # a 5-voxel bar, x = 5..9
    pred[5:7, 10, 10] = True  # component 1: x = 5, 6
    pred[8:10, 10, 10] = True  # component 2: x = 8, 9 (x = 7 empty: not 26-connected to component 1)
    pred[12, 10, 10] = True  # component 3: off the lesion, 3 voxels beyond x = 9: inside a dilation by 3
    assert components(pred)[1] == 3
    m = lesion_wise(pred, truth, ISO, dilation=3)
    assert (m["tp"], m["fp"], m["fn"]) == (1, 0, 0)
    # prediction of the lesion = all three: |P| = 5, |P and T| = 4 -> Dice = 2 * 4 / (5 + 5)
    assert m["lesions"][0]["dice"] == pytest.approx(0.8)
    # HD95 (thin bars: every voxel is surface): P -> T distances 0,0,0,0,3 -> 95th percentile 0 + 0.8 * 3 = 2.4;
    # T -> P distances 0,0,1,0,0 -> 0.8; the larger of the two
    assert m["lesions"][0]["hd95"] == pytest.approx(2.4)
    # a dilation by 1 no longer reaches component 3: it is a FP, the lesion keeps components 1 and 2 (Dice 8/9)
    m1 = lesion_wise(pred, truth, ISO, dilation=1)
    assert (m1["tp"], m1["fp"], m1["fn"]) == (1, 1, 0)
    assert m1["lesions"][0]["dice"] == pytest.approx(8 / 9)
    assert m1["lesion_dice"] == pytest.approx((8 / 9) / 2)


def test_ground_truth_lesions_whose_dilations_touch_count_as_one() -> None:
    truth, pred = _empty(20), _empty(20)
    truth[5, 10, 10] = truth[10, 10, 10] = True  # two voxels 5 apart: dilations by 3 reach x = 8 and x = 7
    pred[5, 10, 10] = True
    m = lesion_wise(pred, truth, ISO, dilation=3)
    assert len(m["lesions"]) == 1 and (m["tp"], m["fn"]) == (1, 0)
    assert m["lesions"][0]["dice"] == pytest.approx(2 * 1 / (1 + 2))
    m1 = lesion_wise(pred, truth, ISO, dilation=1)  # reach x = 6 and x = 9: two lesions, one missed
    assert len(m1["lesions"]) == 2 and (m1["tp"], m1["fn"]) == (1, 1)


def test_both_empty() -> None:
    m = lesion_wise(_empty(8), _empty(8), ISO)
    assert (m["lesion_dice"], m["lesion_hd95"], m["f1"], m["avd_ml"]) == (1.0, 0.0, 1.0, 0.0)
    assert (m["tp"], m["fp"], m["fn"], m["lesions"]) == (0, 0, 0, [])


def test_one_side_empty() -> None:
    lesion = _cube(_empty(8), (2, 2, 2))
    missed = lesion_wise(_empty(8), lesion, ISO)  # one FN: 0 / 1 and 374 / 1
    assert (missed["lesion_dice"], missed["lesion_hd95"], missed["f1"]) == (0.0, 374.0, 0.0)
    assert (missed["tp"], missed["fp"], missed["fn"]) == (0, 0, 1)
    invented = lesion_wise(lesion, _empty(8), ISO)  # one FP: 0 / 1 and 374 / 1
    assert (invented["lesion_dice"], invented["lesion_hd95"], invented["f1"]) == (0.0, 374.0, 0.0)
    assert (invented["tp"], invented["fp"], invented["fn"], invented["lesions"]) == (0, 1, 0, [])


def test_volumes_in_ml_with_anisotropic_spacing() -> None:
    truth, pred = _empty(12), _empty(12)
    truth[2:4, 2:4, 2] = True  # 4 voxels
    pred[2:4, 2:4, 2] = True
    pred[2:4, 4:7, 2] = True  # + 6 voxels, touching: one component of 10
    m = lesion_wise(pred, truth, (2.0, 1.5, 3.0))  # voxel 2 * 1.5 * 3 = 9 mm^3 = 0.009 ml
    assert m["avd_ml"] == pytest.approx(6 * 0.009)
    assert m["lesions"][0]["volume_ml"] == pytest.approx(4 * 0.009)
    assert m["lesions"][0]["dice"] == pytest.approx(2 * 4 / (10 + 4))


def test_size_bins_and_their_edges() -> None:
    assert SIZE_BINS_ML == (0.1, 1.0, 10.0)
    assert SIZE_BIN_NAMES == ("<0.1 ml", "0.1-1 ml", "1-10 ml", ">=10 ml")
    # an edge belongs to the bin above it
    cases = {0.0: "<0.1 ml", 0.0999: "<0.1 ml", 0.1: "0.1-1 ml", 0.999: "0.1-1 ml", 1.0: "1-10 ml"}
    cases |= {9.99: "1-10 ml", 10.0: ">=10 ml", 250.0: ">=10 ml"}
    assert {v: size_bin(v) for v in cases} == cases
    truth = _cube(_empty(12), (1, 1, 1), size=10)  # 1000 voxels of 1 mm^3: exactly 1 ml
    assert lesion_wise(truth, truth, ISO)["lesions"][0]["size_bin"] == "1-10 ml"


def test_lesions_below_min_voxels_are_not_scored_but_are_not_fp_either() -> None:
    truth = _cube(_empty(), (2, 2, 2))  # 27 voxels
    truth[18, 18, 18] = True  # a 1-voxel lesion far away
    pred = truth.copy()
    pred[18, 18, 18] = False
    pred[19, 18, 18] = True  # next to the small lesion: matched to it, so not a FP
    m = lesion_wise(pred, truth, ISO, min_voxels=2)
    assert (m["tp"], m["fp"], m["fn"], m["lesion_dice"]) == (1, 0, 0, 1.0)
    assert len(m["lesions"]) == 1
    assert len(lesion_wise(pred, truth, ISO)["lesions"]) == 2


def test_components_are_26_connected() -> None:
    mask = _empty(6)
    mask[0, 0, 0] = mask[1, 1, 1] = True  # corner to corner: one lesion
    labels, n = components(mask)
    assert n == 1 and labels[0, 0, 0] == labels[1, 1, 1] == 1
    mask[3, 3, 3] = True  # two voxels from (1, 1, 1): a second lesion
    assert components(mask)[1] == 2
    assert components(_empty(4))[1] == 0


def test_hd95_on_the_crop_equals_hd95_on_the_full_volume() -> None:
    grid = np.stack(np.meshgrid(*(np.arange(32),) * 3, indexing="ij"), -1).astype(float)
    truth = (((grid - (10, 12, 4)) / (7, 5, 6)) ** 2).sum(-1) <= 1  # an ellipsoid cut by the volume's face z = 0
    pred = (((grid - (12, 11, 5)) / (6, 6, 5)) ** 2).sum(-1) <= 1
    pred[12:, :, :3] = False  # a notch: not a shifted copy of a symmetric shape
    assert components(pred)[1] == components(truth)[1] == 1
    spacing = (0.8, 1.2, 2.5)
    full = case_metrics(pred, truth, spacing)
    m = lesion_wise(pred, truth, spacing)
    assert full["hd95"] > 1.0
    assert m["lesions"][0]["hd95"] == pytest.approx(full["hd95"], rel=1e-6)
    assert m["lesions"][0]["dice"] == pytest.approx(full["dice"], rel=1e-6)


def test_disagreement_map() -> None:
    same = torch.randn(2, 3, 4, 5).repeat(3, 1, 1, 1)  # 3 experts, 2 classes, identical logits
    assert disagreement_map(same, 2).shape == (3, 4, 5)
    assert float(disagreement_map(same, 2).abs().max()) == pytest.approx(0.0, abs=1e-6)
    sure_bg = torch.tensor([30.0, -30.0])[:, None, None, None].expand(2, 3, 4, 5)  # one-hot after softmax
    opposed = torch.cat([sure_bg, sure_bg.flip(0)])  # K = 2: H(1/2, 1/2) - (0 + 0) / 2 = ln 2 everywhere
    assert torch.allclose(disagreement_map(opposed, 2), torch.full((3, 4, 5), math.log(2)), atol=1e-5)
    mask = torch.zeros(3, 4, 5, dtype=torch.bool)
    assert expert_disagreement(opposed, 2, mask) == pytest.approx(math.log(2), abs=1e-5)  # empty mask: all voxels
    with pytest.raises(ValueError, match="K >= 2"):
        disagreement_map(sure_bg, 2)
