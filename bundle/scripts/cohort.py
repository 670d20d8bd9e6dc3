"""Inference over a cohort: every scan of a folder or CSV, one row each in ``cohort.csv``, resumable and sharded.

Each scan is checked, preprocessed, segmented and post-processed on its own, so a corrupt file, a 4D image or a
non-image gets a row that says why and the rest of the cohort runs. Outputs are written atomically and the report
last, so a scan whose report says ``ok`` (for the same weights) is complete and a rerun skips it: a killed run loses
at most the scan in progress. Under ``torchrun`` each rank takes every ``WORLD_SIZE``-th scan (Gloo on CPU, NCCL on
CUDA) and rank 0 merges the reports into ``cohort.csv`` and ``cohort_summary.json`` once all ranks are done.
"""

from __future__ import annotations

import csv
import datetime
import hashlib
import json
import logging
import os
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from monai.data import Dataset, decollate_batch, list_data_collate

from scripts.atomic import atomic_path, save_json
from scripts.data.modality import canonical_modality
from scripts.errors import InputError, input_error_in
from scripts.io import SUFFIXES, check_image, has_image_suffix
from scripts.report import REPORT_POSTFIX, output_stem, report_path

logger = logging.getLogger(__name__)

COLUMNS = (
    "image", "status", "error", "sequence", "n_lesions", "total_volume_ml", "largest_lesion_ml", "uncertainty",
    "relied_on", "qc_flags", "qc_reasons", "run_time_s", "prediction", "report",
)  # fmt: skip


def default_device() -> torch.device:
    """``cuda:LOCAL_RANK`` (torchrun) or ``cuda:0`` where CUDA is, else the CPU."""
    if torch.cuda.is_available():
        return torch.device(f"cuda:{int(os.environ.get('LOCAL_RANK', 0))}")
    return torch.device("cpu")


def list_scans(inputs: str | Path | Sequence[str | Path], input_root: str | Path = "") -> list[dict]:
    """``[{"image": path, ...}]`` from image files, folders of them, or CSV files with an ``image`` column (and
    optional ``modality``/``sequence`` and ``subject``; relative paths are relative to the CSV). Files are not read
    here: each is checked when its turn comes, so one bad file costs one row. In a folder, other non-hidden files
    become rows that say they are not images. Two scans whose outputs would have one name (``FLAIR.nii.gz`` in every
    subject's folder) are refused unless ``input_root`` keeps their folders apart."""
    scans: list[dict] = []
    for entry in [inputs] if isinstance(inputs, (str, Path)) else inputs:
        path = Path(entry)
        if path.is_dir():
            files = sorted(p for p in path.iterdir() if p.is_file() and not p.name.startswith("."))
            if not any(has_image_suffix(p) for p in files):
                raise InputError(f"no images ({', '.join(SUFFIXES)}) in folder {path}")
            scans += [{"image": str(p)} for p in files]
        elif path.is_file() and path.suffix.lower() == ".csv":
            scans += _read_csv(path)
        elif path.is_file():
            scans.append({"image": str(path)})
        else:
            raise InputError(f"input image, folder or CSV not found: {path}")
    seen: dict[Path, str] = {}
    for scan in scans:
        if input_root and os.path.relpath(scan["image"], input_root).startswith(".."):
            raise InputError(f"{scan['image']} is not inside --input_root {input_root}")
        stem = output_stem("", scan["image"], input_root)
        if stem in seen and seen[stem] != scan["image"]:
            raise InputError(
                f"{seen[stem]} and {scan['image']} have the same name, so their outputs would overwrite each other; "
                "give --input_root (a folder above both) to keep each scan's folder in the output folder"
            )
        seen[stem] = scan["image"]
    return list({s["image"]: s for s in scans}.values())


def _read_csv(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        columns = [c.strip().lower() for c in reader.fieldnames or []]
        if "image" not in columns:
            raise InputError(f"{path}: no 'image' column (found {columns or 'no header'}); one row per scan")
        rows = []
        for n, raw in enumerate(reader, start=2):
            row = {k.strip().lower(): (v or "").strip() for k, v in raw.items() if k}
            if not row["image"]:
                raise InputError(f"{path} line {n}: empty 'image'")
            image = Path(row["image"]) if Path(row["image"]).is_absolute() else path.parent / row["image"]
            scan = {"image": str(image)}
            if sequence := row.get("modality") or row.get("sequence"):
                scan["modality"] = sequence
            if row.get("subject"):
                scan["subject"] = row["subject"]
            rows.append(scan)
    if not rows:
        raise InputError(f"{path}: no rows")
    return rows


def md5(path: str | Path) -> str:
    digest = hashlib.md5()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 24), b""):
            digest.update(block)
    return digest.hexdigest()


