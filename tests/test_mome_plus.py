"""MoME+: the dispatch matrix on every availability mask, missing sequences reaching nothing, the paper preset's
size, training with random sequence dropout, and the errors a bad mask or case gets."""

from __future__ import annotations

import pytest
import torch

from scripts.losses import MoMEPlusLoss
from scripts.mome_plus import Dispatch, MoMEPlus, ZeroFillUNet, all_masks, draw_masks

SHAPE = (2, 4, 32, 32, 32)  # two cases of the four BraTS sequences, the small preset's smallest size


def test_there_are_fifteen_masks_for_four_sequences() -> None:
    masks = all_masks(4)
    assert masks.shape == (15, 4) and len({tuple(m.tolist()) for m in masks}) == 15
    assert (masks.sum(1) >= 1).all() and masks[-1].tolist() == [1, 1, 1, 1]


@pytest.mark.parametrize("seed", [0, 1])
def test_dispatch_matrix_on_every_mask(seed: int) -> None:
    torch.manual_seed(seed)
    dispatch = Dispatch(4)
    for layer in dispatch.mlp:  # trained-looking weights, not only the initial ones
        if isinstance(layer, torch.nn.Linear):
            layer.weight.data.normal_(0, 2)
            layer.bias.data.normal_(0, 1)
    masks = all_masks(4)
    d = dispatch(masks)
    assert d.shape == (15, 4, 4)
    for m, dm in zip(masks.bool(), d, strict=True):
        assert (dm[:, ~m] == 0).all()  # missing columns: zero weight
        assert torch.equal(dm[m], torch.eye(4)[m])  # available rows: the sequence passes through unchanged
        missing = dm[~m][:, m]
        assert ((missing > 0) & (missing <= 1)).all()  # missing rows: a positive mix of the available sequences
        assert torch.allclose(dm[~m].amax(1), dm[~m].amax(1).clamp(max=1.0))


def test_a_missing_sequence_reaches_no_output() -> None:
    torch.manual_seed(0)
    model = MoMEPlus("small").eval()
    x = torch.randn(*SHAPE)
    available = torch.tensor([[1, 0, 1, 0], [0, 0, 0, 1]])
    other = x.clone()
    other[available == 0] = torch.randn_like(other[available == 0]) * 100  # anything, even huge or NaN
    other[1, 0, 0, 0, 0] = float("nan")
    with torch.no_grad():
        a = model(x, available, with_aux=True)
        b = model(other, available, with_aux=True)
    for key in ("logits", "gate", "experts"):
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    # an available expert's input is its own sequence: the dispatch row is the identity
    d = model.dispatch(model.availability(x, available))
    assert torch.equal(d[0, 0], torch.tensor([1.0, 0, 0, 0])) and torch.equal(d[1, 3], torch.tensor([0.0, 0, 0, 1]))


def test_training_with_random_sequence_dropout_runs() -> None:
    torch.manual_seed(0)
    model = MoMEPlus("small").train()
    loss_fn = MoMEPlusLoss(model.num_levels, expert_weight=0.5)
    opt = torch.optim.SGD(model.parameters(), lr=1e-2)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(*SHAPE), (torch.rand(2, 1, 32, 32, 32) > 0.9).float()
    seen = []
    for _ in range(2):
        masks = draw_masks(2, 4, g)
        seen += [tuple(m.tolist()) for m in masks]
        out = model(x, masks)
        assert len(out["fused"]) == model.num_levels and len(out["experts"]) == 4
        loss = loss_fn(out, {"label": y, "available": masks})
        opt.zero_grad()
        loss.backward()
        opt.step()
        assert torch.isfinite(loss)
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in model.dispatch.parameters())
    assert len(set(seen)) > 1


def test_draw_masks_follows_a_prior() -> None:
    g = torch.Generator().manual_seed(0)
    prior = torch.zeros(15)
    prior[[0, 14]] = 1.0  # T1 alone, or everything
    drawn = draw_masks(200, 4, g, prior)
    assert {tuple(m.tolist()) for m in drawn} == {(1, 0, 0, 0), (1, 1, 1, 1)}
    with pytest.raises(ValueError, match="15 non-negative weights"):
        draw_masks(1, 4, g, torch.ones(3))


