"""The official release (six nnU-Net checkpoints + plans + dataset.json) converts to a self-describing model.pt that
computes the published fusion; anything the bundle cannot reproduce is refused with every difference, nothing
written."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from demo.official import write_release
from scripts.convert_official import load_nnunet_weights, main
from scripts.errors import InputError
from scripts.mome import MoME, build_unet
from scripts.record import KEY, read


def _experts_and_gate(folder: Path) -> tuple[list, torch.nn.Module]:
    nets = []
    files = [(f"checkpoint_best{k + 1}.pth", 1, 2) for k in range(5)] + [("checkpoint_best.pth", 41, 10)]
    for name, cin, cout in files:
        net = build_unet(cin, cout, "small")
        net.load_state_dict(load_nnunet_weights(folder / name))
        net.decoder.deep_supervision = False
        nets.append(net.eval())
    return nets[:5], nets[5]


def _refused(folder: Path, capsys, *words: str) -> None:
    out = folder / "m.pt"
    with pytest.raises(SystemExit) as exit_:
        main(["--src", str(folder), "--out", str(out), "--preset", "small"])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and not out.exists()
    for word in words:
        assert word in err, err


def test_converted_model_equals_published_fusion_and_describes_itself(tmp_path: Path) -> None:
    write_release(tmp_path, "small")
    ckpt = torch.load(tmp_path / "checkpoint_best3.pth", weights_only=False)  # a DDP-trained expert
    ckpt["network_weights"] = {"module." + k: v for k, v in ckpt["network_weights"].items()}
    torch.save(ckpt, tmp_path / "checkpoint_best3.pth")
    experts, gate = _experts_and_gate(tmp_path)
    out = tmp_path / "model.pt"
    main(["--src", str(tmp_path), "--out", str(out), "--preset", "small"])
    saved = torch.load(out, weights_only=True)
    assert set(saved) == {"model", KEY}
    assert read(out) == {
        "network": "MoME", "preset": "small", "modalities": ["T1", "T1c", "T2", "FLAIR", "DWI"], "num_classes": 2,
        "gate_activation": None, "spacing": 1.0, "register": True, "normalization": "box",
        "patch_size": [128, 128, 128],
    }  # fmt: skip
    model = MoME("small")
    model.load_state_dict(saved["model"], strict=True)
    model.eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        feats = [net.encoder(x)[0] for net in experts]
        w = gate(torch.cat([x, *feats], 1))
        expected = sum(experts[k](x) * w[:, 2 * k : 2 * k + 2] for k in range(5))
        torch.testing.assert_close(model(x), expected, rtol=1e-3, atol=2e-4)


def test_missing_expert_file_is_named(tmp_path: Path, capsys) -> None:
    write_release(tmp_path, "small")
    (tmp_path / "checkpoint_best4.pth").unlink()
    _refused(tmp_path, capsys, "checkpoint_best4.pth")


def test_a_checkpoint_of_another_architecture_is_named(tmp_path: Path, capsys) -> None:
    write_release(tmp_path, "small")
    torch.save({"network_weights": build_unet(1, 3, "small").state_dict()}, tmp_path / "checkpoint_best2.pth")
    _refused(tmp_path, capsys, "checkpoint_best2.pth", "shape mismatch")


def test_wrong_preset_is_an_error_naming_the_file(tmp_path: Path) -> None:
    write_release(tmp_path, "small", plans_files=False)
    with pytest.raises(InputError, match="checkpoint_best.pth does not fit the 'paper' preset"):
        from scripts.convert_official import convert

        convert(tmp_path, preset="paper")


def test_not_an_nnunet_checkpoint(tmp_path: Path, capsys) -> None:
    write_release(tmp_path, "small")
    torch.save({"state_dict": {}}, tmp_path / "checkpoint_best2.pth")
    _refused(tmp_path, capsys, "checkpoint_best2.pth: expected an nnU-Net checkpoint")


def test_a_plan_the_bundle_cannot_reproduce_lists_every_difference(tmp_path: Path, capsys) -> None:
    write_release(tmp_path, "small")
    plans = json.loads((tmp_path / "plans.json").read_text())
    config = plans["configurations"]["3d_fullres"]
    config["patch_size"] = [96, 160, 96]
    config["use_mask_for_norm"] = [True]
    (tmp_path / "plans.json").write_text(json.dumps(plans))
    dataset = json.loads((tmp_path / "dataset.json").read_text())
    dataset["labels"]["oedema"] = 2
    (tmp_path / "dataset.json").write_text(json.dumps(dataset))
    _refused(tmp_path, capsys, "patch_size [96, 160, 96]", "use_mask_for_norm [True]", "2 classes")
