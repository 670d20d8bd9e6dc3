"""Shared test fixtures. The bundle's code is importable as ``scripts`` (pyproject adds ``bundle`` to the path)."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("MONAI_LABEL_AUTO_UPDATE_SCORING", "false")


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)
