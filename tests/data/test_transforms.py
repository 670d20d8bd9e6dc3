"""Preprocessing: registration, template crop, lesion label, modality index and the inverse to native space."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.transforms import (
    Compose,
    CropForegroundd,
    Invertd,
    LoadImaged,
    MaskIntensityd,
    NormalizeIntensityd,
    Orientationd,
    Spacingd,
)

from scripts.data.geometry import resample
from scripts.data.modality import UNKNOWN, canonical_modality, modality_index
from scripts.data.registration import register_to_template
from scripts.data.template import CROP, mni_template
from scripts.data.transforms import LesionLabeld, ModalityIndexd, RegisterToTemplated


def _oblique_case(phantom_root: Path, tmp_path: Path) -> tuple[Path, Path, np.ndarray]:
    """A phantom brain moved by a known rotation + shift onto an oblique, anisotropic, LPS-ordered grid."""
    src = phantom_root / "brats2021/RSNA_ASNR_MICCAI_BraTS2021_TrainingData/BraTS2021_00000"
    img, lab = nib.load(src / "BraTS2021_00000_t1.nii.gz"), nib.load(src / "BraTS2021_00000_seg.nii.gz")
    theta = np.deg2rad(9.0)
    move = np.eye(4)
    move[:3, :3] = [[np.cos(theta), -np.sin(theta), 0], [np.sin(theta), np.cos(theta), 0], [0, 0, 1]]
    move[:3, 3] = [6.0, -4.0, 3.0]  # native world = move @ template-aligned world
    grid = np.diag([-1.7, 1.7, 2.2, 1.0])
    grid[:3, 3] = [110.0, -135.0, -80.0]
    shape = (130, 150, 90)
    image = resample(np.asarray(img.dataobj), img.affine, grid, shape, order=1, world=np.linalg.inv(move))
    label = resample(np.asarray(lab.dataobj), lab.affine, grid, shape, order=0, world=np.linalg.inv(move))
    nib.save(nib.Nifti1Image(image.astype(np.float32), grid), tmp_path / "image.nii.gz")
    nib.save(nib.Nifti1Image(label.astype(np.uint8), grid), tmp_path / "label.nii.gz")
    return tmp_path / "image.nii.gz", tmp_path / "label.nii.gz", move


def test_template_crop_has_a_shifted_affine() -> None:
    t1 = mni_template(1.0)
    assert t1.image.shape == (160, 196, 160)
    # voxel (0,0,0) of the crop is template voxel (20,20,0): origin (-98,-134,-72) + (20,20,0)
    np.testing.assert_allclose(t1.affine[:3, 3], [-78.0, -114.0, -72.0])
    t2 = mni_template(2.0)
    assert t2.image.shape == tuple(int((b - a) / 2) for a, b in CROP)
    assert 0.35 < t2.mask.mean() < 0.65  # brain fills about half of the crop box


def test_registration_recovers_a_known_affine(phantom_root, tmp_path) -> None:
    image, _, move = _oblique_case(phantom_root, tmp_path)
    img = nib.load(image)
    src = nib.load(
        phantom_root / "brats2021/RSNA_ASNR_MICCAI_BraTS2021_TrainingData/BraTS2021_00000/BraTS2021_00000_t1.nii.gz"
    )
    # the phantom subject is itself a warped brain: moving it by `move` must compose with its own registration
    expected = move @ register_to_template(np.asarray(src.dataobj), src.affine)
    estimate = register_to_template(np.asarray(img.dataobj), img.affine)
    points = np.array([[x, y, z, 1.0] for x in (-60, 0, 60) for y in (-80, 0, 50) for z in (-30, 0, 50)]).T
    error = np.linalg.norm((estimate - expected) @ points, axis=0)
    assert error.max() < 2.5, error


@pytest.mark.parametrize("register", [True, False])
def test_inverse_returns_labels_to_the_native_grid(phantom_root, tmp_path, register) -> None:
    image, label, _ = _oblique_case(phantom_root, tmp_path)
    keys = ["image", "label"]
    steps = [LoadImaged(keys, ensure_channel_first=True), LesionLabeld("label"), Orientationd(keys, "RAS", labels=None)]
    if register:
        steps += [
            RegisterToTemplated(keys, spacing=1.0),
            MaskIntensityd("image", mask_data=mni_template(1.0).mask[None]),
        ]
    else:
        steps += [Spacingd(keys, pixdim=[1.0] * 3, mode=["bilinear", "nearest"]), CropForegroundd(keys, "image")]
    steps.append(NormalizeIntensityd("image", nonzero=True))
    pre = Compose(steps)
    data = pre({"image": str(image), "label": str(label)})
    if register:
        assert tuple(data["image"].shape[1:]) == (160, 196, 160)
        np.testing.assert_allclose(data["image"].affine.numpy(), mni_template(1.0).affine)
        assert float(data["image"][0][~torch.as_tensor(mni_template(1.0).mask)].abs().max()) == 0  # skull-stripped
    data["pred"] = torch.cat([1 - data["label"], data["label"]])  # a perfect "prediction", as probabilities
    back = Invertd("pred", transform=pre, orig_keys="image", nearest_interp=False)(data)["pred"]
    native = nib.load(label)
    assert tuple(back.shape[1:]) == native.shape
    np.testing.assert_allclose(back.affine.numpy(), native.affine, atol=1e-4)
    pred = back.argmax(0).numpy() > 0
    truth = np.asarray(native.dataobj) > 0
    dice = 2 * (pred & truth).sum() / (pred.sum() + truth.sum())
    assert dice >= 0.95, dice


def test_lesion_label_rules() -> None:
    label = torch.tensor([[0, 1, 2, 4]]).float()
    assert LesionLabeld()({"label": label})["label"].tolist() == [[0, 1, 1, 1]]
    out = LesionLabeld()({"label": label, "label_values": [1]})
    assert out["label"].tolist() == [[0, 1, 0, 0]] and "label_values" not in out


def test_modality_vocabulary() -> None:
    assert canonical_modality("t1ce") == "T1c" and canonical_modality("T2w") == "T2"
    assert canonical_modality("t2f") == "FLAIR" and canonical_modality(None) is None
    assert modality_index("DWI") == 4 and modality_index("") == UNKNOWN
    assert modality_index("DWI", modalities=("T1", "T1c", "T2", "FLAIR")) == UNKNOWN
    assert ModalityIndexd()({"image": "x.nii.gz"})["modality"] == UNKNOWN
    with pytest.raises(ValueError, match="unknown modality 'T3' in datalist item x.nii.gz"):
        ModalityIndexd()({"image": "x.nii.gz", "modality": "T3"})


def test_box_normalisation_is_the_reference_recipe(tmp_path, monkeypatch) -> None:
    """normalization 'box' (what the official weights were trained with): the 160x196x160 crop, the template brain
    mask, then a z-score over the whole box, background included -- computed here by hand on an image already on
    the 1 mm template grid (registration aside: it is the identity)."""
    from monai.bundle import ConfigParser

    import scripts.data.transforms as transforms
    from scripts.data.template import CROP, mni_template, template_map

    monkeypatch.setattr(transforms, "register_to_template", lambda image, affine, **kwargs: np.eye(4))
    grid, affine = template_map("t1")
    rng = np.random.default_rng(0)
    image = (grid + 20 * rng.random(grid.shape)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "t1.nii.gz")
    parser = ConfigParser()
    parser.read_config(str(Path(transforms.__file__).parents[2] / "configs/inference.json"))
    parser.update({"bundle_root": "bundle", "ckpt_path": str(tmp_path / "none.pt"), "normalization": "box"})
    ours = parser.get_parsed_content("preprocessing")({"image": str(tmp_path / "t1.nii.gz")})["image"][0].numpy()

    box = image[tuple(slice(a, b) for a, b in CROP)] * mni_template(1.0).mask
    reference = (box - box.mean()) / box.std()
    assert ours.shape == (160, 196, 160)
    np.testing.assert_allclose(ours, reference, atol=1e-4)
    parser.update({"normalization": "brain"})  # today's default differs: z-score inside the brain only
    brain = parser.get_parsed_content("preprocessing", lazy=False)({"image": str(tmp_path / "t1.nii.gz")})["image"]
    assert not np.allclose(brain[0].numpy(), reference, atol=1e-2)
