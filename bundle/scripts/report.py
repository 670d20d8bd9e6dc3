"""Per-scan report: what a lab reads from each scan besides its label file.

Written beside each prediction as ``<image name>_report.json`` (and as one row of the run's ``cohort.csv``, see
:mod:`scripts.cohort`): lesion count, total and per-lesion volume (ml), per-lesion centroid in world (RAS mm) and,
when the image was registered, MNI152 coordinates; the sequence if known; the gate's weight share per expert (which
expert the model relied on); the experts' disagreement (an uncertainty score from the same forward pass); QC flags,
each with its reason; the run time. Every number comes from :mod:`scripts.metrics`; this module only assembles them.
A flagged scan is still written: the flags say why a reader should look twice, they never drop a scan.
"""

from __future__ import annotations

import os
import time
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import MapTransform

from scripts.atomic import save_json
from scripts.io import read_header, strip_suffix
from scripts.metrics import components, disagreement_map
from scripts.mome import MODALITIES

REPORT_POSTFIX = "report"

#: QC limits. ``min_registration_overlap``: Dice of the registered image's foreground with the template's brain (or,
#: for a head with its skull, the share of the template brain it covers); ``max_uncertainty``: the mean expert
#: disagreement (nats) over the brain (inference.json's ``qc_max_uncertainty``; the released model scores 0.07-0.10 on
#: fresh phantoms, docs/BENCHMARKS.md). Envelope: voxel size and field of view are wide bounds of ours for adult
#: brain MRI (the public datasets' grids lie well inside); ``brain_z_range`` bounds the 0.1/99.9th percentiles of the
#: z-scored brain (phantoms: -3.4 to 4.6, docs/BENCHMARKS.md); a CT, a mask or a corrupt scaling falls far out.
QC_LIMITS: dict[str, Any] = {
    "min_registration_overlap": 0.6,
    "max_uncertainty": 0.15,
    "spacing_mm": (0.3, 7.0),
    "extent_mm": (60.0, 400.0),
    "brain_z_range": (-6.0, 12.0),
}


def _plain(x: Any) -> torch.Tensor:
    return x.as_tensor() if isinstance(x, MetaTensor) else torch.as_tensor(x)


def _registration(image: Any) -> tuple[np.ndarray | None, dict]:
    """The matrix ``native_world = M @ template_world`` and the registration's meta data, if the image was
    registered (:class:`scripts.data.transforms.RegisterToTemplated` leaves both in the image's trace)."""
    for op in getattr(image, "applied_operations", []) or []:
        if op.get("class") == "RegisterToTemplated":
            extra = op.get("extra_info") or {}
            return np.asarray(extra["matrix"], float), extra
    return None, {}


def lesion_table(mask: np.ndarray, affine: np.ndarray, matrix: np.ndarray | None = None) -> list[dict]:
    """One row per connected lesion, largest first: voxels, ml, voxel-centroid in world RAS mm and, given the
    registration ``matrix`` (native world = matrix @ MNI world), in MNI152 mm."""
    labels, n = components(mask)
    if n == 0:
        return []
    affine = np.asarray(affine, float)
    ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    where = np.nonzero(labels)  # lesion voxels only: a pass over the whole volume per axis costs far more
    ids = labels[where]
    counts = np.bincount(ids, minlength=n + 1)[1:]
    centres = np.stack([np.bincount(ids, weights=w, minlength=n + 1)[1:] for w in where], 1) / counts[:, None]
    world = centres @ affine[:3, :3].T + affine[:3, 3]
    mni = None if matrix is None else (np.c_[world, np.ones(n)] @ np.linalg.inv(matrix).T)[:, :3]
    rows = []
    for i in np.argsort(-counts, kind="stable"):
        row = {"voxels": int(counts[i]), "volume_ml": float(counts[i] * ml), "centroid_world_mm": _round(world[i])}
        row["centroid_mni_mm"] = None if mni is None else _round(mni[i])
        rows.append(row)
    return rows


