from __future__ import annotations

import pytest
import torch
from torch import nn

from scripts.mome import MODALITIES, MoME, build_unet


def _n(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.slow
def test_paper_preset_parameters_and_eval_shape() -> None:
    model = MoME("paper")
    assert [_n(e) for e in model.experts] == [31_195_594] * 5
    assert _n(model.gate) == 31_340_274
    assert _n(model) == 187_318_244
    assert model.gate.encoder.stages[0][0].convs[0].conv.in_channels == 1 + 5 * 32
    assert model.num_levels == 5
    model.eval()
    with torch.inference_mode():
        out = model(torch.randn(1, 1, 64, 64, 64))
    assert isinstance(out, torch.Tensor)
    assert out.shape == (1, 2, 64, 64, 64)


def test_train_mode_returns_deep_supervision_for_fused_and_experts() -> None:
    model = MoME("small").train()
    out = model(torch.randn(2, 1, 32, 48, 32))
    assert set(out) == {"fused", "experts"}
    assert len(out["experts"]) == len(MODALITIES)
    shapes = [tuple(t.shape) for t in out["fused"]]
    assert shapes == [(2, 2, 32 // s, 48 // s, 32 // s) for s in (1, 2, 4, 8)]
    assert [tuple(t.shape) for t in out["experts"][3]] == shapes


def test_eval_fusion_equals_hand_computation() -> None:
    model = MoME("small").eval()
    x = torch.randn(2, 1, 32, 32, 32)
    with torch.no_grad():
        aux = model(x, with_aux=True)
        fused = model(x)
        # by hand, from the stand-alone networks
        feats, logits = [], []
        for expert in model.experts:
            feats.append(expert.encoder(x)[0])
            logits.append(expert(x))
        w = model.gate(torch.cat([x, *feats], 1))
        expected = sum(w[:, 2 * k : 2 * k + 2] * logits[k] for k in range(5))
    assert w.shape == (2, 10, 32, 32, 32)
    # eval accumulates the gate's first convolution expert by expert: same function, other summation order
    close = {"rtol": 1e-3, "atol": 2e-4}
    torch.testing.assert_close(fused, expected, **close)
    torch.testing.assert_close(aux["logits"], expected, **close)
    torch.testing.assert_close(aux["gate"], w, **close)
    torch.testing.assert_close(aux["experts"], torch.cat(logits, 1), **close)


def test_lean_eval_forward_equals_training_forward() -> None:
    model = MoME("small")
    x = torch.randn(1, 1, 32, 48, 32)
    with torch.no_grad():
        full = model.train()(x)["fused"][0]  # no dropout, instance norm keeps no running statistics
        lean = model.eval()(x)
    torch.testing.assert_close(lean, full, rtol=1e-3, atol=2e-4)


def test_softmax_gate_normalises_over_experts() -> None:
    model = MoME("small", gate_activation="softmax").eval()
    with torch.no_grad():
        aux = model(torch.randn(1, 1, 16, 16, 32), with_aux=True)
    gate = aux["gate"].unflatten(1, (5, 2))
    torch.testing.assert_close(gate.sum(1), torch.ones_like(gate[:, 0]))
    expected = (gate * aux["experts"].unflatten(1, (5, 2))).sum(1)
    torch.testing.assert_close(aux["logits"], expected)


def test_eval_puts_every_submodule_in_eval_mode() -> None:
    model = MoME("small", dropout=0.3)
    model.eval()
    assert not any(m.training for m in model.modules())
    model.train()
    assert all(m.training for m in model.modules())


def test_dropout_keeps_state_dict_keys_and_is_off_in_eval() -> None:
    plain, dropped = MoME("small"), MoME("small", dropout=0.5)
    assert plain.state_dict().keys() == dropped.state_dict().keys()
    dropped.load_state_dict(plain.state_dict())
    plain.eval()
    dropped.eval()
    x = torch.randn(1, 1, 16, 32, 16)
    with torch.no_grad():
        torch.testing.assert_close(plain(x), dropped(x))
        # MC-dropout: switching the dropout modules on makes repeated passes differ
        dropped.dropout.train()
        assert not torch.allclose(dropped(x), dropped(x))


def test_number_and_order_of_experts_is_a_parameter() -> None:
    model = MoME("small", modalities=("T1", "T1c", "T2", "FLAIR"))
    assert len(model.experts) == 4
    assert model.gate.encoder.stages[0][0].convs[0].conv.in_channels == 1 + 4 * 8
    assert model.gate.decoder.seg_layers[-1].out_channels == 8


@pytest.mark.parametrize(
    ("shape", "message"),
    [
        ((1, 2, 32, 32, 32), "expects a \\(batch, 1, D, H, W\\)"),
        ((1, 1, 32, 32), "expects"),
        ((1, 1, 32, 40, 32), "divisible by the network's stride product 16"),
        ((1, 1, 16, 16, 16), "too small"),
    ],
)
def test_bad_input_shape_raises_value_error(shape: tuple[int, ...], message: str) -> None:
    model = MoME("small").eval()
    with pytest.raises(ValueError, match=message):
        model(torch.randn(*shape))


def test_bad_constructor_arguments() -> None:
    with pytest.raises(ValueError, match="unknown preset"):
        MoME("huge")
    with pytest.raises(ValueError, match="gate_activation"):
        MoME("small", gate_activation="sigmoid")
    with pytest.raises(ValueError, match="unknown preset"):
        build_unet(1, 2, "huge")


def test_preset_is_read_back_from_weights() -> None:
    from scripts.mome import preset_of

    assert preset_of(MoME("small").state_dict()) == "small"
    with pytest.raises(ValueError, match="matches no MoME preset"):
        preset_of({"gate.x": torch.zeros(1)})
