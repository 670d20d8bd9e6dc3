"""The bad-input corpus against the MONAI Label server: every bad image or label upload, every id that is a path or
absurd, and an unreachable identity provider get a 4xx/503 with a message; nothing is stored, nothing is written
outside the studies folder, no uploaded temporary copy survives, and the server keeps serving.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest

from demo.commands import cpu_conf
from phantoms.corrupt import IMAGE_KINDS, LABEL_KINDS, good_case


def _make(builder, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return builder(folder)


@pytest.fixture
def uploads_dir(tmp_path: Path, monkeypatch) -> Path:
    """Where MONAI Label puts uploaded files for the request (its temporary copies), watched by the tests."""
    folder = tmp_path / "uploads"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    return folder


def _stored(studies: Path) -> tuple[list[str], dict]:
    files = sorted(str(p.relative_to(studies)) for p in studies.rglob("*") if p.is_file())
    files = [f for f in files if f not in ("datastore_v2.json", ".lock")]
    datastore = studies / "datastore_v2.json"
    return files, json.loads(datastore.read_text())["objects"] if datastore.exists() else {}


def test_the_server_refuses_every_bad_upload_and_keeps_nothing(
    studies, tmp_path, client_factory, small_weights, uploads_dir
) -> None:
    model_dir = tmp_path / "model"
    model_dir.mkdir()
    (model_dir / "model.pt").write_bytes(small_weights.read_bytes())
    conf = {**cpu_conf(), "patch_size": "32", "model_dir": str(model_dir), "weights": "none"}
    outside = tmp_path / "outside"
    outside.mkdir()
    secret, _ = good_case(outside, "secret_t1")
    with client_factory(studies, conf) as client:
        before = _stored(studies)
        refused = []
        for kind, builder in IMAGE_KINDS.items():
            path = _make(builder, tmp_path / "bad" / kind.replace(" ", "_"))
            data = path.read_bytes() if path.is_file() else b""
            refused.append((kind, client.put("/datastore/image?image=bad", files={"file": (path.name, data)})))
            refused.append((f"infer {kind}", client.post("/infer/mome", files={"file": (path.name, data)})))
        for kind, builder in LABEL_KINDS.items():
            path = _make(builder, tmp_path / "badl" / kind.replace(" ", "_"))
            files = {"label": (path.name, path.read_bytes())}
            refused.append((kind, client.put("/datastore/label?image=case0_flair&tag=final", files=files)))
        blob = (studies / "case0_flair.nii.gz").read_bytes()
        for image_id in (str(secret), "../outside/secret_t1", "x" * 5000, "case0\x00flair", ".hidden"):
            refused.append((f"infer id {image_id[:20]!r}", client.post("/infer/mome", params={"image": image_id})))
        for image_id in ("../outside/planted", str(outside / "planted"), "y" * 5000):
            res = client.put("/datastore/image", params={"image": image_id}, files={"file": ("x.nii.gz", blob)})
            refused.append((f"upload id {image_id[:20]!r}", res))
        res = client.put("/datastore/label?image=nosuch&tag=final", files={"label": ("l.nii.gz", blob)})
        refused.append(("label for an unknown image", res))
        for kind, res in refused:
            assert 400 <= res.status_code < 500, (kind, res.status_code, res.text[:300])
            assert isinstance(res.json().get("detail"), str) and res.json()["detail"], (kind, res.text[:300])
        assert _stored(studies) == before  # nothing stored, nothing outside the studies folder either
        assert sorted(p.name for p in outside.iterdir()) == ["secret_t1.nii.gz", "secret_t1_label.nii.gz"]
        assert not list(uploads_dir.glob("tmp*"))  # no refused upload's temporary copy survives
        assert client.get("/info/").status_code == 200
        assert client.post("/infer/mome?image=case0_flair&output=json").status_code == 200  # still serving


def test_an_unreachable_identity_provider_is_a_503(studies, tiny_conf, client_factory, monkeypatch) -> None:
    from monailabel.config import settings

    with client_factory(studies, tiny_conf) as client:
        monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_ENABLE", True)
        monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_REALM_URI", "http://127.0.0.1:9/realms/monailabel")
        monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_TIMEOUT", 2)
        res = client.get("/info/", headers={"Authorization": "Bearer some.token.value"})
        assert res.status_code == 503, res.text
        assert "identity provider" in res.json()["detail"] and "127.0.0.1:9" in res.json()["detail"]
        monkeypatch.setattr(settings, "MONAI_LABEL_AUTH_ENABLE", False)
        assert client.get("/info/").status_code == 200
