"""Every segmentation number in one place: voxel Dice and HD95, BraTS 2023 lesion-wise scores, gate usage and the
experts' disagreement. Evaluation, the reports and the MONAI Label app's active learning all call these, so that
a number means the same wherever it is printed.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Sequence

import numpy as np
import torch
from monai.metrics import compute_dice, compute_hausdorff_distance
from scipy import ndimage

#: BraTS 2023's HD95 (mm) for a missed lesion and for a false-positive component (just above the 373.1 mm diagonal
#: of its 240x240x155 1 mm grid).
HD95_PENALTY_MM = 374.0
#: Edges (ml) of the lesion size bins of :func:`size_bin` (ours: BraTS reports no size bins).
SIZE_BINS_ML = (0.1, 1.0, 10.0)


def lesion_mask(label: np.ndarray | torch.Tensor, values: Sequence[int] | None = None) -> np.ndarray:
    """Binary lesion mask of a dataset label map: ``values`` are lesion (e.g. ``[1]`` for WMH), else any non-zero."""
    return np.isin(label, values) if values else np.asarray(label) > 0


def case_metrics(pred: np.ndarray, label: np.ndarray, spacing: Sequence[float], hd95: bool = True) -> dict[str, float]:
    """Lesion Dice (1 for two empty masks) and HD95 in mm (NaN if either mask is empty, or not ``hd95``: the
    distance transforms cost far more than Dice, and the experts' rows report Dice only) of two masks on one grid."""
    p, y = (torch.as_tensor(np.asarray(mask, bool))[None, None] for mask in (pred, label))
    if p.shape != y.shape:
        raise ValueError(f"prediction shape {tuple(p.shape[2:])} != label shape {tuple(y.shape[2:])}")
    p2, y2 = torch.cat([~p, p], 1).float(), torch.cat([~y, y], 1).float()
    dice = float(compute_dice(p2, y2, include_background=False, ignore_empty=False)[0, 0])
    distance = float("nan")
    if hd95 and bool(p.any()) and bool(y.any()):
        distance = float(compute_hausdorff_distance(p2, y2, percentile=95, spacing=[float(s) for s in spacing])[0, 0])
    return {"dice": dice, "hd95": distance}


def gate_usage(gate: torch.Tensor, brain: torch.Tensor, num_experts: int) -> list[float]:
    """Per expert: mean |gate weight| inside ``brain`` (summed over classes), as a share of the sum over experts."""
    w = gate.abs().unflatten(0, (num_experts, -1)).sum(1)  # (K, ...)
    mask = brain.to(w.dtype)
    per_expert = (w * mask).flatten(1).sum(-1) / mask.sum().clamp_min(1)
    return (per_expert / per_expert.sum().clamp_min(1e-12)).tolist()


def disagreement_map(experts: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Per-voxel generalised Jensen-Shannon divergence of the experts' class distributions, ``H(mean_k p_k) -
    mean_k H(p_k)`` in nats (0 where they agree, at most ln K), of spatial shape.

    Args:
        experts: logits ``(K * num_classes, *spatial)``, expert-major as MoME returns them.
        num_classes: classes per expert (background included).
    """
    k = experts.shape[0] // num_classes
    if k * num_classes != experts.shape[0] or k < 2:
        raise ValueError(f"expected K*{num_classes} expert channels with K >= 2, got {experts.shape[0]}")
    p = experts.float().unflatten(0, (k, num_classes)).softmax(dim=1)
    mean = p.mean(dim=0)
    entropy_of_mean = -(mean * mean.clamp_min(1e-12).log()).sum(dim=0)
    mean_entropy = -(p * p.clamp_min(1e-12).log()).sum(dim=1).mean(dim=0)
    return (entropy_of_mean - mean_entropy).clamp_min(0)


def expert_disagreement(experts: torch.Tensor, num_classes: int, mask: torch.Tensor | None = None) -> float:
    """Mean of :func:`disagreement_map` over ``mask`` (all voxels if it is empty or None): one active-learning
    score per image from one forward pass."""
    jsd = disagreement_map(experts, num_classes)
    if mask is not None and bool(mask.any()):
        return float(jsd[mask].mean())
    return float(jsd.mean())


def components(mask: np.ndarray) -> tuple[np.ndarray, int]:
    """Connected lesions of a binary mask, 26-connected in 3D (BraTS 2023's connectivity): labels 1..n and n."""
    labels, n = ndimage.label(np.asarray(mask, bool), structure=np.ones((3,) * np.ndim(mask), bool))
    return labels, int(n)


def size_bin(volume_ml: float) -> str:
    """The bin of :data:`SIZE_BINS_ML` a lesion volume falls in; an edge belongs to the bin above it."""
    return SIZE_BIN_NAMES[bisect_right(SIZE_BINS_ML, volume_ml)]


def _bin_names(edges: Sequence[float]) -> tuple[str, ...]:
    inner = [f"{a:g}-{b:g} ml" for a, b in zip(edges[:-1], edges[1:], strict=True)]
    return (f"<{edges[0]:g} ml", *inner, f">={edges[-1]:g} ml")


#: Bin names from the smallest lesions to the largest: "<0.1 ml", "0.1-1 ml", "1-10 ml", ">=10 ml".
SIZE_BIN_NAMES = _bin_names(SIZE_BINS_ML)


def _grow(box: tuple[slice, ...], margin: int, shape: Sequence[int]) -> tuple[slice, ...]:
    return tuple(slice(max(s.start - margin, 0), min(s.stop + margin, n)) for s, n in zip(box, shape, strict=True))


def _union(boxes: Sequence[tuple[slice, ...]]) -> tuple[slice, ...]:
    return tuple(slice(min(s.start for s in axis), max(s.stop for s in axis)) for axis in zip(*boxes, strict=True))


def _truth_lesions(truth: np.ndarray, dilation: int, struct: np.ndarray) -> tuple[np.ndarray, int]:
    """Ground-truth lesions, those whose ``dilation``-fold dilations touch merged into one (BraTS 2023)."""
    if dilation <= 0 or not truth.any():
        return components(truth)
    roi = _grow(_union(ndimage.find_objects(truth.astype(np.uint8))), dilation, truth.shape)
    grown, n = components(ndimage.binary_dilation(truth[roi], struct, iterations=dilation))
    labels = np.zeros(truth.shape, grown.dtype)
    labels[roi] = np.where(truth[roi], grown, 0)  # every lesion voxel lies in the one grown component around it
    return labels, n


def lesion_wise(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], dilation: int = 3, min_voxels: int = 0
) -> dict:
    """Lesion-wise Dice, HD95 (mm) and detection counts of two binary masks on one grid, after BraTS 2023.

    As BraTS 2023 (rachitsaluja/BraTS-2023-Metrics; ``dilation=3`` is its glioma, SSA and paediatric setting,
    1 its meningioma and metastasis one): lesions are 26-connected components; ground-truth lesions whose
    ``dilation``-fold dilations (18-connected structuring element) touch count as one lesion; a predicted component
    matches a lesion when it overlaps the lesion's own dilation, and all components that match it make up its
    prediction (one component may match several lesions); a lesion without any is missed (FN: Dice 0, HD95 374 mm);
    a component that matches no lesion is a false positive, counted with Dice 0 and HD95 374 mm, so the lesion-wise
    scores are ``sum over lesions / (lesions + FP)``; with neither lesions nor FP, Dice is 1 and HD95 0. Lesions
    smaller than ``min_voxels`` (BraTS: at most 50 mm^3, i.e. ``min_voxels=51`` at 1 mm) are left out of the scores
    and counts but still claim the components that touch them, which are then not FP. ``tp`` counts detected
    lesions, ``fp`` components.

    Ours: HD95 is :func:`case_metrics`'s (MONAI's, over surface voxels; BraTS uses DeepMind's surfel-weighted
    one), on a crop to the two masks' bounding box plus one voxel (distances do not depend on the crop, and a
    full-volume distance transform per lesion is far too slow); ``dilation=0`` means no dilation (scipy's
    ``iterations=0`` would dilate until nothing changes); detection ``f1 = 2 TP / (2 TP + FP + FN)``, 1 when
    there is nothing to find and nothing was found; ``avd_ml``, the absolute volume difference of the whole masks;
    the size bins of :func:`size_bin`.

    Returns:
        ``lesion_dice``, ``lesion_hd95``, ``tp``, ``fp``, ``fn``, ``f1``, ``avd_ml`` and ``lesions``: one dict per
        ground-truth lesion scored, ``volume_ml``, ``dice``, ``hd95``, ``detected``, ``size_bin``.
    """
    pred, truth = np.asarray(pred, bool), np.asarray(truth, bool)
    if pred.shape != truth.shape:
        raise ValueError(f"prediction shape {pred.shape} != label shape {truth.shape}")
    voxel_ml = float(np.prod([float(s) for s in spacing])) / 1000.0
    struct = ndimage.generate_binary_structure(truth.ndim, 2)
    found, n_found = components(pred)
    found_boxes = ndimage.find_objects(found)
    lesions, _ = _truth_lesions(truth, dilation, struct)
    claimed = np.zeros(n_found + 1, bool)
    rows = []
    for index, box in enumerate(ndimage.find_objects(lesions), start=1):
        if box is None:
            continue
        roi = _grow(box, max(dilation, 0), truth.shape)
        lesion = lesions[roi] == index
        reach = ndimage.binary_dilation(lesion, struct, iterations=dilation) if dilation > 0 else lesion
        hits = np.unique(found[roi][reach])
        hits = hits[hits > 0]
        claimed[hits] = True
        voxels = int(lesion.sum())
        if voxels < min_voxels:
            continue
        score = {"dice": 0.0, "hd95": HD95_PENALTY_MM}
        if hits.size:
            crop = _grow(_union([box, *(found_boxes[h - 1] for h in hits)]), 1, truth.shape)
            score = case_metrics(np.isin(found[crop], hits), lesions[crop] == index, spacing)
        volume = voxels * voxel_ml
        rows.append({"volume_ml": volume, **score, "detected": bool(hits.size), "size_bin": size_bin(volume)})
    tp = sum(r["detected"] for r in rows)
    fn, fp = len(rows) - tp, int(n_found - claimed[1:].sum())
    scored = len(rows) + fp
    return {
        "lesion_dice": sum(r["dice"] for r in rows) / scored if scored else 1.0,
        "lesion_hd95": (sum(r["hd95"] for r in rows) + fp * HD95_PENALTY_MM) / scored if scored else 0.0,
        "tp": tp,
        "fp": fp,
        "fn": fn,
        "f1": 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0,
        "avd_ml": abs(int(pred.sum()) - int(truth.sum())) * voxel_ml,
        "lesions": rows,
    }
