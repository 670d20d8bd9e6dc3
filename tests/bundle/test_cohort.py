"""Cohort inference with the released weights: a row per scan, bad files as rows, resume after a kill, and torchrun
sharding over two Gloo processes. Scans are phantom crops (64x64x48 at 2 mm), so each takes a second or two."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from demo.commands import BUNDLE, config_files
from scripts.metrics import components

from .test_workflows import _chain, workflow


@pytest.fixture(scope="module")
def scans(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Four crops of different phantoms around their lesions, each with a unique name."""
    folder = tmp_path_factory.mktemp("scans")
    picks = [
        sorted(phantom_root.rglob("BraTS-MET-*-t2f.nii.gz"))[0],
        sorted(phantom_root.rglob("*_dwi.nii.gz"))[0],
        sorted(phantom_root.rglob("BraTS20*_flair.nii.gz"))[0],
        sorted(phantom_root.rglob("FLAIR_preprocessed.nii.gz"))[0],
    ]
    out = []
    for n, path in enumerate(picks):
        img = nib.load(path)
        c = [s // 2 for s in img.shape[:3]]
        crop = img.slicer[c[0] - 32 : c[0] + 32, c[1] - 32 : c[1] + 32, max(0, c[2] - 24) : c[2] + 24]
        target = folder / f"scan{n}_{path.name}"
        nib.save(crop, target)
        out.append(target)
    return out


def _rows(folder: Path) -> list[dict]:
    with (folder / "cohort.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def test_cohort_rows_reports_and_bad_files(scans: list[Path], tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for s in scans[:2]:
        (inputs / s.name).symlink_to(s)
    (inputs / "corrupt.nii.gz").write_bytes(b"\x1f\x8b not really gzip")
    four_d = nib.load(scans[0])
    nib.save(nib.Nifti1Image(np.stack([four_d.get_fdata()] * 2, -1), four_d.affine), inputs / "series4d.nii.gz")
    (inputs / "notes.txt").write_text("not an image")
    out = tmp_path / "out"
    wf = workflow(["inference.json"], workflow_type="infer", cpu=False, input=str(inputs), output_dir=str(out),
                  uncertainty=True)  # fmt: skip
    wf.initialize()
    with pytest.raises(Exception) as err:
        wf.run()
    assert "3 of 5 scans failed" in _chain(err.value)
    rows = {Path(r["image"]).name: r for r in _rows(out)}
    assert len(rows) == 5
    assert rows["corrupt.nii.gz"]["status"] == "error" and "cannot be read" in rows["corrupt.nii.gz"]["error"]
    assert rows["series4d.nii.gz"]["status"] == "error" and "4D" in rows["series4d.nii.gz"]["error"]
    assert "not an image file" in rows["notes.txt"]["error"]
    for scan in scans[:2]:
        row = rows[scan.name]
        assert row["status"] == "ok", row
        report = json.loads(Path(row["report"]).read_text())
        src, seg = nib.load(scan), nib.load(row["prediction"])
        unc = nib.load(out / scan.name.replace(".nii.gz", "_uncertainty.nii.gz"))
        for img in (seg, unc):  # both on the input grid
            assert img.shape == src.shape
            np.testing.assert_allclose(img.affine, src.affine, atol=1e-4)
        mask = np.asarray(seg.dataobj) > 0
        assert report["n_lesions"] == components(mask)[1] == int(row["n_lesions"])
        voxel_ml = abs(np.linalg.det(src.affine[:3, :3])) / 1000  # ISLES DWI has 2x2x4 mm voxels
        assert report["total_volume_ml"] == pytest.approx(mask.sum() * voxel_ml)
        assert sum(report["gate_share"].values()) == pytest.approx(1, abs=1e-3)
        assert report["relied_on"] in report["gate_share"]
        u = np.asarray(unc.dataobj)
        assert u.min() >= 0 and u.max() <= np.log(5) + 1e-4 and report["uncertainty"] > 0
        for lesion in report["lesions"]:  # centroids lie inside the image
            ijk = np.linalg.inv(src.affine) @ [*lesion["centroid_world_mm"], 1]
            assert all(-0.5 <= v <= s - 0.5 for v, s in zip(ijk[:3], src.shape, strict=True))
    summary = json.loads((out / "cohort_summary.json").read_text())
    assert summary["status"] == {"ok": 2, "error": 3}
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # no temporary file left


def _command(inputs: Path, out: Path) -> list[str]:
    files = [str(BUNDLE / f) for f in config_files(["inference.json"], cpu=False)]
    return [sys.executable, "-m", "monai.bundle", "run", "--config_file", json.dumps(files), "--bundle_root",
            str(BUNDLE), "--input", str(inputs), "--output_dir", str(out)]  # fmt: skip


def test_cohort_resumes_after_a_kill(scans: list[Path], tmp_path: Path) -> None:
    inputs = tmp_path / "in"
    inputs.mkdir()
    for s in scans:
        (inputs / s.name).symlink_to(s)
    out = tmp_path / "out"
    env = {**os.environ, "OMP_NUM_THREADS": "2"}
    proc = subprocess.Popen(_command(inputs, out), cwd=BUNDLE, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.time() + 150
    while len(list(out.glob("*_report.json"))) < 2 and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {p.name: p.stat().st_mtime_ns for p in out.glob("*_report.json")}
    assert 2 <= len(before) < 4, f"kill came too late to test a resume ({len(before)} reports)"
    assert not (out / "cohort.csv").exists()
    result = subprocess.run(_command(inputs, out), cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert (result.stdout + result.stderr).count("done before, skipped") == len(before)
    after = {p.name: p.stat().st_mtime_ns for p in out.glob("*_report.json")}
    assert {k: after[k] for k in before} == before  # nothing recomputed
    rows = _rows(out)
    assert [Path(r["image"]).name for r in rows] == sorted(s.name for s in scans)
    assert {r["status"] for r in rows} == {"ok"}
    assert all(Path(r["prediction"]).is_file() for r in rows)
    assert not [p for p in out.iterdir() if p.name.startswith(".")]  # the killed scan's temporary file is gone


@pytest.mark.slow
def test_cohort_torchrun_two_gloo_processes(scans: list[Path], tmp_path: Path) -> None:
    table = tmp_path / "cohort_in.csv"
    sequences = ["FLAIR", "DWI", "FLAIR", "FLAIR"]
    table.write_text("image,modality\n" + "".join(f"{s},{m}\n" for s, m in zip(scans, sequences, strict=True)))
    out = tmp_path / "out"
    torchrun = Path(sys.executable).with_name("torchrun")
    cmd = [str(torchrun), "--standalone", "--nnodes=1", "--nproc_per_node=2", *_command(table, out)[1:]]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(cmd, cwd=BUNDLE, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = _rows(out)
    assert [r["image"] for r in rows] == [str(s) for s in scans]  # one row per scan, in input order
    assert [r["sequence"] for r in rows] == sequences
    ranks = [json.loads(Path(r["report"]).read_text())["rank"] for r in rows]
    assert ranks == [0, 1, 0, 1]  # every scan once, each rank its share
    assert {r["status"] for r in rows} == {"ok"}
