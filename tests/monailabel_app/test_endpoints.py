"""The app behind MONAI Label's REST API, in-process: what clients see, including every refusal."""

from __future__ import annotations

import hashlib
import json
import shutil
import socket
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

BUNDLE = Path(__file__).resolve().parents[2] / "bundle"


def _bundle_outputs() -> dict[str, tuple[int, int]]:
    """Every file where a bundle run or the stock MONAI Label tasks write (models, eval, runs, merged config)."""
    files = [p for d in ("models", "eval", "runs", "mlruns") for p in (BUNDLE / d).rglob("*") if p.is_file()]
    files += [p for p in (BUNDLE / "configs").glob("monailabel_*") if p.is_file()]
    return {str(p): (p.stat().st_mtime_ns, p.stat().st_size) for p in files}


def _datastore(studies: Path) -> dict:
    return json.loads((studies / "datastore_v2.json").read_text())["objects"]


@pytest.fixture
def ready_conf(tmp_path: Path, small_weights: Path, tiny_conf: dict[str, str]) -> dict[str, str]:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    shutil.copy(small_weights, model_dir / "model.pt")
    return {**tiny_conf, "model_dir": str(model_dir), "weights": "none"}


def test_without_weights_info_says_so_and_infer_is_409(studies, tmp_path, client_factory, tiny_conf) -> None:
    conf = {**tiny_conf, "model_dir": str(tmp_path / "model"), "weights": "none"}
    with client_factory(studies, conf) as client:
        info = client.get("/info/").json()
        model = info["models"]["mome"]
        assert model["ready"] is False
        assert "train" in model["message"].lower() and str(tmp_path / "model") in model["message"]
        assert info["labels"] == ["lesion"] and info["models"]["mome"]["labels"] == {"lesion": 1}
        assert set(info["strategies"]) == {"random", "first", "uncertainty"}
        assert "expert_disagreement" in info["scoring"]

        res = client.post("/infer/mome?image=case0_flair")
        assert res.status_code == 409, res.text
        assert "POST /train/mome" in res.json()["detail"]

        # the uncertainty strategy still hands out images, and says why it could not rank them
        res = client.post("/activelearning/uncertainty")
        assert res.status_code == 200
        assert res.json()["id"] in {"case0_flair", "case1_t1ce", "case2"} and "fallback" in res.json()


def test_infer_returns_label_on_the_image_grid(studies, ready_conf, client_factory, tmp_path, make_case) -> None:
    with client_factory(studies, ready_conf) as client:
        model = client.get("/info/").json()["models"]["mome"]
        assert model["ready"] is True and model["weights"]["preset"] == "small"  # read from the weights
        res = client.post("/infer/mome?image=case0_flair&output=image")
        assert res.status_code == 200, res.text
        out = tmp_path / "pred.nii.gz"
        out.write_bytes(res.content)
        pred, image = nib.load(out), nib.load(studies / "case0_flair.nii.gz")
        assert pred.shape == image.shape
        assert np.allclose(pred.affine, image.affine, atol=1e-4)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1}

        # an uploaded file (not in the datastore) is segmented too
        upload, _ = make_case(tmp_path / "upload", "other_t2", seed=7, shape=(36, 44, 36))
        with upload.open("rb") as f:
            res = client.post("/infer/mome?output=image", files={"file": ("other_t2.nii.gz", f)})
        assert res.status_code == 200, res.text
        out.write_bytes(res.content)
        assert nib.load(out).shape == (36, 44, 36)


def test_label_follows_the_image_orientation(studies, ready_conf, client_factory, tmp_path) -> None:
    """The same physical image stored flipped (LPS-like axis) gets the same physical label."""
    ras = nib.load(studies / "case0_flair.nii.gz")
    data = np.asarray(ras.dataobj)
    affine = ras.affine.copy()
    affine[:3, 3] += affine[:3, 0] * (data.shape[0] - 1)  # voxel i of the flipped image is voxel n-1-i
    affine[:3, 0] *= -1
    nib.save(nib.Nifti1Image(data[::-1].copy(), affine), studies / "case0_flipped.nii.gz")
    with client_factory(studies, ready_conf) as client:
        preds = {}
        for name in ("case0_flair", "case0_flipped"):
            res = client.post(f"/infer/mome?image={name}&output=image")
            assert res.status_code == 200, res.text
            (tmp_path / f"{name}.nii.gz").write_bytes(res.content)
            preds[name] = nib.load(tmp_path / f"{name}.nii.gz")
    assert np.allclose(preds["case0_flipped"].affine, affine, atol=1e-4)
    a, b = np.asarray(preds["case0_flair"].dataobj), np.asarray(preds["case0_flipped"].dataobj)
    assert a.any() and np.array_equal(b, a[::-1])


