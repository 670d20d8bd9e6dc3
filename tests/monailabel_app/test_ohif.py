"""OHIF, as MONAI Label serves it at ``/ohif/``, in a real headless Chromium (Debian's, driven by playwright):
the study list comes from Orthanc through MONAI Label's DICOMweb proxy, the study opens in the MONAI Label mode,
the panel lists model ``mome``, and "Run" under Auto-Segmentation segments the series: the server answers, a
DICOM SEG lands in the PACS, and the overlay is drawn. Screenshots go to ``test-artifacts/ohif/``.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import pytest

from demo.commands import cpu_conf
from demo.studies import phantom_studies
from monailabel_app.local import LocalServer
from pacs import Orthanc, upload, write_series
from pacs.orthanc import DICOMWEB_PLUGIN

ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts" / "ohif"
CHROMIUM = shutil.which("chromium")

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shutil.which("Orthanc") is None or not DICOMWEB_PLUGIN.is_file() or CHROMIUM is None,
        reason="needs Debian's orthanc, orthanc-dicomweb and chromium (.ci/run installs them)",
    ),
]


def _wait(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def _overlay_pixels(screenshot: Path) -> int:
    """Pixels of the viewports (not the panels) in the overlay's colour: OHIF draws segment 1 in green."""
    import numpy as np
    from PIL import Image

    rgb = np.asarray(Image.open(screenshot).convert("RGB")).astype(int)
    viewports = rgb[60:-60, 290:1100]
    r, g, b = viewports[..., 0], viewports[..., 1], viewports[..., 2]
    return int(((g > 120) & (g > r + 60) & (g > b + 60)).sum())


def test_ohif_lists_the_study_runs_mome_and_shows_the_seg(tmp_path: Path) -> None:
    from playwright.sync_api import sync_playwright

    studies, _ = phantom_studies(tmp_path, subjects=1)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with Orthanc(tmp_path / "pacs") as pacs:
        for number, sequence in enumerate(("flair", "t2"), start=1):
            files = write_series(
                studies / f"BraTS2021_00000_{sequence}.nii.gz",
                tmp_path / sequence,
                sequence.upper(),
                "BraTS2021_00000",
                number,
            )
            upload(pacs.dicomweb, files)
        (study,) = pacs.get("/studies")
        study_uid = pacs.get(f"/studies/{study}")["MainDicomTags"]["StudyInstanceUID"]
        env = {"MONAI_LABEL_DICOMWEB_CACHE_PATH": str(tmp_path / "cache")}
        conf = {**cpu_conf(), "model_dir": str(tmp_path / "model")}  # the released weights
        with LocalServer(tmp_path / "server", pacs.dicomweb, conf, env=env) as server, sync_playwright() as p:
            browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox", "--use-gl=swiftshader"])
            try:
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                errors: list[str] = []
                page.on("pageerror", lambda e: errors.append(str(e)))

                page.goto(f"{server.url}/ohif/", timeout=120_000)
                page.get_by_text("BraTS2021_00000").first.wait_for(timeout=120_000)  # the list, from Orthanc
                page.screenshot(path=ARTIFACTS / "study_list.png")

                page.goto(f"{server.url}/ohif/monai-label?StudyInstanceUIDs={study_uid}", timeout=120_000)
                page.get_by_text("MONAI Label").first.wait_for(timeout=120_000)
                page.get_by_text("FLAIR").first.wait_for(timeout=120_000)  # the series thumbnails
                banner = page.get_by_text("Confirm and Hide")
                if banner.count():
                    banner.click()
                server_box = page.locator("xpath=//input[contains(@value, 'http')]").first
                server_box.fill(f"{server.url}/")
                server_box.press("Enter")
                page.locator("xpath=//input[contains(@value, 'http')]/following::button[1]").first.click()
                page.locator("select", has=page.locator("option", has_text="mome")).first.wait_for(timeout=60_000)
                page.screenshot(path=ARTIFACTS / "monai_label_panel.png")

                segs_before = sum(s["MainDicomTags"].get("Modality") == "SEG" for s in pacs.series())
                page.get_by_role("button", name="Run").first.click()
                _wait(
                    lambda: sum(s["MainDicomTags"].get("Modality") == "SEG" for s in pacs.series()) > segs_before,
                    300,
                    "the SEG of the page's auto-segmentation in the PACS",
                )
                time.sleep(5)  # the page draws the returned label
                page.screenshot(path=ARTIFACTS / "auto_segmentation.png")
                assert "Infer Request: {'model': 'mome'" in server.log.read_text()
                before, after = (
                    _overlay_pixels(ARTIFACTS / "monai_label_panel.png"),
                    _overlay_pixels(ARTIFACTS / "auto_segmentation.png"),
                )
                print(f"overlay pixels: {before} before, {after} after the run")
                assert after > before + 2000  # the lesion label is drawn over the images
                assert not errors, errors  # no uncaught error in the page (the panel crashed on a dict of labels)
            finally:
                browser.close()
            assert server.get("/info/")[0] == 200
