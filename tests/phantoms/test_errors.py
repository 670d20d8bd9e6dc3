"""Bad input fails clearly and leaves nothing behind; the CLI lists its profiles."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

import phantoms.build as build
from phantoms import PROFILES, generate

BUNDLE = Path(__file__).resolve().parents[2] / "bundle"


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "phantoms", *args], cwd=BUNDLE, capture_output=True, text=True, timeout=120
    )


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"profiles": ["brats2021", "nope"]}, "unknown profile 'nope'"),
        ({"profiles": []}, "no profile"),
        ({"subjects": 0}, "subjects must be a positive integer"),
        ({"subjects": -2}, "subjects must be a positive integer"),
        ({"spacing": 3}, "spacing must be 1 or 2"),
    ],
)
def test_bad_arguments_raise_before_writing(tmp_path: Path, kwargs: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        generate(tmp_path / "out", **({"profiles": ["atlas2"], "subjects": 1} | kwargs))
    assert _leftovers(tmp_path) == []


def test_existing_non_empty_output_is_refused_and_untouched(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not empty"):
        generate(out, profiles=["atlas2"], subjects=1)
    assert _leftovers(out) == ["keep.txt"] and _leftovers(tmp_path) == ["out"]


def test_unwritable_output_is_refused(tmp_path: Path) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(OSError, match="not a writable folder|is not a folder"):
        generate(blocker / "out", profiles=["atlas2"], subjects=1)
    with pytest.raises(FileExistsError, match="not a folder"):
        generate(blocker, profiles=["atlas2"], subjects=1)
    if os.geteuid() != 0:  # root ignores permission bits
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        try:
            with pytest.raises(PermissionError, match="not a writable folder"):
                generate(locked / "out", profiles=["atlas2"], subjects=1)
        finally:
            locked.chmod(0o700)
    assert _leftovers(tmp_path) == (["a_file", "locked"] if os.geteuid() != 0 else ["a_file"])


def test_failure_mid_run_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    real = build.write_subject

    def flaky(subject, out):
        calls.append(subject.subject_id)
        if len(calls) == 2:
            raise RuntimeError("disk full")
        return real(subject, out)

    monkeypatch.setattr(build, "write_subject", flaky)
    with pytest.raises(RuntimeError, match="disk full"):
        generate(tmp_path / "out", profiles=["atlas2"], subjects=2, workers=1)
    assert _leftovers(tmp_path) == []


def test_existing_empty_folder_is_filled(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    generate(out, profiles=["atlas2"], subjects=1, workers=1)
    assert (out / "phantom_manifest.json").is_file() and _leftovers(tmp_path) == ["out"]


def test_cli_help_lists_every_profile() -> None:
    res = _cli("--help")
    assert res.returncode == 0
    for name, profile in PROFILES.items():
        assert name in res.stdout and profile.dataset in res.stdout
    assert "--spacing" in res.stdout and "--subjects" in res.stdout and "--seed" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--profiles", "bratz"], "invalid choice: 'bratz'"),
        (["--subjects", "0"], "must be a positive integer"),
        (["--spacing", "1.5"], "must be 1 (realistic) or 2 (fast) mm"),
    ],
)
def test_cli_rejects_bad_input(tmp_path: Path, args: list[str], message: str) -> None:
    res = _cli("--out", str(tmp_path / "out"), *args)
    assert res.returncode == 2 and message in res.stderr
    assert _leftovers(tmp_path) == []


def test_cli_refuses_non_empty_output(tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    res = _cli("--out", str(tmp_path), "--profiles", "atlas2", "--subjects", "1")
    assert res.returncode == 2 and "not empty" in res.stderr
    assert _leftovers(tmp_path) == ["x"]
