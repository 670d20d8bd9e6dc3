"""Write phantom datasets: validate, generate every subject into a temporary sibling folder, then rename it into
place, so a reader never sees a half-written tree and a failure leaves nothing behind.

``phantom_manifest.json`` at the top lists, per profile, every subject with its image paths (modality names from
``T1, T1c, T2, FLAIR, DWI, ADC``), label path and lesion type, so a generic converter can consume any tree without
knowing the public layouts.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import numbers
import os
import shutil
import tempfile
from collections.abc import Iterable
from pathlib import Path

from phantoms.params import QA_TOLERANCE
from phantoms.profiles import MODALITIES, PROFILES, get_profile, write_json, write_static, write_subject
from phantoms.subject import GENERATOR_VERSION, synthesize

__all__ = ["MANIFEST", "generate", "validate"]

MANIFEST = "phantom_manifest.json"


def validate(out: str | os.PathLike, profiles: Iterable[str] | None, subjects: int, spacing: float) -> list[str]:
    """Check every argument before anything is written; returns the profile names. Raises ValueError/OSError."""
    if isinstance(profiles, str):
        profiles = [profiles]
    names = list(PROFILES) if profiles is None else list(dict.fromkeys(profiles))
    if not names:
        raise ValueError("no profile given; expected one or more of " + ", ".join(PROFILES))
    for name in names:
        get_profile(name)
    if isinstance(subjects, bool) or not isinstance(subjects, numbers.Integral) or subjects < 1:
        raise ValueError(f"subjects must be a positive integer, got {subjects!r}")
    if isinstance(spacing, bool) or spacing not in (1, 2):
        raise ValueError(f"spacing must be 1 or 2 mm, got {spacing!r}")
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"output path {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        raise FileExistsError(f"output folder {out} exists and is not empty; choose a new or empty folder")
    parent = out.absolute().parent
    probe = parent
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir() or not os.access(probe, os.W_OK | os.X_OK):
        raise PermissionError(f"cannot write the output folder {out}: {probe} is not a writable folder")
    return names


def _job(args: tuple) -> dict:
    """Generate, write (and optionally check) one subject; runs in a worker process."""
    name, index, spacing, seed, root, qa = args
    subject = synthesize(name, index, spacing, seed)
    entry = write_subject(subject, Path(root))
    result = {"profile": name, "entry": entry}
    if qa:
        from phantoms.qa import check_subject

        result["qa"] = check_subject(subject)
    return result


def generate(
    out: str | os.PathLike,
    profiles: Iterable[str] | None = None,
    subjects: int = 3,
    spacing: float = 2,
    seed: int = 0,
    qa: bool = False,
    workers: int | None = None,
) -> dict:
    """Generate ``subjects`` subjects of each profile (default: all) into ``out``; returns the manifest.

    ``spacing`` is 1 (realistic) or 2 mm (fast). The same seed gives byte-identical images, labels and sidecars,
    whatever ``workers`` is. ``qa`` also writes ``qa/qa_report.json`` and one montage PNG per profile.
    """
    names = validate(out, profiles, subjects, spacing)
    out = Path(out).absolute()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        jobs = [(name, i, float(spacing), int(seed), str(tmp), qa) for name in names for i in range(int(subjects))]
        n_workers = min(workers or min(2, os.cpu_count() or 1), len(jobs))
        if n_workers > 1:
            ctx = multiprocessing.get_context("spawn")  # no fork: the caller may hold threads (torch, BLAS)
            with ctx.Pool(n_workers) as pool:
                results = pool.map(_job, jobs, chunksize=1)
        else:
            results = [_job(j) for j in jobs]

        manifest: dict = {
            "generator": {"name": "MoME phantoms", "version": GENERATOR_VERSION},
            "seed": int(seed),
            "spacing_mm": float(spacing),
            "subjects_per_profile": int(subjects),
            "modality_names": list(MODALITIES),
            "profiles": {},
        }
        for name in names:
            prof = get_profile(name)
            entries = [r["entry"] for r in results if r["profile"] == name]
            manifest["profiles"][name] = {
                "dataset": prof.dataset,
                "summary": prof.summary,
                "root": prof.root,
                "modalities": list(prof.modalities),
                "labels": {str(k): v for k, v in prof.label_names.items()},
                "lesion_types": list(prof.lesion_types),
                "skull_stripped": prof.skull_stripped,
                "dataset_files": write_static(prof, tmp, entries),
                "subjects": entries,
            }
        write_json(tmp / MANIFEST, manifest)
        if qa:
            _write_qa(tmp, manifest, [r["qa"] for r in results])
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
        raise
    return manifest


def _write_qa(root: Path, manifest: dict, subject_reports: list[dict]) -> None:
    from phantoms.qa import profile_montage, table_check

    table = table_check()
    table.pop("rows")
    report = {
        "tolerance": QA_TOLERANCE,
        "table_check": table,
        "subjects": subject_reports,
        "passed": table["passed"] and all(r["passed"] for r in subject_reports),
    }
    write_json(root / "qa" / "qa_report.json", report)
    for name, prof in manifest["profiles"].items():
        profile_montage(root, name, prof["subjects"][0], root / "qa" / f"{name}_montage.png")
