"""The contrast QA: physics reproduces the design table, every profile passes, and a broken contrast is caught."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phantoms import PROFILES, synthesize
from phantoms.qa import check_subject, qualitative_checks, ratio_checks, table_check

# Compartments whose ratio must actually be measured (not skipped for lack of pure voxels) in the seed-0 tree.
MUST_CHECK = {
    "brats2021": {"GM", "CSF", "glioma_et", "glioma_necrosis", "glioma_oedema"},
    "brats_mets": {"GM", "CSF", "met_et", "met_oedema"},
    "atlas2": {"GM", "CSF", "stroke_chronic_core"},
    "isles2022": {"GM", "CSF", "stroke_hyperacute"},
    "msseg2016": {"GM", "CSF", "ms_chronic"},
    "wmh2017": {"GM", "CSF", "wmh"},
}


def test_signal_equations_reproduce_the_design_table() -> None:
    result = table_check()
    assert result["passed"], [r for r in result["rows"] if not r["ok"]]
    assert result["worst_abs_error"] <= 0.03
    assert len(result["rows"]) == 16 * 9


@pytest.mark.parametrize("profile", list(PROFILES))
def test_ratio_qa_passes_for_every_profile_at_2mm(qa_report: dict, profile: str) -> None:
    assert qa_report["table_check"]["passed"]
    subjects = [s for s in qa_report["subjects"] if s["profile"] == profile]
    assert len(subjects) == 2  # the shared tree: two subjects per profile, both checked
    for subject in subjects:
        failed = [r for r in subject["ratios"] if r["status"] == "fail"]
        assert not failed, failed
        bad = {k: v for k, v in subject["qualitative"].items() if not v["ok"]}
        assert not bad, bad
        assert subject["passed"]
    checked = {r["compartment"] for s in subjects for r in s["ratios"] if r["status"] == "pass"}
    assert MUST_CHECK[profile] <= checked, MUST_CHECK[profile] - checked


def test_qualitative_checks_cover_the_promised_signs(qa_report: dict) -> None:
    by_profile = {s["profile"]: s["qualitative"] for s in qa_report["subjects"]}
    assert by_profile["isles2022"]["stroke_bright_dwi_dark_adc"]["dwi_ratio"] > 1.2
    assert by_profile["isles2022"]["stroke_bright_dwi_dark_adc"]["adc_ratio"] < 0.8
    assert by_profile["brats2021"]["enhancing_bright_on_t1c"]["et_over_nawm"] > 1.3
    assert by_profile["brats_mets"]["enhancing_bright_on_t1c"]["et_over_nawm"] > 1.3
    for profile in ("brats2021", "isles2022", "msseg2016", "wmh2017"):
        assert by_profile[profile]["csf_dark_on_flair"]["csf_over_nawm"] < 0.35
    assert all(q["labels_non_empty"]["ok"] and q["noise_level"]["ok"] for q in by_profile.values())


def test_ratio_qa_catches_a_wrong_contrast() -> None:
    subject = synthesize("isles2022", 0, spacing=2, seed=0)
    assert check_subject(subject)["passed"]
    # Grey matter 60 % too bright on FLAIR: what a wrong T1 or a swapped compartment would do.
    subject.clean["FLAIR"] = subject.clean["FLAIR"] * (1.0 + 0.6 * subject.fractions["GM"])
    rows = {(r["modality"], r["compartment"]): r for r in ratio_checks(subject)}
    assert rows[("FLAIR", "GM")]["status"] == "fail"
    assert rows[("DWI", "GM")]["status"] == "pass"
    # Acute infarct no longer dark on ADC.
    adc = subject.images["ADC"]
    subject.images["ADC"] = np.where(subject.label > 0, 1.5 * np.median(adc[adc > 0]), adc)
    assert not qualitative_checks(subject)["stroke_bright_dwi_dark_adc"]["ok"]


def test_montage_per_profile(phantom_tree: Path) -> None:
    for profile in PROFILES:
        png = phantom_tree / "qa" / f"{profile}_montage.png"
        assert png.is_file() and png.stat().st_size > 20_000
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
