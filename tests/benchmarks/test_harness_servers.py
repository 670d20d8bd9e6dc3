"""The other half of the benchmark smoke runs (see ``test_harness.py``): network, training, the released model and
the MONAI Label server."""

from __future__ import annotations

from pathlib import Path

import pytest

from .test_harness import check_report, run_and_check, smoke_out  # noqa: F401  (the fixture, for this module)

PARTS = ("network", "training", "released", "monailabel")


@pytest.mark.slow
@pytest.mark.parametrize("part", PARTS)
def test_part_runs_at_toy_size(part: str, smoke_out: Path) -> None:  # noqa: F811
    run_and_check(part, smoke_out)


@pytest.mark.slow
def test_report_covers_every_part(smoke_out: Path) -> None:  # noqa: F811
    check_report(smoke_out, PARTS)
