"""``make serve`` out of the box: the app serves the released model (bundle/models/model.pt) with no ``--conf``."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pytest


@pytest.mark.slow
def test_app_serves_it_with_no_conf(phantom_root: Path, tmp_path: Path, client_factory) -> None:
    """``make serve``'s case: no ``--conf`` but the model name; /infer on a phantom overlaps the truth."""
    image = sorted((phantom_root / "brats2021").rglob("*_flair.nii.gz"))[0]
    label = Path(str(image).replace("_flair.nii.gz", "_seg.nii.gz"))
    studies = tmp_path / "studies"
    studies.mkdir()
    (studies / "case_flair.nii.gz").write_bytes(image.read_bytes())
    with client_factory(studies, {"model_dir": str(tmp_path / "model")}) as client:
        model = client.get("/info/").json()["models"]["mome"]
        assert model["ready"] is True and model["weights"]["preset"] == "small"
        res = client.post("/infer/mome?image=case_flair&output=image")
        assert res.status_code == 200, res.text
    (tmp_path / "pred.nii.gz").write_bytes(res.content)
    pred = np.asarray(nib.load(tmp_path / "pred.nii.gz").dataobj) > 0
    truth = np.asarray(nib.load(label).dataobj) > 0
    assert pred.any() and (pred & truth).sum() > 0.3 * truth.sum()
