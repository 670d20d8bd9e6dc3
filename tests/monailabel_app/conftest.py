"""Fixtures for the MONAI Label app: tiny synthetic volumes, random small-preset weights, an in-process client.

The app's modules are the installed package ``monailabel_app.lib``. MONAI Label normally unloads and re-imports the
app's ``lib`` around every call; in one pytest process that is switched off here.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from demo.commands import cpu_conf

os.environ["MONAI_LABEL_RELOAD_APP_LIB"] = "false"
os.environ.setdefault("MONAI_LABEL_AUTO_UPDATE_SCORING", "false")

ROOT = Path(__file__).resolve().parents[2]
APP_DIR = ROOT / "monailabel_app"
BUNDLE = ROOT / "bundle"

#: The CPU overlay's knobs (one window over the whole image), training patches for the tiny volumes below.
TINY_CONF = {**cpu_conf(), "patch_size": "32", "epochs": "1"}


def write_case(folder: Path, name: str, seed: int, shape: tuple[int, int, int] = (40, 48, 40)) -> tuple[Path, Path]:
    """A 2 mm 'head': an ellipsoid of noisy tissue on a zero background with one bright spherical lesion.

    Returns the image and its lesion label, both NIfTI on the same grid.
    """
    rng = np.random.default_rng(seed)
    grid = np.stack(np.meshgrid(*(np.arange(s) - s / 2 for s in shape), indexing="ij"))
    radii = np.array([s * 0.4 for s in shape])[:, None, None, None]
    brain = ((grid / radii) ** 2).sum(0) <= 1
    centre = rng.integers(-4, 5, size=3)[:, None, None, None]
    lesion = (((grid - centre) / 4.0) ** 2).sum(0) <= 1
    image = brain * (100 + 10 * rng.standard_normal(shape)) + lesion * 80
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    affine[:3, 3] = -np.array(shape) + 1.0
    folder.mkdir(parents=True, exist_ok=True)
    image_path, label_path = folder / f"{name}.nii.gz", folder / f"{name}_label.nii.gz"
    nib.save(nib.Nifti1Image(image.astype(np.float32), affine), image_path)
    nib.save(nib.Nifti1Image(lesion.astype(np.uint8), affine), label_path)
    return image_path, label_path


@pytest.fixture(scope="session")
def small_weights(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random ``small``-preset MoME weights in the bundle's checkpoint format."""
    from scripts.mome import MoME

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("weights") / "model.pt"
    torch.save({"model": MoME("small").state_dict()}, path)
    return path


@pytest.fixture
def studies(tmp_path: Path) -> Path:
    """A datastore folder with three tiny images: two named by the sequence convention, one without."""
    folder = tmp_path / "studies"
    sources = tmp_path / "sources"
    for i, name in enumerate(("case0_flair", "case1_t1ce", "case2")):
        image, _ = write_case(sources, name, seed=i)
        folder.mkdir(exist_ok=True)
        (folder / image.name).write_bytes(image.read_bytes())
    return folder


@contextlib.contextmanager
def app_client(studies: Path, conf: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Iterator:
    """MONAI Label's FastAPI app with this app behind it, in-process (as MONAI Label's own endpoint tests do)."""
    from fastapi.testclient import TestClient
    from monailabel.config import settings
    from monailabel.interfaces.utils.app import clear_cache

    monkeypatch.setattr(settings, "MONAI_LABEL_APP_DIR", str(APP_DIR))
    monkeypatch.setattr(settings, "MONAI_LABEL_STUDIES", str(studies))
    monkeypatch.setattr(settings, "MONAI_LABEL_APP_CONF", {"models": "mome", **conf})
    monkeypatch.setattr(settings, "MONAI_LABEL_DATASTORE_AUTO_RELOAD", False)
    monkeypatch.setattr(settings, "MONAI_LABEL_AUTO_UPDATE_SCORING", False)
    clear_cache()
    from monailabel.app import app

    try:
        with TestClient(app) as client:
            yield client
    finally:
        clear_cache()


@pytest.fixture
def make_case():
    """``make_case(folder, name, seed, shape=(40, 48, 40)) -> (image, label)``, see :func:`write_case`."""
    return write_case


@pytest.fixture
def tiny_conf() -> dict[str, str]:
    return dict(TINY_CONF)


@pytest.fixture
def client_factory(monkeypatch: pytest.MonkeyPatch):
    """``with client_factory(studies, conf) as client: ...``"""
    return lambda studies, conf: app_client(studies, conf, monkeypatch)
