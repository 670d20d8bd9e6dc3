"""nnU-Net v2 as the oracle: the official weights were validated with nnU-Net's own inference, so ours must give the
same answer on the same image (sliding window 128^3 at step 0.5, Gaussian weighting, with and without mirroring).

A stock ``PlainConvUNet`` with random weights is written as an nnU-Net trained-model folder (the paper's plan: 128^3
patches) and run through ``nnUNetPredictor``; the same weights run through our inference (as a universal U-Net).
nnU-Net adds the window outputs up in float16 (we use float32): the random networks' output layers are scaled so
that their logits have a trained network's size (a few units), where float16 rounding moves a softmax by about 1e-3;
with He-initialised random heads the logits reach the hundreds and float16 alone flips labels. The image has
no zero voxel, is already at the plan's 1 mm spacing and in RAS = nnU-Net's axis order here, so nnU-Net's crop and
resampling are no-ops and its z-score over the whole image equals our ``normalization: box``.

Two comparisons each: with nnU-Net's stock predictor, which adds the window outputs up in float16 (its rounding at
window corners, where the Gaussian weights are ~1e-10, is what separates it from us), and with the same
sliding-window loop in float32 built from nnU-Net's own parts (its window positions, its Gaussian, its mirroring),
which must agree with ours to float32 precision.
"""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from demo.commands import BUNDLE, config_files
from demo.official import write_nnunet_model
from scripts.inference import MirroredSlidingWindowInferer
from scripts.mome import MoME, build_unet

pytestmark = pytest.mark.slow


def _predictor(folder: Path, mirroring: bool):
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(
        tile_step_size=0.5,
        use_gaussian=True,
        use_mirroring=mirroring,
        perform_everything_on_device=False,
        device=torch.device("cpu"),
        verbose=False,
        allow_tqdm=False,
    )
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    return predictor


def _trained_size(x: torch.Tensor, *nets: torch.nn.Module, target: float = 4.0) -> None:
    """Scale each network's 1x1x1 output heads so that its logits on ``x`` spread by about ``target`` (a trained
    network's size) instead of a random He-initialised head's hundreds."""
    with torch.no_grad():
        for net in nets:
            net.eval()
            out = net(x[..., :64, :64, :64])
            scale = target / float(out.std())
            for layer in net.decoder.seg_layers:
                layer.weight.mul_(scale)
                layer.bias.mul_(scale)


def _image(shape: tuple[int, int, int]) -> np.ndarray:
    rng = np.random.default_rng(0)
    grid = np.stack(np.meshgrid(*(np.linspace(-1, 1, s) for s in shape), indexing="ij"))
    return (100 + 50 * np.exp(-(grid**2).sum(0) * 3) + 5 * rng.standard_normal(shape)).astype(np.float32)


