"""Shared test fixtures. The bundle's code is importable as ``scripts`` (pyproject adds ``bundle`` to the path)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MONAI_LABEL_AUTO_UPDATE_SCORING", "false")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory):
    """All six phantom datasets, two subjects each, 2 mm (generated once per test session)."""
    from phantoms import generate

    root = tmp_path_factory.mktemp("phantoms") / "data"
    generate(root, subjects=2, spacing=2, seed=0)
    return root
