"""Images that still have a skull: registered to the whole-head template, skull-stripped with the template brain mask.

Real whole-head data from a package: Colin27 (``ch2.nii.gz``, and its brain ``ch2bet.nii.gz``) from Debian's
``mricron-data`` (``.ci/run`` installs it), moved by a known random affine so the answer is known.
"""

from __future__ import annotations

import copy
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import MetaTensor

from scripts.data.geometry import resample
from scripts.data.registration import has_skull
from scripts.data.template import mni_template
from scripts.data.transforms import RegisterToTemplated

COLIN = Path("/usr/share/mricron/templates")
pytestmark = pytest.mark.skipif(
    not (COLIN / "ch2.nii.gz").is_file(), reason="needs Debian's mricron-data (Colin27), installed by .ci/run"
)


def _moved(name: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Colin27 resampled through a known affine (rotation ~9 deg, 8 % scale, 12 mm shift) onto a 1.5 mm grid;
    returns the moved array, its affine and the world map used (native world -> Colin world)."""
    img = nib.load(COLIN / name)
    data, affine = np.asarray(img.dataobj, np.float32), np.asarray(img.affine, float)
    rng = np.random.default_rng(3)
    angles = np.deg2rad(rng.uniform(-9, 9, 3))
    cx, cy, cz = np.cos(angles)
    sx, sy, sz = np.sin(angles)
    rotation = np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]]) @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
    world = np.eye(4)
    world[:3, :3] = rotation @ np.diag([1.08, 0.95, 1.02])
    world[:3, 3] = rng.uniform(-12, 12, 3)
    grid = np.diag([1.5, 1.5, 1.5, 1.0])
    grid[:3, 3] = [-100.0, -130.0, -80.0]
    shape = (134, 160, 124)
    return resample(data, affine, grid, shape, order=1, world=world), grid, world


def test_auto_tells_a_head_from_a_stripped_brain() -> None:
    head, affine, _ = _moved("ch2.nii.gz")
    brain, _, _ = _moved("ch2bet.nii.gz")
    assert has_skull(head, affine)[0] is True
    assert has_skull(brain, affine)[0] is False
    template = mni_template(2.0)
    assert has_skull(template.image, template.affine)[0] is False  # the brain-only template the phantoms come from


@pytest.mark.slow
def test_skull_on_registration_recovers_the_brain_and_inverts_a_label() -> None:
    head, affine, world = _moved("ch2.nii.gz")
    truth = _moved("ch2bet.nii.gz")[0] > 0  # Colin27's own brain, moved alike
    lesion = np.zeros(head.shape, np.float32)  # a 12 mm ball inside the brain, in native space
    centre = np.array(np.nonzero(truth)).mean(1).round().astype(int) + [10, 5, 5]
    idx = np.indices(head.shape)
    lesion[((idx - centre[:, None, None, None]) ** 2).sum(0) * 1.5**2 <= 12**2] = 1

    step = RegisterToTemplated(["image", "label"], spacing=1.0, skull_stripped="auto", allow_missing_keys=True)
    data = {}
    for key, array in (("image", head), ("label", lesion)):
        data[key] = MetaTensor(torch.as_tensor(array)[None], affine=torch.as_tensor(affine))
        data[key].meta["filename_or_obj"] = f"colin_{key}.nii.gz"
    out = step(data)
    assert out["image"].meta["skull_stripped"] is False and out["image"].meta["foreground_ml"] > 2700

    # the template brain mask, carried back to the native grid, is the head's brain
    mask_box = MetaTensor(torch.as_tensor(mni_template(1.0).mask, dtype=torch.float32)[None])
    mask_box.copy_meta_from(out["label"])
    mask_box.applied_operations = copy.deepcopy(out["label"].applied_operations)
    back = step.inverse({"label": mask_box})["label"][0].numpy() > 0.5  # labels: nearest neighbour
    dice = 2 * (back & truth).sum() / (back.sum() + truth.sum())
    print(f"brain mask Dice {dice:.3f}")
    assert dice >= 0.90, dice

    round_trip = step.inverse({"label": out["label"]})["label"][0].numpy() > 0.5
    ball = lesion > 0
    trip = 2 * (round_trip & ball).sum() / (round_trip.sum() + ball.sum())
    print(f"label round trip Dice {trip:.3f}")
    assert trip >= 0.95
