from __future__ import annotations

from pathlib import Path

import pytest
import torch

from scripts.convert_official import main
from scripts.mome import MoME, build_unet


def _official_release(folder: Path) -> tuple[list, object]:
    """Six stock PlainConvUNets with random weights, saved as the reference implementation saves them."""
    experts = []
    for k in range(5):
        torch.manual_seed(100 + k)
        net = build_unet(1, 2, "small")
        net.decoder.deep_supervision = False
        experts.append(net)
        prefix = "module." if k == 2 else ""  # a DDP-trained checkpoint
        weights = {prefix + key: v for key, v in net.state_dict().items()}
        torch.save(
            {"network_weights": weights, "trainer_name": "nnUNetTrainer"}, folder / f"checkpoint_best{k + 1}.pth"
        )
    torch.manual_seed(7)
    gate = build_unet(1 + 5 * 8, 10, "small")
    gate.decoder.deep_supervision = False
    torch.save({"network_weights": gate.state_dict(), "current_epoch": 799}, folder / "checkpoint_best.pth")
    return experts, gate


def test_converted_model_equals_published_fusion(tmp_path: Path) -> None:
    experts, gate = _official_release(tmp_path)
    out = tmp_path / "model.pt"
    main(["--src", str(tmp_path), "--out", str(out), "--preset", "small"])
    model = MoME("small")
    model.load_state_dict(torch.load(out, weights_only=True)["model"], strict=True)
    model.eval()
    x = torch.randn(1, 1, 32, 32, 32)
    with torch.no_grad():
        feats = [net.encoder(x)[0] for net in experts]
        w = gate(torch.cat([x, *feats], 1))
        expected = sum(experts[k](x) * w[:, 2 * k : 2 * k + 2] for k in range(5))
        torch.testing.assert_close(model(x), expected, rtol=1e-3, atol=2e-4)


def test_missing_expert_file_is_named(tmp_path: Path) -> None:
    _official_release(tmp_path)
    (tmp_path / "checkpoint_best4.pth").unlink()
    with pytest.raises(FileNotFoundError, match="checkpoint_best4.pth"):
        main(["--src", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--preset", "small"])
    assert not (tmp_path / "m.pt").exists()


def test_wrong_preset_is_an_error_naming_the_file(tmp_path: Path) -> None:
    _official_release(tmp_path)
    with pytest.raises(ValueError, match="checkpoint_best.pth does not fit the 'paper' preset"):
        main(["--src", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--preset", "paper"])


def test_not_an_nnunet_checkpoint(tmp_path: Path) -> None:
    _official_release(tmp_path)
    torch.save({"state_dict": {}}, tmp_path / "checkpoint_best2.pth")
    with pytest.raises(ValueError, match="checkpoint_best2.pth: expected an nnU-Net checkpoint"):
        main(["--src", str(tmp_path), "--out", str(tmp_path / "m.pt"), "--preset", "small"])
