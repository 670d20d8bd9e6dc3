"""MoME's training loss: deep-supervised Dice + CE on the routed expert and on the fused output, mixed by a
curriculum weight (:class:`scripts.handlers.CurriculumHandler`). Each sample's modality is an integer index into the
network's ``modalities`` (never parsed from a file name); ``-1``, unknown, is supervised via the fused output only."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from monai.data import MetaTensor
from monai.losses import DeepSupervisionLoss, DiceCELoss
from torch import nn


def deep_supervision_weights(levels: int) -> list[float]:
    """nnU-Net's weights: halve per level, lowest resolution unweighted, normalised ([8,4,2,1,0]/15 for 5)."""
    if levels < 1:
        raise ValueError(f"need at least one deep-supervision level, got {levels}")
    weights = [0.5**i for i in range(levels - 1)] + [0.0 if levels > 1 else 1.0]
    return [w / sum(weights) for w in weights]


def seg_loss(levels: int) -> DeepSupervisionLoss:
    """nnU-Net's segmentation loss: soft Dice without background (per sample, smooth 1e-5) + cross-entropy."""
    dice_ce = DiceCELoss(
        include_background=False, to_onehot_y=True, softmax=True, smooth_nr=1e-5, smooth_dr=1e-5, batch=False
    )
    return DeepSupervisionLoss(dice_ce, weights=deep_supervision_weights(levels))


