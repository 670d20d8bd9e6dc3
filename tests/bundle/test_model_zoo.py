"""The model-zoo checks: metadata against the vendored schema (offline), network in/out, TorchScript export."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import torch

from scripts.mome import MoME

BUNDLE = Path(__file__).resolve().parents[2] / "bundle"


def _bundle_cli(*args: str) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "monai.bundle", *args]
    return subprocess.run(cmd, cwd=BUNDLE, capture_output=True, text=True, timeout=300)


def test_verify_metadata_offline() -> None:
    result = _bundle_cli(
        "verify_metadata", "--meta_file", "configs/metadata.json", "--filepath", "docs/meta_schema_20240725.json"
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "metadata is verified with no error" in result.stdout + result.stderr


def test_verify_net_in_out_as_the_zoo_runs_it() -> None:
    """The Model Zoo's CI calls verify_net_in_out with its defaults (n = p = 1, the config's default preset): the
    metadata's spatial shape must then be a size the network takes."""
    result = _bundle_cli(
        "verify_net_in_out", "--net_id", "network_def", "--meta_file", "configs/metadata.json",
        "--config_file", "configs/inference.json", "--bundle_root", str(BUNDLE),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    assert "data shape of network is verified with no error" in result.stdout + result.stderr


def test_torchscript_export_matches_eager(tmp_path: Path) -> None:
    model = MoME("small").eval()
    torch.save({"model": model.state_dict()}, tmp_path / "model.pt")
    result = _bundle_cli(
        "ckpt_export",
        "--net_id",
        "network_def",
        "--filepath",
        str(tmp_path / "model.ts"),
        "--ckpt_file",
        str(tmp_path / "model.pt"),
        "--key_in_ckpt",
        "model",
        "--meta_file",
        "configs/metadata.json",
        "--config_file",
        "configs/inference.json",
        "--use_trace",
        "True",
        "--input_shape",
        "[1, 1, 32, 32, 32]",
        "--preset",
        "small",
    )
    assert result.returncode == 0, result.stderr[-2000:]
    exported = torch.jit.load(str(tmp_path / "model.ts"))
    x = torch.randn(1, 1, 32, 48, 32)  # another size than the trace: the network is fully convolutional
    with torch.no_grad():
        torch.testing.assert_close(exported(x), model(x), rtol=1e-4, atol=1e-4)