def _round(v: np.ndarray) -> list[float]:
    return [round(float(x), 2) for x in v]


def qc_flags(report: Mapping, limits: Mapping[str, Any] = QC_LIMITS) -> list[dict[str, str]]:
    """``[{"flag", "reason"}]`` for every QC rule the report breaks (empty when none does)."""
    flags: list[dict[str, str]] = []

    def flag(name: str, reason: str) -> None:
        flags.append({"flag": name, "reason": reason})

    overlap, least = report.get("registration", {}).get("overlap"), limits["min_registration_overlap"]
    if overlap is not None and overlap < least:
        why = "registration failed or the image is not a brain"
        flag("registration", f"registered brain overlaps the template by {overlap:.2f} (< {least}): {why}")
    low, high = limits["spacing_mm"]
    if any(not low <= s <= high for s in report["spacing_mm"]):
        flag("envelope", f"voxel size {report['spacing_mm']} mm outside {low}-{high} mm")
    low, high = limits["extent_mm"]
    if any(not low <= e <= high for e in report["extent_mm"]):
        flag("envelope", f"field of view {report['extent_mm']} mm outside {low}-{high} mm")
    z, (low, high) = report.get("brain_z"), limits["brain_z_range"]
    if z is not None and (z[0] < low or z[1] > high):
        why = "not an MR contrast the model was trained on"
        flag("envelope", f"brain intensities (z-scored, 0.1-99.9th percentile) {z} outside [{low}, {high}]: {why}")
    if report["n_lesions"] == 0:
        flag("empty_prediction", "no lesion voxel predicted")
    u = report.get("uncertainty")
    if u is not None and u > limits["max_uncertainty"]:
        flag("uncertainty", f"expert disagreement {u:.4f} nats > {limits['max_uncertainty']}")
    return flags


class Uncertaintyd(MapTransform):
    """From MoME's ``with_aux`` output in network space: ``uncertainty``, the per-voxel disagreement of the experts
    (a MetaTensor carrying the image's trace, so that ``Invertd`` brings it to the input grid), and
    ``uncertainty_score``, its mean over the brain (non-zero voxels of the preprocessed image). Put it before
    :class:`scripts.evaluation.SplitOutputsd`, which replaces the logits; the expert logits are dropped once used (a
    label and a report need no per-expert probabilities); a plain tensor output is left alone."""

    def __init__(self, keys: str = "pred", image_key: str = "image", num_classes: int = 2) -> None:
        super().__init__(keys)
        self.image_key, self.num_classes = image_key, num_classes

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        out = d[self.keys[0]]
        if not isinstance(out, Mapping) or "experts" not in out:
            return d
        u = disagreement_map(_plain(out["experts"]), self.num_classes)
        brain = (_plain(d[self.image_key]) != 0).any(0)  # MoME+: any sequence of the case
        d["uncertainty_score"] = float(u[brain].mean()) if bool(brain.any()) else float(u.mean())
        # 0.001 nats is resolution enough for a map, and the file then compresses about twice as fast
        d["uncertainty"] = MetaTensor(torch.round(u, decimals=3)[None].float())
        d[self.keys[0]] = {k: v for k, v in out.items() if k != "experts"}  # used: not carried through the rest
        return d


