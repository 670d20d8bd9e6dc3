"""Shared test fixtures. The bundle's code is importable as ``scripts`` (pyproject adds ``bundle`` to the path)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("MONAI_LABEL_AUTO_UPDATE_SCORING", "false")

if (workers := int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))) > 1:
    # `make test` runs the suite in pytest-xdist workers on the same cores: each worker gets its share of threads,
    # and so do the servers and command lines its tests start (oversubscribed OpenMP threads spin, not work)
    threads = max(1, len(os.sched_getaffinity(0)) // workers)  # the cores this process may use
    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


BUNDLE = Path(__file__).resolve().parents[1] / "bundle"


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _bundle_files() -> dict[str, tuple[int, int]]:
    files = (p for p in BUNDLE.rglob("*") if p.is_file() and "__pycache__" not in p.parts)
    return {str(p.relative_to(BUNDLE)): (p.stat().st_mtime_ns, p.stat().st_size) for p in files}


@pytest.fixture(scope="session", autouse=True)
def _bundle_stays_as_shipped():
    """No test, workflow or server writes into the bundle (what a Model Zoo user downloads)."""
    before = _bundle_files()
    yield
    after = _bundle_files()
    changed = sorted(k for k in set(before) | set(after) if before.get(k) != after.get(k))
    assert not changed, f"files written into the bundle during the tests: {changed[:10]}"


@pytest.fixture(scope="session")
def phantom_root(tmp_path_factory: pytest.TempPathFactory):
    """All six phantom datasets, two subjects each, 2 mm, with QA: the one phantom tree of a test run (built once
    and shared by the pytest-xdist workers; tests only read it)."""
    from filelock import FileLock

    from phantoms import generate

    if not os.environ.get("PYTEST_XDIST_WORKER"):
        root = tmp_path_factory.mktemp("phantoms") / "data"
        generate(root, subjects=2, spacing=2, seed=0, qa=True, workers=2)
        return root
    shared = tmp_path_factory.getbasetemp().parent / "phantoms"  # the run's folder, above every worker's own
    with FileLock(str(shared) + ".lock"):
        if not (shared / "data" / "phantom_manifest.json").is_file():  # generate() renames a finished tree into place
            generate(shared / "data", subjects=2, spacing=2, seed=0, qa=True, workers=2)
    return shared / "data"