def test_bad_input_is_refused_with_a_message_and_the_server_keeps_serving(
    studies, ready_conf, client_factory, tmp_path, make_case
) -> None:
    corrupt = tmp_path / "corrupt.nii.gz"
    good = (studies / "case0_flair.nii.gz").read_bytes()
    corrupt.write_bytes(good[: len(good) // 3])  # a truncated upload
    _, wrong_label = make_case(tmp_path / "wrong", "wrong", seed=3, shape=(30, 30, 30))
    four_d = tmp_path / "brats4d.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((20, 20, 20, 4), np.float32), np.eye(4)), four_d)
    _, good_label = make_case(tmp_path / "good", "good", seed=0)

    with client_factory(studies, ready_conf) as client:
        before = _datastore(studies)
        checks = [
            (client.post("/infer/mome?image=no_such_image"), 404, "not in the datastore"),
            (client.post("/infer/nope?image=case0_flair"), 404, "unknown model"),
            (client.post("/activelearning/nope"), 404, "unknown strategy"),
            (client.post("/train/nope", json={}), 404, "unknown model"),
            (client.post("/scoring/nope?run_sync=true"), 404, "unknown scoring method"),
        ]
        uploads = [  # (method, url, form field, file, status, words)
            ("post", "/infer/mome", "file", corrupt, 422, "cannot be read as an image"),
            ("put", "/datastore/image?image=corrupt", "file", corrupt, 422, "cannot be read as an image"),
            ("put", "/datastore/image?image=brats4d", "file", four_d, 422, "multi-sequence file into one file per"),
            ("put", "/datastore/label?image=case0_flair&tag=final", "label", wrong_label, 422, "does not match the"),
            ("put", "/datastore/label?image=case0_flair&tag=final", "label", corrupt, 422, "cannot be read as an"),
            ("put", "/datastore/label?image=no_such_image&tag=final", "label", good_label, 404, "not in the datastore"),
        ]
        for method, url, field, path, status, words in uploads:
            with path.open("rb") as f:
                res = getattr(client, method)(url, files={field: (path.name, f)})
            checks.append((res, status, words))
        res = client.put("/datastore/image/info?image=case2", data={"info": json.dumps({"modality": "flare"})})
        checks.append((res, 422, "unknown modality"))

        for res, status, words in checks:
            assert res.status_code == status, (res.request.url, res.text)
            assert words in res.json()["detail"], res.json()

        # nothing was stored for any refused upload
        assert _datastore(studies) == before
        assert not list((studies / "labels" / "final").iterdir())
        assert sorted(p.name for p in studies.glob("*.nii.gz")) == [
            "case0_flair.nii.gz",
            "case1_t1ce.nii.gz",
            "case2.nii.gz",
        ]

        # ... and the server still serves
        assert client.get("/info/").status_code == 200
        with good_label.open("rb") as f:
            res = client.put("/datastore/label?image=case0_flair&tag=final", files={"label": ("l.nii.gz", f)})
        assert res.status_code == 200, res.text
        assert client.post("/infer/mome?image=case1_t1ce&output=json").status_code == 200


def test_upload_stores_the_canonical_modality(studies, ready_conf, client_factory, tmp_path, make_case) -> None:
    image, _ = make_case(tmp_path / "up", "scan", seed=5)
    with client_factory(studies, ready_conf) as client:
        with image.open("rb") as f:
            res = client.put(
                "/datastore/image?image=scan",
                files={"file": ("scan.nii.gz", f)},
                data={"params": json.dumps({"modality": "t2f"})},
            )
        assert res.status_code == 200, res.text
        assert client.get("/datastore/image/info?image=scan").json()["modality"] == "FLAIR"


def test_fine_tuning_in_process_writes_only_the_app_model_folder(
    studies, ready_conf, client_factory, tmp_path, make_case
) -> None:
    served = Path(ready_conf["model_dir"]) / "model.pt"
    digest = hashlib.sha256(served.read_bytes()).hexdigest()
    bundle_before = _bundle_outputs()
    labels = {}
    for i, name in enumerate(("case0_flair", "case2")):
        _, labels[name] = make_case(tmp_path / "labels", name, seed=i)
    with client_factory(studies, ready_conf) as client:
        res = client.post("/train/mome?run_sync=true", json={"max_epochs": 1})
        assert res.status_code == 409 and "no image" in res.json()["detail"]  # nothing labelled yet

        for name, label in labels.items():
            with label.open("rb") as f:
                res = client.put(f"/datastore/label?image={name}&tag=final", files={"label": ("l.nii.gz", f)})
            assert res.status_code == 200, res.text
        version = client.get("/info/").json()["models"]["mome"]["weights"]["version"]
        res = client.post("/train/mome?run_sync=true", json={"max_epochs": 1, "pretrained": False})
        assert res.status_code == 200, res.text
        assert res.json()["model"] == str(served)
        new = client.get("/info/").json()["models"]["mome"]["weights"]
        assert new["version"] != version and new["preset"] == "small"
    assert hashlib.sha256(served.read_bytes()).hexdigest() != digest
    assert (served.parent / "train_state.pt").is_file()
    assert _bundle_outputs() == bundle_before  # nothing written into the bundle


def test_starts_and_segments_with_the_network_blocked(studies, ready_conf, client_factory, monkeypatch) -> None:
    real_connect = socket.socket.connect

    def loopback_only(sock: socket.socket, address) -> None:
        host = address[0] if isinstance(address, tuple) else address
        if sock.family in (socket.AF_INET, socket.AF_INET6) and host not in ("127.0.0.1", "::1", "localhost"):
            raise OSError(f"network access attempted: {address}")
        return real_connect(sock, address)

    monkeypatch.setattr(socket.socket, "connect", loopback_only)
    with client_factory(studies, ready_conf) as client:
        assert client.get("/info/").status_code == 200
        assert client.post("/infer/mome?image=case2&output=json").status_code == 200
        assert client.get("/ohif/").status_code == 200  # the bundled OHIF viewer is served locally


def test_unusable_weights_are_reported_not_fatal(studies, tmp_path, client_factory, tiny_conf) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes(b"not a checkpoint")
    with client_factory(studies, {**tiny_conf, "model_dir": str(model_dir), "weights": "none"}) as client:
        model = client.get("/info/").json()["models"]["mome"]
        assert model["ready"] is False and "unusable" in model["message"]
        res = client.post("/infer/mome?image=case2")
        assert res.status_code == 409 and "not a readable PyTorch checkpoint" in res.json()["detail"]


def test_weights_with_a_record_serve_without_knobs_and_refuse_contradicting_ones(
    studies, tmp_path, client_factory, small_weights
) -> None:
    import torch

    from scripts.record import KEY

    model_dir = tmp_path / "model"
    model_dir.mkdir()
    record = {"network": "MoME", "preset": "small", "spacing": 2.0, "register": False, "normalization": "brain"}
    state = torch.load(small_weights, weights_only=True)["model"]
    torch.save({"model": state, KEY: record}, model_dir / "model.pt")
    conf = {"model_dir": str(model_dir), "weights": "none", "patch_size": "32"}  # no preset, spacing, register
    with client_factory(studies, conf) as client:
        assert client.get("/info/").json()["models"]["mome"]["weights"]["preset"] == "small"
        res = client.post("/infer/mome?image=case0_flair&output=image")
        assert res.status_code == 200
        label = tmp_path / "label.nii.gz"
        label.write_bytes(res.content)
        assert nib.load(label).shape == nib.load(studies / "case0_flair.nii.gz").shape
    with (
        pytest.raises(ValueError, match=r"--spacing 1.0 \(the weights say 2.0\)"),
        client_factory(studies, {**conf, "spacing": "1"}),
    ):
        pass