class ScanReportd(MapTransform):
    """The per-scan report of ``pred`` (the label on the input grid, after ``Invertd`` and ``AsDiscreted``), in
    ``d["report"]`` and, given ``output_dir``, in ``<output_dir>/<image name>_report.json`` (written last and
    atomically: its presence means the scan's outputs are complete; ``input_root`` as ``SaveImaged``'s
    ``data_root_dir``). ``start_time`` (``time.time()``) in the item
    gives the run time; ``modality`` in the item the sequence; ``report_extra`` (a dict) is copied in;
    ``report_path`` in the item, where given, is where it goes (a MoME+ case is named by the case, not a file)."""

    def __init__(
        self,
        keys: str = "pred",
        image_key: str = "image",
        output_dir: str | Path | None = None,
        input_root: str | Path = "",
        modalities: Sequence[str] = MODALITIES,
        limits: Mapping[str, Any] | None = None,
    ) -> None:
        super().__init__(keys)
        self.image_key, self.modalities = image_key, tuple(modalities)
        self.output_dir = None if output_dir is None else Path(output_dir)
        self.input_root = input_root
        self.limits = {**QC_LIMITS, **(limits or {})}

    def __call__(self, data: Mapping[Hashable, Any]) -> dict:
        d = dict(data)
        pred, image = d[self.keys[0]], d[self.image_key]
        source = Path(str(image.meta.get("filename_or_obj", "image")))
        mask = _plain(pred).cpu().numpy().reshape(pred.shape[-3:]) > 0
        # the label is on the input's grid (after Invertd): its affine is the file's, no header to read again
        affine = np.asarray(pred.affine if isinstance(pred, MetaTensor) else read_header(source).affine, float)
        spacing = np.linalg.norm(affine[:3, :3], axis=0)
        matrix, extra = _registration(image)
        lesions = lesion_table(mask, affine, matrix)
        report: dict[str, Any] = {"status": "ok", "image": str(source.resolve()), "sequence": d.get("modality")}
        report["prediction"] = d.get("prediction_path")
        report |= {
            "shape": list(mask.shape),
            "spacing_mm": [round(float(s), 4) for s in spacing],
            "extent_mm": [round(float(n * s), 1) for n, s in zip(mask.shape, spacing, strict=True)],
            "n_lesions": len(lesions),
            "total_volume_ml": float(sum(row["volume_ml"] for row in lesions)),
            "lesions": lesions,
        }
        brain = _plain(image)[0]
        values = brain[brain != 0]
        if values.numel() > 1:
            q = torch.quantile(values[:: max(1, values.numel() // 200_000)].float(), torch.tensor([0.001, 0.999]))
            report["brain_z"] = [round(float(x), 2) for x in q]
        if matrix is not None:
            report["registration"] = {k: extra.get(k) for k in ("overlap", "skull_stripped") if k in extra}
        if (share := d.get("gate_usage")) is not None:
            report["gate_share"] = dict(zip(self.modalities, (round(float(s), 4) for s in share), strict=True))
            report["relied_on"] = self.modalities[int(np.argmax(share))]
        report["uncertainty"] = d.get("uncertainty_score")
        report |= d.get("report_extra") or {}  # e.g. the weights it was made with (cohort resume)
        report["qc_flags"] = qc_flags(report, self.limits)
        if (start := d.get("start_time")) is not None:
            report["run_time_s"] = round(time.time() - float(start), 3)
        d["report"] = report
        if self.output_dir is not None:
            save_json(report, d.get("report_path") or report_path(self.output_dir, source, self.input_root))
        return d


def output_stem(output_dir: str | Path, image: str | Path, input_root: str | Path = "") -> Path:
    """``<output_dir>/<image name>``, or with ``input_root`` the image's folder below it kept (as ``SaveImaged``'s
    ``data_root_dir`` does): the prefix of every output of one scan (``_seg.nii.gz``, ``_report.json``, ...)."""
    image = Path(image)
    if not input_root:
        return Path(output_dir) / strip_suffix(image)
    return Path(output_dir) / os.path.relpath(image.parent, input_root) / strip_suffix(image)


def report_path(output_dir: str | Path, image: str | Path, input_root: str | Path = "") -> Path:
    """Where the report of ``image`` goes: beside its ``<name>_seg.nii.gz``."""
    stem = output_stem(output_dir, image, input_root)
    return stem.with_name(f"{stem.name}_{REPORT_POSTFIX}.json")