def test_paper_preset_parameter_count() -> None:
    """Hand count, from the paper plan's layer list (docs/METHOD.md): an expert (1 channel in, 2 classes) has
    31,195,594 parameters. The gate takes 4 + 4 x 32 = 132 channels (131 more input channels to the first 3^3 conv
    with 32 filters: 113,184), gives 4 x 2 = 8 weights (6 more outputs on the five 1^3 heads over 320, 256, 128, 64,
    32 features: 6 x 800 + 6 x 5 = 4,830) and receives 4 prior channels at the bottleneck (4 x 320 x 2^3 = 10,240 in
    the first transposed conv). Dispatch 4-4-8-16-16: 20 + 40 + 144 + 272 = 476."""
    expert = 31_195_594
    gate = expert + 131 * 32 * 27 + 6 * 800 + 6 * 5 + 4 * 320 * 8
    model = MoMEPlus("paper")
    assert sum(p.numel() for p in model.experts[0].parameters()) == expert
    assert sum(p.numel() for p in model.gate.parameters()) == gate
    assert sum(p.numel() for p in model.dispatch.parameters()) == 476
    assert sum(p.numel() for p in model.parameters()) == 4 * expert + gate + 476 == 156_106_700


@pytest.mark.parametrize(
    ("available", "match"),
    [
        ([[1, 0, 0, 0], [0, 0, 0, 0]], "no available sequence"),
        ([[1, 0, 0], [1, 0, 0]], r"shape \(batch, 4\)"),
        ([[1, 0.5, 0, 0], [1, 0, 0, 0]], "0 \\(missing\\) or 1"),
    ],
)
def test_bad_masks_are_refused(available: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        MoMEPlus("small").eval()(torch.randn(*SHAPE), torch.tensor(available))


def test_a_one_channel_image_is_refused_with_the_sequences_named() -> None:
    with pytest.raises(ValueError, match="one channel per sequence \\(T1, T1c, T2, FLAIR\\)"):
        MoMEPlus("small")(torch.randn(1, 1, 32, 32, 32))


def test_the_loss_averages_only_the_available_experts() -> None:
    torch.manual_seed(0)
    loss_fn = MoMEPlusLoss(2, expert_weight=1.0)
    coarse = (torch.rand(1, 1, 4, 4, 4) > 0.7).float()
    y = coarse.repeat_interleave(2, 2).repeat_interleave(2, 3).repeat_interleave(2, 4)  # 2^3 blocks: same at 4^3

    def logits(label: torch.Tensor, sign: float) -> torch.Tensor:  # confident: right (+1) or wrong (-1)
        return sign * 10 * torch.cat([1 - 2 * label, 2 * label - 1], 1)

    good, bad = [logits(y, 1), logits(coarse, 1)], [logits(y, -1), logits(coarse, -1)]
    pred = {"fused": good, "experts": [good, bad]}
    only_good = loss_fn(pred, {"label": y, "available": torch.tensor([[1, 0]])})
    both = loss_fn(pred, {"label": y, "available": torch.tensor([[1, 1]])})
    assert only_good < 0.1 < both  # the wrong expert counts only where its sequence is present
    fused_only = MoMEPlusLoss(2, expert_weight=0.0)(pred, {"label": y, "available": torch.tensor([[1, 1]])})
    assert fused_only < 0.1  # the reference's effective loss: the fused output alone


def test_a_sliding_window_over_one_case_passes_its_mask_to_every_window() -> None:
    from monai.inferers import sliding_window_inference

    torch.manual_seed(0)
    model = MoMEPlus("small").eval()
    x = torch.randn(1, 4, 32, 32, 64)
    available = torch.tensor([[0, 1, 0, 1]])
    with torch.no_grad():
        windows = sliding_window_inference(x, (32, 32, 32), 4, model, overlap=0.5, available=available)
        noisy = x.clone()
        noisy[:, [0, 2]] = 1e3
        again = sliding_window_inference(noisy, (32, 32, 32), 4, model, overlap=0.5, available=available)
    assert windows.shape == (1, 2, 32, 32, 64)
    torch.testing.assert_close(windows, again, rtol=0, atol=0)


def test_zero_fill_baseline_ignores_what_missing_channels_hold() -> None:
    torch.manual_seed(0)
    net = ZeroFillUNet("small").eval()
    x = torch.randn(2, 4, 32, 32, 32)
    available = torch.tensor([[1.0, 0.0, 1.0, 0.0], [0.0, 0.0, 0.0, 1.0]])
    noisy = x.clone()
    noisy[available == 0] = torch.randn_like(noisy[available == 0]) * 100
    with torch.no_grad():
        torch.testing.assert_close(net(x, available), net(noisy, available), rtol=0, atol=0)
        assert net(x, available).shape == (2, 2, 32, 32, 32)
        assert not torch.equal(net(x, available), net(x))  # the mask is applied: all present differs
