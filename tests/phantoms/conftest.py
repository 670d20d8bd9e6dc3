"""The phantom tests read the one tree the whole test run shares (``phantom_root``: every profile, 2 subjects, 2 mm,
with QA), generated once per test run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def phantom_tree(phantom_root: Path) -> Path:
    return phantom_root


@pytest.fixture(scope="session")
def manifest(phantom_tree: Path) -> dict:
    return json.loads((phantom_tree / "phantom_manifest.json").read_text())


@pytest.fixture(scope="session")
def qa_report(phantom_tree: Path) -> dict:
    return json.loads((phantom_tree / "qa" / "qa_report.json").read_text())
