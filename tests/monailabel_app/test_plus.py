"""The app's ``mome_plus`` model: a request on one image segments its whole case (its subject's other sequences in
the datastore), returns the label on the requested image's grid and says which images made it; an image whose
sequence cannot be told, or a subject with two images of one sequence, gets a 422 with what to do."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from scripts.mome import MoME
from scripts.mome_plus import PLUS_MODALITIES, MoMEPlus
from scripts.record import KEY


@pytest.fixture
def plus_conf(tmp_path: Path, tiny_conf: dict[str, str]) -> dict[str, str]:
    torch.manual_seed(0)
    record = {"network": "MoMEPlus", "preset": "small", "modalities": list(PLUS_MODALITIES), "num_classes": 2,
              "gate_activation": None, "spacing": 2.0, "register": False, "normalization": "brain",
              "patch_size": [32, 32, 32]}  # fmt: skip
    weights = tmp_path / "plus" / "model.pt"
    weights.parent.mkdir()
    torch.save({"model": MoMEPlus("small").state_dict(), KEY: record}, weights)
    conf = {**tiny_conf, "models": "all", "model_dir": str(tmp_path / "model" / "mome"), "weights": "none"}
    return {**conf, "weights_plus": str(weights)}


@pytest.fixture
def cases(tmp_path: Path, make_case) -> Path:
    """sub1: FLAIR and a T1 on another grid; sub2: a T2 alone; case2: no sequence in its name."""
    folder = tmp_path / "studies"
    for name, seed, shape in [("sub1_flair", 0, (40, 48, 40)), ("sub1_t1", 1, (36, 44, 36)),
                              ("sub2_t2", 2, (40, 48, 40)), ("case2", 3, (40, 48, 40))]:  # fmt: skip
        image, _ = make_case(tmp_path / "sources", name, seed=seed, shape=shape)
        folder.mkdir(exist_ok=True)
        (folder / image.name).write_bytes(image.read_bytes())
    return folder


def _label(client, image: str, out: Path) -> nib.Nifti1Image:
    res = client.post(f"/infer/mome_plus?image={image}&output=image")
    assert res.status_code == 200, res.text
    out.write_bytes(res.content)
    return nib.load(out)


def test_a_request_segments_the_case_on_the_requested_image(cases, plus_conf, client_factory, tmp_path) -> None:
    with client_factory(cases, plus_conf) as client:
        info = client.get("/info/").json()["models"]
        assert info["mome"]["ready"] is False and info["mome_plus"]["ready"] is True
        for image in ("sub1_flair", "sub1_t1", "sub2_t2"):  # each on its own grid, the case's others resampled
            seg, src = _label(client, image, tmp_path / f"{image}_seg.nii.gz"), nib.load(cases / f"{image}.nii.gz")
            assert seg.shape == src.shape and np.allclose(seg.affine, src.affine, atol=1e-4)
            assert set(np.unique(np.asarray(seg.dataobj))) <= {0, 1}
        res = client.post("/infer/mome_plus?image=sub1_t1&output=json")
        assert res.status_code == 200, res.text
        assert res.json()["case"] == {"name": "sub1", "T1": "sub1_t1", "FLAIR": "sub1_flair"}
        res = client.post("/infer/mome_plus?image=sub2_t2&output=json")
        assert res.json()["case"] == {"name": "sub2", "T2": "sub2_t2"}  # a case of one image: that sequence

        res = client.post("/infer/mome_plus?image=case2")
        assert res.status_code == 422 and "cannot tell which sequence image case2 is" in res.json()["detail"]
        info = json.dumps({"modality": "t1ce", "subject": "sub2"})
        res = client.put("/datastore/image/info?image=case2", data={"info": info})
        assert res.status_code == 200, res.text
        res = client.post("/infer/mome_plus?image=case2&output=json")
        assert res.status_code == 200, res.text
        assert res.json()["case"] == {"name": "sub2", "T1c": "case2", "T2": "sub2_t2"}

        with (cases / "sub1_flair.nii.gz").open("rb") as f:  # a second FLAIR of sub1
            res = client.put("/datastore/image?image=sub1_t2f", files={"file": ("sub1_t2f.nii.gz", f)})
        assert res.status_code == 200, res.text
        res = client.post("/infer/mome_plus?image=sub1_t1")
        assert res.status_code == 422, res.text
        assert "two FLAIR images in the datastore, sub1_flair and sub1_t2f" in res.json()["detail"]
        t1 = nib.load(cases / "sub1_t1.nii.gz")  # sub4: a T1 far from its FLAIR
        shifted = t1.affine.copy()
        shifted[0, 3] += 500
        nib.save(nib.Nifti1Image(np.asarray(t1.dataobj), shifted), tmp_path / "sub4_t1.nii.gz")
        for name, source in (("sub4_t1", tmp_path / "sub4_t1.nii.gz"), ("sub4_flair", cases / "sub1_flair.nii.gz")):
            with source.open("rb") as f:
                res = client.put(f"/datastore/image?image={name}", files={"file": (f"{name}.nii.gz", f)})
            assert res.status_code == 200, res.text
        res = client.post("/infer/mome_plus?image=sub4_flair")
        assert res.status_code == 422, res.text
        assert "does not overlap" in res.json()["detail"]
        assert client.get("/info/").status_code == 200  # still serving


def test_weights_of_the_other_model_are_refused_not_served(cases, plus_conf, client_factory, tmp_path) -> None:
    torch.manual_seed(0)
    wrong = tmp_path / "mome.pt"
    torch.save({"model": MoME("small").state_dict(), KEY: {"network": "MoME", "preset": "small"}}, wrong)
    with client_factory(cases, {**plus_conf, "weights_plus": str(wrong)}) as client:
        model = client.get("/info/").json()["models"]["mome_plus"]
        assert model["ready"] is False and "holds MoME weights, not MoMEPlus" in model["message"]
        res = client.post("/infer/mome_plus?image=sub1_flair")
        assert res.status_code == 409 and "give them as --conf weights" in res.json()["detail"]
