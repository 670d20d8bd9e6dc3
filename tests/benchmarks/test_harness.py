"""Every benchmark runs end to end at toy size and the report is written (the full run is `make benchmark`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_benchmark_harness_smoke(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "benchmarks/run_all.py", "--smoke", "--out", str(tmp_path)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    results = json.loads((tmp_path / "results.json").read_text())
    assert set(results) >= {"network", "fidelity", "inference", "preprocessing", "phantoms", "monailabel"}
    assert {c["kind"] for c in results["network"]["cases"]} == {"eval_forward", "train_step"}
    assert results["network"]["keep_freed_memory"] is True  # as in the bundle's training
    assert all(len(c["mome"]["sys_s"]) == len(c["mome"]["times_s"]) for c in results["network"]["cases"])
    parts = {"network", "fidelity", "inference", "preprocessing", "phantoms", "monailabel"}
    assert set(results["wall_seconds"]) == parts
    assert len({w["run"] for w in results["wall_seconds"].values()}) == 1  # one invocation ran every part
    assert set(results["fidelity"]["summary"]) == {"mome", "mome_no_curriculum", "universal_unet", "task_unets"}
    assert results["fidelity"]["summary"]["mome"]["unseen"] is not None  # the held-out dataset was evaluated
    assert (
        results["inference"]["variants"]["reference"]["seconds"]
        > results["inference"]["variants"]["default"]["seconds"]
    )
    report = (tmp_path / "BENCHMARKS.md").read_text()
    for heading in ("MoME overhead", "Full-volume inference", "Fidelity", "Preprocessing", "MONAI Label"):
        assert heading in report
    assert "Smoke run" in report
    assert "| **all** |" in report  # the wall-time table sums every part
    assert "one uninterrupted run started" in report
