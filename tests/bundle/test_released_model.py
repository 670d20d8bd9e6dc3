"""The released model (``bundle/models/model.pt``): under Model Zoo's size limit, in half precision, its md5 in
``large_files.yml``, a record that makes it serve with no flags, and weights that segment (a floor far below its
measured Dice and far above what random weights reach)."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.apps import download_url
from monai.bundle import ConfigParser

from demo.commands import BUNDLE, config_files
from demo.release import LIMIT_BYTES, md5
from scripts.metrics import case_metrics
from scripts.mome import MoME

RELEASED = BUNDLE / "models" / "model.pt"


def test_file_is_small_half_precision_and_hashed() -> None:
    assert RELEASED.is_file(), "the released model ships in git"
    assert RELEASED.stat().st_size <= LIMIT_BYTES
    checkpoint = torch.load(RELEASED, map_location="cpu", weights_only=True)
    floats = [v for v in checkpoint["model"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    listed = ConfigParser.load_config_file(BUNDLE / "large_files.yml")["large_files"]
    assert [(e["path"], e["hash_val"], e["hash_type"]) for e in listed] == [("models/model.pt", md5(RELEASED), "md5")]
    for entry in listed:  # Model Zoo's large-file step, offline: the file is found by its md5, nothing downloaded
        entry = {**entry, "filepath": str(BUNDLE / entry["path"])}
        entry.pop("path")
        download_url(**entry)


def test_loads_strictly_into_float32_with_its_record() -> None:
    checkpoint = torch.load(RELEASED, map_location="cpu", weights_only=True)
    record = checkpoint["mome"]
    assert record["preset"] == "small" and record["spacing"] == 2.0 and record["register"] is False
    assert record["normalization"] == "brain" and record["num_classes"] == 2
    model = MoME(record["preset"], modalities=record["modalities"], gate_activation=record["gate_activation"])
    model.load_state_dict(checkpoint["model"], strict=True)
    assert all(p.dtype == torch.float32 for p in model.parameters())


@pytest.mark.slow
def test_segments_a_phantom_with_no_flags(phantom_root: Path, tmp_path: Path) -> None:
    """inference.json with nothing but input and output (no CPU overlay, no knobs): the record supplies preset,
    spacing, registration and normalisation. A BraTS FLAIR phantom, where the tumour is plain to see."""
    from monai.bundle import ConfigWorkflow

    image = sorted((phantom_root / "brats2021").rglob("*_flair.nii.gz"))[0]
    label = Path(str(image).replace("_flair.nii.gz", "_seg.nii.gz"))
    wf = ConfigWorkflow(
        config_file=[str(BUNDLE / f) for f in config_files(["inference.json"], cpu=False)],
        workflow_type="infer",
        bundle_root=str(BUNDLE),
        input=str(image),
        output_dir=str(tmp_path),
    )
    wf.initialize()
    wf.run()
    wf.finalize()
    pred = nib.load(tmp_path / image.name.replace(".nii.gz", "_seg.nii.gz"))
    truth = nib.load(label)
    assert pred.shape == truth.shape
    p = torch.as_tensor(np.asarray(pred.dataobj) > 0)
    t = torch.as_tensor(np.asarray(truth.dataobj) > 0)
    dice = case_metrics(p, t, spacing=truth.header.get_zooms()[:3])["dice"]
    print(f"released model on {image.name}: Dice {dice:.3f}")
    assert dice > 0.3  # random weights give ~0 here
