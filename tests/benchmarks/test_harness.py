"""Every benchmark part runs end to end at toy size, each in its own test, and the report covers them (the full run
is `make benchmark`). Numbers from a smoke run mean nothing; only their presence is checked. The parts are split
over this file and ``test_harness_servers.py`` so that the test suite's two workers share them; the inference part
stays with the fidelity part, whose trained model it compares pipelines with."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from benchmarks import run_all

PARTS = ("fidelity", "inference", "preprocessing", "phantoms")  #: in this order: inference uses fidelity's model
#: the report's section of each part
HEADINGS = {
    "network": "## MoME overhead",
    "training": "## CPU training throughput",
    "released": "## The released model on fresh phantoms",
    "fidelity": "## Fidelity",
    "inference": "## Full-volume inference",
    "preprocessing": "## Preprocessing",
    "phantoms": "## Phantom generation",
    "monailabel": "## MONAI Label server",
}


@pytest.fixture(scope="module")
def smoke_out(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("benchmarks")


def _run_all(out: Path, *args: str) -> None:
    """``benchmarks/run_all.py --smoke`` in this process (the parts run in-process at smoke size)."""
    try:
        run_all.main(["--smoke", "--out", str(out), *args])
    except BaseException:
        print("".join(p.read_text()[-3000:] for p in out.glob("*.log")))  # the parts' output, shown on failure
        raise


def _checks(part: str, r: dict) -> None:
    assert r["smoke"] is True and "cpu_capability" in r["machine"]
    if part == "network":
        assert {c["kind"] for c in r["cases"]} == {"eval_forward", "train_step"}
        assert r["keep_freed_memory"] is True  # as in the bundle's training
        assert all(len(c["mome"]["sys_s"]) == len(c["mome"]["times_s"]) for c in r["cases"])
    elif part == "fidelity":
        assert set(r["summary"]) == {"mome", "mome_no_curriculum", "universal_unet", "task_unets"}
        assert r["summary"]["mome"]["unseen"] is not None  # the held-out dataset was evaluated
        assert r["summary"]["mome"]["seen"]["gate_usage"]["by_input_modality"]
    elif part == "inference":
        assert {"default", "reference", "unet"} <= set(r["variants"])
        assert ("bf16" in r["variants"]) == r["machine"]["native_bf16"]  # only measured where it is native
        assert set(r["dice"]["mean_dice"]) >= {"default", "reference"}
    elif part == "training":
        after = r["results"]["after (+ no data workers)"]
        assert {"before", "after (+ no data workers)"} <= set(r["results"])
        assert after["seconds_per_iteration"] > 0 and 0 <= after["data_loading_share"] < 1
    elif part == "released":
        assert r["task_dice"] and 0 <= r["average"]["task_level"] <= 1 and r["n_cases"] > 0
        assert r["lesion_wise"]["average"] and r["by_size_bin"]
        assert r["report_overhead"]["median_ratio"] > 0 and len(r["report_overhead"]["uncertainty"]) == 1
    elif part == "monailabel":
        assert r["infer_median_s"] > 0 and r["train_turnaround_s"] > 0


def run_and_check(part: str, out: Path) -> None:
    _run_all(out, "--only", part)
    _checks(part, json.loads((out / f"{part}.json").read_text()))


def check_report(out: Path, parts: tuple[str, ...]) -> None:
    """The report rebuilt from the parts' smoke JSON: every part's section, the wall-time table. Parts not run yet
    (this test run alone) are run first."""
    if missing := [p for p in parts if not (out / f"{p}.json").is_file()]:
        _run_all(out, "--only", *missing)
    _run_all(out, "--report")
    results = json.loads((out / "results.json").read_text())
    assert set(results) >= set(parts) and set(results["wall_seconds"]) == set(parts)
    report = (out / "BENCHMARKS.md").read_text()
    assert [p for p in parts if HEADINGS[p] not in report] == []
    assert "Smoke run" in report
    assert "| **all** |" in report  # the wall-time table sums every part
    assert "they come from separate runs" in report  # each part was its own invocation here


@pytest.mark.slow
@pytest.mark.parametrize("part", PARTS)
def test_part_runs_at_toy_size(part: str, smoke_out: Path) -> None:
    run_and_check(part, smoke_out)


@pytest.mark.slow
def test_report_covers_every_part(smoke_out: Path) -> None:
    check_report(smoke_out, PARTS)
