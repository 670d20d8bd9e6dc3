"""One real server: ``monailabel start_server`` on 127.0.0.1, driven by MONAI Label's own ``MONAILabelClient``.

info -> next sample -> infer -> save label -> train 1 epoch -> the served model changed (weights file and tensors,
/info version, the version the next label says it came from) -> the uncertainty strategy returns an unlabelled
image. The server is stopped by its PID. Data: 2 mm BraTS-like phantoms; weights: random small preset.
"""

from __future__ import annotations

import hashlib
import threading
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monailabel.client import MONAILabelClient

from demo.commands import cpu_conf
from demo.studies import phantom_studies
from monailabel_app.local import LocalServer, wait_for_training
from scripts.metrics import components
from scripts.mome import MoME


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.slow
def test_annotation_loop_against_a_real_server(tmp_path: Path) -> None:
    studies, labels = phantom_studies(tmp_path, subjects=1)
    studies_kept = {"BraTS2021_00000_flair", "BraTS2021_00000_t2", "BraTS2021_00000_t1ce"}
    for image in studies.glob("*.nii.gz"):
        if image.name[: -len(".nii.gz")] not in studies_kept:
            image.unlink()
    weights = tmp_path / "model" / "model.pt"
    weights.parent.mkdir()
    torch.save({"model": MoME("small").state_dict()}, weights)  # random small-preset weights
    conf = {**cpu_conf(), "patch_size": "32", "epochs": "1"}
    conf.update(model_dir=str(weights.parent), weights="none")
    server = LocalServer(tmp_path, studies, conf)
    server.start()
    try:
        client = MONAILabelClient(server.url, tmpdir=str(tmp_path))
        info = client.info()
        assert info["models"]["mome"]["ready"] is True and info["models"]["mome"]["weights"]["preset"] == "small"
        assert info["labels"] == ["lesion"] and info["models"]["mome"]["labels"] == {"lesion": 1}
        version = info["models"]["mome"]["weights"]["version"]

        sample = client.next_sample("first", {})
        assert sample["id"] == "BraTS2021_00000_flair"
        image_id = sample["id"]

        before_file, before_result = client.infer("mome", image_id, {})
        assert before_result["weights_version"] == version
        before = np.asarray(nib.load(before_file).dataobj)
        image = nib.load(studies / f"{image_id}.nii.gz")
        assert before.shape == image.shape and np.allclose(nib.load(before_file).affine, image.affine, atol=1e-4)
        report = before_result["report"]  # the per-scan report comes with the label: what a viewer user reads
        assert report["n_lesions"] == components(before > 0)[1]
        voxel_ml = abs(np.linalg.det(image.affine[:3, :3])) / 1000
        assert report["total_volume_ml"] == pytest.approx((before > 0).sum() * voxel_ml)
        assert sum(report["gate_share"].values()) == pytest.approx(1, abs=1e-3) and report["uncertainty"] >= 0
        assert not list((tmp_path / "model").rglob("*_report.json"))  # into the answer, not into a file

        # the server answers while it infers: /info/ comes back before the inference started before it ends
        worker = threading.Thread(target=lambda: finished.append(client.infer("mome", image_id, {})))
        finished: list = []
        worker.start()
        time.sleep(0.5)  # the inference is under way
        assert server.get("/info/")[0] == 200 and not finished
        worker.join()
        assert finished

        saved = client.save_label(image_id, str(labels[image_id]), tag="final")
        assert saved["label"] == image_id

        digest, state = _sha(weights), torch.load(weights, weights_only=True)["model"]
        client.train_start("mome", {"max_epochs": 1})
        task = wait_for_training(client, timeout=300)
        assert task["status"] == "DONE", "\n".join(task.get("details", [])) + server.tail()

        new_version = client.info()["models"]["mome"]["weights"]["version"]
        assert new_version != version
        assert _sha(weights) != digest
        trained = torch.load(weights, weights_only=True)["model"]
        assert any(not torch.equal(trained[k], state[k]) for k in state)  # a step was taken, not skipped
        after_file, after_result = client.infer("mome", image_id, {})
        assert after_result["weights_version"] == new_version  # served without a restart
        after = np.asarray(nib.load(after_file).dataobj)
        assert after.shape == before.shape and set(np.unique(after).tolist()) <= {0, 1}

        sample = client.next_sample("uncertainty", {})
        assert sample["id"] in studies_kept - {image_id}
        assert sample["mome_disagreement"] >= 0 and sample["mome_disagreement_model"] == new_version
    finally:
        server.stop()
    assert server.process is not None and server.process.poll() is not None
    log = server.log.read_text(errors="replace")
    assert "ProxyError" not in log and "Max retries exceeded" not in log  # nothing tried to download
