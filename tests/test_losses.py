from __future__ import annotations

import pytest
import torch

from scripts.losses import MoMELoss, deep_supervision_weights, prepare_batch, seg_loss
from scripts.mome import MoME


def test_deep_supervision_weights_match_nnunet() -> None:
    assert deep_supervision_weights(5) == pytest.approx([8 / 15, 4 / 15, 2 / 15, 1 / 15, 0.0])
    assert deep_supervision_weights(4) == pytest.approx([4 / 7, 2 / 7, 1 / 7, 0.0])
    assert deep_supervision_weights(1) == [1.0]


def _batch(n: int = 2, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(n, 1, size, size, size)
    y = torch.zeros(n, 1, size, size, size)
    y[:, :, 8:20, 10:22, 6:18] = 1
    return x, y


def _grad_norm(module: torch.nn.Module) -> float:
    return sum(float(p.grad.abs().sum()) for p in module.parameters() if p.grad is not None)


def test_expert_weight_one_trains_only_the_routed_experts() -> None:
    model = MoME("small").train()
    x, y = _batch()
    loss = MoMELoss(model.num_levels, expert_weight=1.0)
    loss(model(x), {"label": y, "modality": torch.tensor([0, 3])}).backward()
    grads = [_grad_norm(e) for e in model.experts]
    assert grads[0] > 0 and grads[3] > 0
    assert grads[1] == grads[2] == grads[4] == 0
    assert _grad_norm(model.gate) == 0


def test_mix_equals_hand_computation() -> None:
    model = MoME("small").train()
    x, y = _batch()
    out = model(x)
    ds = seg_loss(model.num_levels)
    modality = torch.tensor([4, 1])
    l_expert = (ds([t[0:1] for t in out["experts"][4]], y[0:1]) + ds([t[1:2] for t in out["experts"][1]], y[1:2])) / 2
    l_fused = ds(out["fused"], y)
    for w in (0.0, 0.25, 1.0):
        got = MoMELoss(model.num_levels, expert_weight=w)(out, {"label": y, "modality": modality})
        torch.testing.assert_close(got, w * l_expert + (1 - w) * l_fused)


def test_unknown_modality_contributes_fused_loss_only() -> None:
    model = MoME("small").train()
    x, y = _batch()
    out = model(x)
    ds = seg_loss(model.num_levels)
    loss = MoMELoss(model.num_levels, expert_weight=1.0)
    got = loss(out, {"label": y, "modality": torch.tensor([-1, 2])})
    expected = 0.5 * ds([t[1:2] for t in out["experts"][2]], y[1:2]) + 0.5 * ds([t[0:1] for t in out["fused"]], y[0:1])
    torch.testing.assert_close(got, expected)
    got.backward()
    assert _grad_norm(model.gate) > 0  # the unknown sample trains the fused output even at w = 1


def test_bad_modality_index_is_rejected() -> None:
    model = MoME("small").train()
    x, y = _batch()
    loss = MoMELoss(model.num_levels)
    with pytest.raises(ValueError, match="modality indices must be in \\[-1, 4\\]"):
        loss(model(x), {"label": y, "modality": torch.tensor([0, 5])})
    with pytest.raises(ValueError, match="2 modality indices for a batch of"):
        loss(model(x[:1]), {"label": y[:1], "modality": torch.tensor([0, 1])})


def test_prepare_batch_defaults_to_unknown_modality() -> None:
    x, y = _batch()
    image, target = prepare_batch({"image": x, "label": y})
    assert image is x or torch.equal(image, x)
    assert target["modality"].tolist() == [-1, -1]
    _, target = prepare_batch({"image": x, "label": y, "modality": torch.tensor([3, 0])})
    assert target["modality"].tolist() == [3, 0]