def _distributed(device: torch.device) -> tuple[int, int, bool]:
    """(rank, world size, whether this call started the process group)."""
    world = int(os.environ.get("WORLD_SIZE", 1))
    if world < 2:
        return 0, 1, False
    if dist.is_initialized():
        return dist.get_rank(), dist.get_world_size(), False
    backend = "nccl" if device.type == "cuda" else "gloo"
    # ranks wait for each other only at the end; a long cohort must not time out there
    dist.init_process_group(backend, timeout=datetime.timedelta(days=2))
    if device.type == "cpu":  # processes share the cores instead of each taking all of them
        torch.set_num_threads(max(1, (os.cpu_count() or 1) // int(os.environ.get("LOCAL_WORLD_SIZE", world))))
    return dist.get_rank(), world, True


def _read_report(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class CohortRunner:
    """inference.json's ``evaluator``: each scan of ``dataset`` (items of :func:`list_scans`, the bundle's
    preprocessing as its transform) through ``inferer`` and ``postprocessing``, which writes the label, the optional
    uncertainty map and, last, the report (:class:`scripts.report.ScanReportd`)."""

    def __init__(
        self,
        dataset: Dataset,
        output_dir: str | Path,
        network: torch.nn.Module,
        inferer: Callable,
        postprocessing: Callable,
        ckpt_path: str | Path,
        device: torch.device | str = "cpu",
        resume: bool = True,
        outputs: Sequence[str] = ("seg",),
        input_root: str | Path = "",
    ) -> None:
        self.dataset, self.scans, self.output_dir = dataset, [dict(s) for s in dataset.data], Path(output_dir)
        self.network, self.inferer, self.postprocessing = network, inferer, postprocessing
        self.ckpt_path, self.device, self.resume = Path(ckpt_path), torch.device(device), bool(resume)
        self.outputs, self.input_root = tuple(outputs), input_root

    def _stem(self, scan: Mapping) -> Path:
        """Prefix of a scan's outputs: its image's name, or a MoME+ case's name."""
        if "case" in scan:
            return self.output_dir / scan["case"]
        return output_stem(self.output_dir, scan["image"], self.input_root)

    def _report(self, scan: Mapping) -> Path:
        if "case" in scan:
            stem = self._stem(scan)
            return stem.with_name(f"{stem.name}_{REPORT_POSTFIX}.json")
        return report_path(self.output_dir, scan["image"], self.input_root)

    def run(self) -> dict | None:
        rank, world, started = _distributed(self.device)
        try:
            state = torch.load(self.ckpt_path, map_location=self.device, weights_only=True)
            self.network.load_state_dict(state.get("model", state), strict=True)
            self.network.eval()
            weights = {"weights": str(self.ckpt_path.resolve()), "weights_md5": md5(self.ckpt_path)}
            mine = list(range(len(self.scans)))[rank::world]
            done = 0
            for i, index in enumerate(mine, start=1):
                scan = self.scans[index]
                name = scan.get("case") or Path(scan["image"]).name
                if self.resume and self.complete(scan, weights["weights_md5"]):
                    done += 1
                    logger.info(f"[{i}/{len(mine)}] {name}: done before, skipped")
                    continue
                report = self.one(index, {**weights, "rank": rank})
                if report["status"] == "ok":
                    flags = ", ".join(f["flag"] for f in report["qc_flags"]) or "no QC flag"
                    logger.info(
                        f"[{i}/{len(mine)}] {name}: {report['n_lesions']} lesions, {report['total_volume_ml']:.2f} "
                        f"ml, {flags}, {report.get('run_time_s', 0):.1f} s"
                    )
                else:
                    logger.warning(f"[{i}/{len(mine)}] {name}: {report['status']}: {report['error']}")
            if done:
                logger.info(f"{done} of {len(mine)} scans were complete already (resume)")
            if world > 1:
                dist.barrier()
            if rank != 0:
                return None
            summary = self.merge()
            if failed := [r for r in summary.pop("errors") if r]:
                raise InputError(
                    f"{len(failed)} of {len(self.scans)} scans failed (their rows in {self.output_dir / 'cohort.csv'} "
                    f"say why; the others were written): {failed[0]}"
                    + (f" (and {len(failed) - 1} more)" if len(failed) > 1 else "")
                )
            return summary
        finally:
            if started:
                dist.destroy_process_group()

    def complete(self, scan: Mapping, weights_md5: str) -> bool:
        """Its report says ``ok`` for these weights and every output it names exists."""
        report = _read_report(self._report(scan))
        if not report or report.get("status") != "ok" or report.get("weights_md5") != weights_md5:
            return False
        stem = self._stem(scan)
        return all(stem.with_name(f"{stem.name}_{o}.nii.gz").is_file() for o in self.outputs)

    def one(self, index: int, weights: Mapping) -> dict:
        start, scan = time.time(), self.scans[index]
        path = self._report(scan)
        case = {k: scan[k] for k in ("case", "reference") if k in scan}
        if "sequences" in scan:
            case["sequences"] = {s: str(Path(scan[s]).resolve()) for s in scan["sequences"]}
        try:
            if scan.get("error"):
                raise InputError(scan["error"])
            for image in [scan[s] for s in scan.get("sequences", ())] or [scan["image"]]:
                if not has_image_suffix(image):
                    raise InputError(f"{image}: not an image file (expected {', '.join(SUFFIXES)})")
                check_image(image)
            if "sequences" in scan:
                modality = "+".join(scan["sequences"])
            else:
                modality = canonical_modality(scan.get("modality"), where=f"the row of {scan['image']}")
            data = self.dataset[index]
            batch = list_data_collate([data])
            # MoME+ is told which sequences the case has; one case per call, so every window shares its mask
            extra = {"available": batch["available"].to(self.device)} if "available" in batch else {}
            with torch.no_grad():
                batch["pred"] = self.inferer(batch["image"].to(self.device), self.network, **extra)
            item = decollate_batch(batch)[0]
            item |= {"start_time": start, "modality": modality, "report_extra": {**case, **weights}}
            stem = self._stem(scan)
            item["prediction_path"] = str(stem.with_name(f"{stem.name}_seg.nii.gz"))
            item["report_path"] = str(path)
            return self.postprocessing(item)["report"]
        except Exception as e:  # one scan's failure is its row; the cohort goes on
            logger.debug("scan failed", exc_info=True)
            e = input_error_in(e) or e
            why = " ".join(str(e).split()) or type(e).__name__
            error = why if isinstance(e, InputError) else f"{type(e).__name__}: {why}"
            image = str(Path(scan["image"]).resolve()) if "image" in scan else None
            report = {"status": "error", "image": image, **case, "error": error}
            sequence = "+".join(scan["sequences"]) if "sequences" in scan else scan.get("modality")
            report |= {"sequence": sequence, "run_time_s": round(time.time() - start, 3), **weights}
            save_json(report, path)
            return report

    def merge(self) -> dict:
        """``cohort.csv`` (a row per scan, in input order) and ``cohort_summary.json`` from the reports on disk."""
        rows, reports = [], []
        for scan in self.scans:
            path = self._report(scan)
            report = _read_report(path) or {"status": "missing", "error": "no report (the run stopped before it)"}
            reports.append(report)
            lesions = report.get("lesions") or []
            flags = report.get("qc_flags") or []
            largest = lesions[0]["volume_ml"] if lesions else (0.0 if report["status"] == "ok" else None)
            rows.append({
                **({"case": scan["case"]} if "case" in scan else {}), "image": scan.get("image", ""),
                "status": report["status"], "error": report.get("error", ""),
                "sequence": report.get("sequence") or scan.get("modality") or "",
                "n_lesions": report.get("n_lesions", ""), "total_volume_ml": _fmt(report.get("total_volume_ml")),
                "largest_lesion_ml": _fmt(largest),
                "uncertainty": _fmt(report.get("uncertainty"), 5), "relied_on": report.get("relied_on", ""),
                "qc_flags": ";".join(f["flag"] for f in flags), "qc_reasons": " | ".join(f["reason"] for f in flags),
                "run_time_s": _fmt(report.get("run_time_s"), 2), "prediction": report.get("prediction") or "",
                "report": str(path) if report["status"] != "missing" else "",
            })  # fmt: skip
        columns = ("case", *COLUMNS) if any("case" in s for s in self.scans) else COLUMNS
        with atomic_path(self.output_dir / "cohort.csv") as tmp, tmp.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        summary = summarise(reports)
        save_json(summary, self.output_dir / "cohort_summary.json")
        logger.info(f"cohort: {summary['status']} -> {self.output_dir / 'cohort.csv'}")
        return summary | {"errors": [r.get("error") for r in reports if r.get("status") != "ok"]}


def _fmt(value: Any, digits: int = 4) -> str:
    return "" if value is None else f"{float(value):.{digits}f}"


def summarise(reports: Sequence[Mapping]) -> dict:
    """Counts by status and QC flag; median and quartiles of lesion count, volume and run time over ok scans."""
    ok = [r for r in reports if r.get("status") == "ok"]

    def spread(key: str) -> dict | None:
        values = [float(r[key]) for r in ok if r.get(key) is not None]
        if not values:
            return None
        q1, median, q3 = np.percentile(values, [25, 50, 75])
        return {"median": float(median), "q1": float(q1), "q3": float(q3), "sum": float(np.sum(values))}

    return {
        "n_scans": len(reports),
        "status": dict(Counter(r.get("status", "missing") for r in reports)),
        "qc_flags": dict(Counter(f["flag"] for r in ok for f in r.get("qc_flags", []))),
        "flagged_scans": sum(bool(r.get("qc_flags")) for r in ok),
        "n_lesions": spread("n_lesions"),
        "total_volume_ml": spread("total_volume_ml"),
        "uncertainty": spread("uncertainty"),
        "run_time_s": spread("run_time_s"),
    }