class MoMELoss(nn.Module):
    """``L = w * L_expert + (1 - w) * L_MoME`` per sample, averaged over the batch. ``L_expert`` supervises only the
    expert of each sample's modality, ``L_MoME`` the fused output; a sample of unknown modality contributes ``L_MoME``
    alone. Terms with zero weight are not computed (at ``w = 1`` the gate and the non-routed experts get no gradient).
    The reference sums ``L_expert`` over the batch; here both terms are batch means, so the mix does not depend on the
    batch size (at the reference's batch of 2 its expert term is twice ours)."""

    def __init__(self, levels: int, expert_weight: float = 1.0) -> None:
        super().__init__()
        self.seg_loss = seg_loss(levels)
        self.expert_weight = expert_weight

    def forward(self, pred: Mapping[str, Sequence], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        label = target["label"]
        modality = target["modality"].to(label.device).long().view(-1)
        fused, experts = pred["fused"], pred["experts"]
        batch = label.shape[0]
        if modality.numel() != batch:
            raise ValueError(f"got {modality.numel()} modality indices for a batch of {batch}")
        if int(modality.max()) >= len(experts) or int(modality.min()) < -1:
            raise ValueError(f"modality indices must be in [-1, {len(experts) - 1}], got {modality.tolist()}")
        w = float(self.expert_weight)
        known = modality >= 0
        n_known = int(known.sum())
        loss = label.new_zeros(())
        if n_known and w > 0:
            idx = known.nonzero().view(-1)
            routed = [torch.stack([experts[int(modality[b])][level][b] for b in idx]) for level in range(len(fused))]
            loss = loss + w * n_known / batch * self.seg_loss(routed, label[idx])
        if n_known and w < 1:
            loss = loss + (1 - w) * n_known / batch * self._fused_loss(fused, label, known)
        if n_known < batch:
            loss = loss + (batch - n_known) / batch * self._fused_loss(fused, label, ~known)
        return loss

    def _fused_loss(self, fused: Sequence[torch.Tensor], label: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        if bool(rows.all()):
            return self.seg_loss(list(fused), label)
        return self.seg_loss([f[rows] for f in fused], label[rows])


class MoMEPlusLoss(nn.Module):
    """MoME+'s loss: ``L = w * L_experts + (1 - w) * L_MoME`` per case, averaged over the batch, where
    ``L_experts`` is the mean over the case's available sequences of each one's expert against the label. ``w``
    follows the same curriculum as :class:`MoMELoss`. The reference computes this and then trains on ``L_MoME``
    alone (it overwrites the sum): that is ``expert_weight = 0`` here, a choice instead of a silent override."""

    def __init__(self, levels: int, expert_weight: float = 1.0) -> None:
        super().__init__()
        self.seg_loss = seg_loss(levels)
        self.expert_weight = expert_weight

    def forward(self, pred: Mapping[str, Sequence], target: Mapping[str, torch.Tensor]) -> torch.Tensor:
        label, available = target["label"], target["available"].to(target["label"].device)
        fused, experts = pred["fused"], pred["experts"]
        if available.shape != (label.shape[0], len(experts)):
            raise ValueError(
                f"availability of shape {tuple(available.shape)} for a batch of {label.shape[0]} cases and "
                f"{len(experts)} experts"
            )
        w = float(self.expert_weight)
        loss = (1 - w) * self.seg_loss(list(fused), label) if w < 1 else label.new_zeros(())
        if w > 0:
            per_case = []
            for b in range(label.shape[0]):
                ks = available[b].nonzero().view(-1).tolist()
                terms = [self.seg_loss([level[b : b + 1] for level in experts[k]], label[b : b + 1]) for k in ks]
                per_case.append(torch.stack(terms).mean())
            loss = loss + w * torch.stack(per_case).mean()
        return loss


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else x


def prepare_image_label(batchdata: Mapping[str, Any], *args, **kwargs) -> tuple[torch.Tensor, torch.Tensor]:
    """Ignite ``prepare_batch`` for a plain U-Net and its loss: ``(image, label)`` as plain tensors (see below)."""
    image, target = prepare_batch(batchdata, *args, **kwargs)
    return image, target["label"]


def prepare_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Ignite ``prepare_batch`` for :class:`MoMELoss`: ``(image, {"label", "modality"})``; a batch without
    ``modality`` (e.g. from MONAI Label, which passes only image and label) is of unknown modality throughout."""
    # plain tensors: a MetaTensor copies its metadata on every operation, which doubled a small-preset CPU step's time
    image = _plain(batchdata["image"]).to(device=device, non_blocking=non_blocking, **kwargs)
    label = _plain(batchdata["label"]).to(device=device, non_blocking=non_blocking, **kwargs)
    modality = batchdata.get("modality")
    if modality is None:
        modality = torch.full((image.shape[0],), -1, dtype=torch.long)
    modality = torch.as_tensor(modality).long().view(-1).to(device=device)
    return image, {"label": label, "modality": modality}


def prepare_plus_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
) -> tuple[torch.Tensor, dict[str, torch.Tensor], tuple, dict[str, torch.Tensor]]:
    """Ignite ``prepare_batch`` for MoME+ training: ``(image, {"label", "available"}, (), {"available": ...})``;
    MONAI's trainer passes the last dict on to the inferer, and so to ``MoMEPlus.forward``."""
    image, label, _, kwargs_ = prepare_plus_eval_batch(batchdata, device, non_blocking, **kwargs)
    return _plain(image), {"label": _plain(label), "available": kwargs_["available"]}, (), kwargs_


def prepare_plus_label_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
) -> tuple[torch.Tensor, torch.Tensor, tuple, dict[str, torch.Tensor]]:
    """Ignite ``prepare_batch`` for the zero-filled U-Net baseline: ``(image, label, (), {"available": ...})``
    as plain tensors (its loss takes the label alone; the network zeroes the missing channels)."""
    image, label, _, kwargs_ = prepare_plus_eval_batch(batchdata, device, non_blocking, **kwargs)
    return _plain(image), _plain(label), (), kwargs_


def prepare_plus_eval_batch(
    batchdata: Mapping[str, Any], device: str | torch.device | None = None, non_blocking: bool = False, **kwargs
) -> tuple[torch.Tensor, torch.Tensor, tuple, dict[str, torch.Tensor]]:
    """The evaluator's: ``(image, label, (), {"available": ...})``. Image and label stay MetaTensors, as with
    MONAI's default: evaluation's ``Invertd`` reads their transform trace from the evaluator's output."""
    image = batchdata["image"].to(device=device, non_blocking=non_blocking, **kwargs)
    label = batchdata["label"].to(device=device, non_blocking=non_blocking, **kwargs)
    available = torch.as_tensor(_plain(batchdata["available"])).float().to(device=device)
    return image, label, (), {"available": available}