class _Memo(torch.nn.Module):
    """A network whose output on a byte-identical input is computed once: the three pipelines of a test send the
    same windows (and mirrored windows) through the same weights, and a paper-preset forward at 128^3 takes ~10 s on
    two cores. Only exact repeats are reused, so every pipeline's own windowing, flipping and blending still runs."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.seen = net, {}

    def load_state_dict(self, state_dict, *args, **kwargs):  # nnU-Net's predictor loads its fold's weights
        return self.net.load_state_dict(state_dict, *args, **kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        key = (tuple(x.shape), x.contiguous().numpy().tobytes())
        if key not in self.seen:
            self.seen[key] = self.net(x)
        return self.seen[key].clone()


def _well_weighted(predictor, shape: tuple[int, ...]) -> torch.Tensor:
    """Voxels whose summed Gaussian weight, as nnU-Net's stock predictor adds it up in float16, is at least 1e-3 of
    its maximum: outside them (window corners, weights down to ~1e-10) float16 rounding decides the blend."""
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    patch = tuple(predictor.configuration_manager.patch_size)
    gaussian = compute_gaussian(patch, 1 / 8, 10, dtype=torch.float16, device=torch.device("cpu"))
    total = torch.zeros(shape, dtype=torch.float16)
    for window in predictor._internal_get_sliding_window_slicers(shape):
        total[window[1:]] += gaussian
    return total.float() >= 1e-3 * float(total.float().max())


def _compare(ours: torch.Tensor, theirs: torch.Tensor, where: torch.Tensor | None = None) -> tuple[float, float]:
    """Share of voxels with the same label; the largest softmax difference (over ``where`` when given)."""
    p, q = torch.softmax(ours.float(), 0), torch.softmax(theirs.float(), 0)
    diff = (p - q).abs().amax(0)
    worst = diff[where] if where is not None else diff
    return float((p.argmax(0) == q.argmax(0)).float().mean()), float(worst.max())


def _against_stock(name: str, ours: torch.Tensor, theirs: torch.Tensor, predictor) -> None:
    """nnU-Net's stock predictor: >= 99.9 % of labels the same; softmax within 1e-2 where its float16 sums of the
    Gaussian weights are not rounding noise."""
    well = _well_weighted(predictor, tuple(ours.shape[1:]))
    agreement, worst_all = _compare(ours, theirs)
    _, worst = _compare(ours, theirs, well)
    print(
        f"{name} vs nnU-Net's predictor: labels {agreement:.5f}; softmax max difference {worst:.2e} on the "
        f"{float(well.float().mean()):.4f} of voxels with blend weight >= 1e-3 (everywhere: {worst_all:.2e})"
    )
    assert agreement >= 0.999 and worst < 1e-2


def _nnunet_float32(predictor, x: torch.Tensor) -> torch.Tensor:
    """nnU-Net's sliding window from its own parts (window positions, Gaussian, mirroring), summed in float32."""
    from nnunetv2.inference.sliding_window_prediction import compute_gaussian

    data = x[None]
    patch = tuple(predictor.configuration_manager.patch_size)
    gaussian = compute_gaussian(patch, 1 / 8, 10, dtype=torch.float32, device=torch.device("cpu"))
    logits = torch.zeros(predictor.label_manager.num_segmentation_heads, *data.shape[1:])
    weights = torch.zeros(data.shape[1:])
    with torch.no_grad():
        for window in predictor._internal_get_sliding_window_slicers(data.shape[1:]):
            logits[window] += predictor._internal_maybe_mirror_and_predict(data[window][None])[0] * gaussian
            weights[window[1:]] += gaussian
    return logits / weights


