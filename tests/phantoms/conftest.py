"""One phantom tree (every profile, 1 subject, 2 mm, with QA) shared by all phantom tests: generating is slow."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from phantoms import generate


@pytest.fixture(scope="session")
def phantom_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("phantoms") / "tree"
    generate(out, subjects=1, spacing=2, seed=0, qa=True, workers=2)
    return out


@pytest.fixture(scope="session")
def manifest(phantom_tree: Path) -> dict:
    return json.loads((phantom_tree / "phantom_manifest.json").read_text())


@pytest.fixture(scope="session")
def qa_report(phantom_tree: Path) -> dict:
    return json.loads((phantom_tree / "qa" / "qa_report.json").read_text())