def test_universal_unet_through_both_pipelines(tmp_path: Path) -> None:
    """nnU-Net's full predictor (its preprocessing, windows, Gaussian, export) vs our inference.json, no mirroring;
    two windows along the last axis, so the Gaussian blending is compared too."""
    from monai.bundle import ConfigWorkflow

    torch.manual_seed(0)
    unet = build_unet(1, 2, "small").eval()  # the pipelines do not depend on the network's width or depth
    image = _image((128, 128, 192))
    _trained_size(torch.as_tensor((image - image.mean()) / image.std())[None, None], unet)
    folder = write_nnunet_model(tmp_path / "nnunet", unet)
    nib.save(nib.Nifti1Image(image, np.eye(4)), tmp_path / "case_t1.nii.gz")

    predictor = _predictor(folder, mirroring=False)
    predictor.network = _Memo(predictor.network)
    seg, probabilities = predictor.predict_single_npy_array(
        image[None], {"spacing": [1.0, 1.0, 1.0]}, save_or_return_probabilities=True
    )

    (tmp_path / "models").mkdir()
    torch.save({"model": unet.state_dict()}, tmp_path / "models" / "model.pt")
    wf = ConfigWorkflow(
        config_file=[str(BUNDLE / f) for f in config_files(["inference.json"], cpu=False)],
        workflow_type="infer",
        bundle_root=str(BUNDLE),
        network_def={"_target_": "scripts.mome.build_unet", "in_channels": 1, "num_classes": 2, "preset": "small"},
        input=str(tmp_path / "case_t1.nii.gz"),
        ckpt_dir=str(tmp_path / "models"),
        output_dir=str(tmp_path / "ours"),
        register=False,
        spacing=1.0,
        normalization="box",
        sw_roi_size=[128, 128, 128],
        overlap=0.5,
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    ours = np.asarray(nib.load(tmp_path / "ours" / "case_t1_seg.nii.gz").dataobj)
    agreement = float((ours == seg).mean())
    print(f"labels: {agreement:.5f} of voxels agree")
    assert ours.shape == seg.shape == image.shape and agreement >= 0.999
    assert 0.01 < seg.mean() < 0.99  # random weights still give both classes: the comparison means something

    x = torch.as_tensor((image - image.mean()) / image.std())
    with torch.no_grad():
        logits = MirroredSlidingWindowInferer([128, 128, 128], overlap=0.5)(x[None, None], predictor.network)[0]
    print(f"{len(predictor.network.seen)} distinct windows computed for nnU-Net's and our sliding window")
    _against_stock("universal U-Net", logits, torch.log(torch.as_tensor(probabilities).clamp_min(1e-12)), predictor)
    agreement, worst = _compare(logits, _nnunet_float32(predictor, x))
    print(f"vs nnU-Net's parts in float32: labels {agreement:.5f}, softmax max difference {worst:.2e}")
    assert agreement == 1.0 and worst < 1e-4


def test_mirroring_tta_matches_nnunet(tmp_path: Path) -> None:
    """The 8-way mirroring of one 128^3 window: nnU-Net's sliding window with mirroring vs ours. The network is the
    small preset (the paper preset's eight 128^3 forwards took 2 minutes on an AVX2 CPU; mirroring does not depend on
    the network)."""
    torch.manual_seed(1)
    unet = build_unet(1, 2, "small").eval()
    image = _image((128, 128, 128))
    x = torch.as_tensor((image - image.mean()) / image.std())
    _trained_size(x[None, None], unet)
    predictor = _predictor(write_nnunet_model(tmp_path / "nnunet", unet), mirroring=True)
    predictor.configuration_manager.configuration["patch_size"] = [128, 128, 128]
    assert tuple(predictor.allowed_mirroring_axes) == (0, 1, 2)
    predictor.network = _Memo(predictor.network)
    with torch.no_grad():
        theirs = predictor.predict_sliding_window_return_logits(x[None])
        inferer = MirroredSlidingWindowInferer([128] * 3, overlap=0.5, mirror_axes=(0, 1, 2))
        ours = inferer(x[None, None], predictor.network)[0]
    assert len(predictor.network.seen) == 8  # eight distinct mirrored inputs, each computed once
    _against_stock("TTA", ours, theirs, predictor)
    agreement, worst = _compare(ours, _nnunet_float32(predictor, x))
    print(f"TTA vs nnU-Net's parts in float32: labels {agreement:.5f}, softmax max difference {worst:.2e}")
    assert agreement == 1.0 and worst < 1e-4


class _PublishedFusion(torch.nn.Module):
    """MoME's fused logits by the published formula, sum_k W_k * Y_k, from its experts and gate as plain U-Nets."""

    def __init__(self, model: MoME) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.model
        ys = [e(x) for e in m.experts]
        w = m.gate(torch.cat([x, *(e.encoder(x)[0] for e in m.experts)], 1))
        return sum(ys[k] * w[:, 2 * k : 2 * k + 2] for k in range(len(ys)))


def test_mome_fusion_on_nnunet_windows_matches_our_inferer(tmp_path: Path) -> None:
    """The full MoME path: the published fusion formula evaluated on nnU-Net's windows and Gaussian, vs our lean
    eval forward in our sliding window (small preset, 64^3 windows: the window logic is checked at the paper's
    128^3 above; here it is the fusion)."""
    torch.manual_seed(2)
    model = MoME("small").eval()
    image = _image((64, 64, 96))
    x = torch.as_tensor((image - image.mean()) / image.std())
    _trained_size(x[None, None], *model.experts, target=2.0)  # fused logits: expert logits x gate weights ~ 1
    with torch.no_grad():
        gate_in = torch.cat(
            [x[None, None, :64, :64, :64], *(e.encoder(x[None, None, :64, :64, :64])[0] for e in model.experts)], 1
        )
        scale = 1.0 / float(model.gate(gate_in).std())
        for layer in model.gate.decoder.seg_layers:
            layer.weight.mul_(scale)
            layer.bias.mul_(scale)
    predictor = _predictor(write_nnunet_model(tmp_path / "nnunet", build_unet(1, 2, "small")), mirroring=False)
    predictor.configuration_manager.configuration["patch_size"] = [64, 64, 64]
    predictor.network = _Memo(_PublishedFusion(model))
    with torch.no_grad():
        theirs = predictor.predict_sliding_window_return_logits(x[None])
        ours = MirroredSlidingWindowInferer([64] * 3, overlap=0.5)(x[None, None], model)[0]
    _against_stock("MoME", ours, theirs, predictor)
    agreement, worst = _compare(ours, _nnunet_float32(predictor, x))
    print(f"MoME vs nnU-Net's parts in float32: labels {agreement:.5f}, softmax max difference {worst:.2e}")
    assert agreement >= 0.9999 and worst < 1e-3  # the published formula vs the lean eval forward: float32 sums
    assert json.loads((tmp_path / "nnunet" / "plans.json").read_text())["configurations"]["3d_fullres"]
