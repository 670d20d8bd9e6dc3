"""Evaluation: per-case metrics (computed by :mod:`scripts.metrics`) on the native grid, the tables and the plots.

Metrics are computed on each image's native grid, as nnU-Net and the Model Zoo's evaluate configs do: the prediction
is inverted (``Invertd``) and compared with the label file on disk. Averages (the papers define none; ours): case
level = mean over images; dataset level = mean of per-dataset means; task level = mean of per-(dataset, modality) means.
Lesion-wise scores (BraTS 2023, :func:`scripts.metrics.lesion_wise`) are averaged per group over images; the
per-size-bin numbers pool the lesions of all images.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from ignite.engine import Engine, Events
from monai.data import MetaTensor, affine_to_spacing
from monai.transforms import MapTransform

from scripts.atomic import atomic_path, save_json
from scripts.io import read_volume, strip_suffix
from scripts.metrics import SIZE_BIN_NAMES, case_metrics, gate_usage, lesion_mask, lesion_wise
from scripts.mome import MODALITIES

#: Per-case lesion-wise columns: case key -> key of :func:`scripts.metrics.lesion_wise`'s result.
LESION_KEYS = {
    "lesion_dice": "lesion_dice",
    "lesion_hd95": "lesion_hd95",
    "lesion_f1": "f1",
    "tp": "tp",
    "fp": "fp",
    "fn": "fn",
    "avd_ml": "avd_ml",
}
#: ``cases.csv`` column of each lesion-wise case key, and how it is written.
_LESION_COLUMNS = {
    "lesion_dice": ("lesion_dice", ".4f"),
    "lesion_hd95": ("lesion_hd95_mm", ".2f"),
    "lesion_f1": ("lesion_f1", ".4f"),
    "tp": ("tp", "d"),
    "fp": ("fp", "d"),
    "fn": ("fn", "d"),
    "avd_ml": ("avd_ml", ".4f"),
}
_GROUPS = ("image", "dataset", "modality", "lesion_type")
_LESION_FIELDS = ("volume_ml", "size_bin", "dice", "hd95", "detected")


def fused_metrics(
    pred: np.ndarray, truth: np.ndarray, spacing: Sequence[float], dilation: int = 3, min_voxels: int = 0
) -> dict:
    """Voxel Dice and HD95 and the lesion-wise scores of one fused prediction: the evaluator and
    :func:`evaluate_folder` both call this, so the two paths give the same numbers."""
    lw = lesion_wise(pred, truth, spacing, dilation=dilation, min_voxels=min_voxels)
    return case_metrics(pred, truth, spacing) | {k: lw[v] for k, v in LESION_KEYS.items()} | {"lesions": lw["lesions"]}


def _plain(x: torch.Tensor) -> torch.Tensor:
    return x.as_tensor() if hasattr(x, "as_tensor") else torch.as_tensor(x)


class SplitOutputsd(MapTransform):
    """Network output -> ``pred`` (class probabilities), ``experts`` (per-expert probabilities, ``K*C`` channels) and
    ``gate_usage`` (in network space, inside the brain: any channel != 0); a plain tensor (one U-Net) gives ``pred``
    alone."""

    def __init__(self, keys: str = "pred", image_key: str = "image", num_experts: int = len(MODALITIES)) -> None:
        super().__init__(keys)
        self.image_key, self.num_experts = image_key, num_experts

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        for key in self.key_iterator(d):
            out = d[key]
            d[key] = torch.softmax(out["logits"] if isinstance(out, Mapping) else out, 0)
            if not isinstance(out, Mapping):
                continue
            k = self.num_experts
            if "experts" in out:  # inference's uncertainty step has used (and dropped) them
                experts = _plain(out["experts"]).unflatten(0, (k, -1))
                # a MetaTensor, so that Invertd takes the image's transforms for it too
                d["experts"] = MetaTensor(torch.softmax(experts, 1).flatten(0, 1))
            d["gate_usage"] = gate_usage(_plain(out["gate"]), (_plain(d[self.image_key]) != 0).any(0), k)
        return d


class CaseMetricsd(MapTransform):
    """``metrics`` (Dice, HD95, lesion-wise scores, expert Dice) of ``pred`` and ``experts``, already inverted to the
    native grid, against the label file, with the lesion values that :class:`scripts.data.transforms.LesionLabeld`
    recorded. ``dilation`` and ``min_voxels`` are :func:`scripts.metrics.lesion_wise`'s."""

    def __init__(
        self,
        keys: str = "pred",
        label_key: str = "label",
        num_experts: int = len(MODALITIES),
        dilation: int = 3,
        min_voxels: int = 0,
    ) -> None:
        super().__init__(keys)
        self.label_key, self.num_experts = label_key, num_experts
        self.dilation, self.min_voxels = dilation, min_voxels

    def __call__(self, data: Mapping[Hashable, object]) -> dict:
        d = dict(data)
        meta = getattr(d[self.label_key], "meta", {})
        info, label = read_volume(meta["filename_or_obj"])
        truth = lesion_mask(label, [int(v) for v in str(meta.get("lesion_values") or "").split(",") if v])
        spacing = affine_to_spacing(info.affine, suppress_zeros=False)
        pred = torch.as_tensor(d[self.keys[0]]).argmax(0).cpu().numpy() > 0
        metrics = d["metrics"] = fused_metrics(pred, truth, spacing, self.dilation, self.min_voxels)
        if "experts" in d:
            experts = torch.as_tensor(d["experts"]).unflatten(0, (self.num_experts, -1)).argmax(1).cpu().numpy() > 0
            metrics["expert_dice"] = [case_metrics(e, truth, spacing, hd95=False)["dice"] for e in experts]
        if "gate_usage" in d:
            metrics["gate_usage"] = d["gate_usage"]
        image = getattr(d.get("image"), "meta", {}).get("filename_or_obj")
        metrics["image"] = str(Path(str(image)).resolve()) if image else None
        return d


class CaseRecorder:
    """Evaluator handler: collects every case's ``metrics`` and writes the report when the evaluator completes."""

    def __init__(self, output_dir: str | Path, items: Sequence[Mapping], modalities: Sequence[str] = MODALITIES):
        self.output_dir, self.items, self.modalities = Path(output_dir), list(items), tuple(modalities)
        self.rows: dict[str, dict] = {}

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.STARTED, lambda _: self.rows.clear())
        engine.add_event_handler(Events.ITERATION_COMPLETED, self.collect)
        engine.add_event_handler(Events.COMPLETED, self.write)

    def collect(self, engine: Engine) -> None:
        for out in engine.state.output:
            self.rows[out["metrics"]["image"]] = out["metrics"]

    def write(self, engine: Engine) -> None:
        report(self.output_dir, _join(self.items, self.rows), self.modalities)


def _join(items: Sequence[Mapping], rows: Mapping[str, Mapping]) -> list[dict]:
    cases = []
    for item in items:
        key = str(Path(item["image"]).resolve())
        if key not in rows:
            raise KeyError(f"{item['image']} was not evaluated")
        m = rows[key]
        case = {k: item.get(k) for k in ("image", "subject", "dataset", "modality", "lesion_type")}
        case["dataset"] = item.get("dataset", "unknown")
        case |= {"dice": m["dice"], "hd95": m["hd95"]}
        cases.append(case | {k: m.get(k) for k in (*LESION_KEYS, "lesions", "gate_usage", "expert_dice")})
    return cases


def evaluate_folder(
    items: Sequence[Mapping], folder: str | Path, postfix: str = "seg", dilation: int = 3, min_voxels: int = 0
) -> list[dict]:
    """Score prediction files ``<folder>/<image name>_<postfix>.nii.gz`` (native grid) against the items' labels."""
    rows = {}
    for item in items:
        path = Path(folder) / f"{strip_suffix(item['image'])}_{postfix}.nii.gz"
        info, pred = read_volume(path)
        linfo, label = read_volume(item["label"])
        if pred.shape != label.shape or not np.allclose(info.affine, linfo.affine, atol=1e-3):
            raise ValueError(f"{path} is not on the grid of its label {item['label']}")
        key = str(Path(item["image"]).resolve())
        spacing = affine_to_spacing(linfo.affine, suppress_zeros=False)
        truth = lesion_mask(label, item.get("label_values"))
        rows[key] = fused_metrics(pred > 0, truth, spacing, dilation, min_voxels)
    return _join(items, rows)


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


#: Per-case numbers that ``summary.json``'s ``lesion_wise`` tables average: voxel Dice beside the lesion-wise ones.
_LESION_MEANS = ("dice", "lesion_dice", "lesion_hd95", "lesion_f1", "avd_ml")


def _by_size_bin(cases: Sequence[Mapping]) -> dict[str, dict]:
    """Lesions of all cases pooled per size bin: how many, the share detected, mean Dice and HD95 (mm)."""
    pooled: dict[str, list[Mapping]] = defaultdict(list)
    for c in cases:
        for lesion in c.get("lesions") or ():
            pooled[lesion["size_bin"]].append(lesion)
    names = list(SIZE_BIN_NAMES) + sorted(set(pooled) - set(SIZE_BIN_NAMES))  # an older file's bins come last
    return {
        name: {
            "n_lesions": len(pooled[name]),
            "detected_share": _mean([float(r["detected"]) for r in pooled[name]]),
            "dice": _mean([r["dice"] for r in pooled[name]]),
            "hd95": _mean([r["hd95"] for r in pooled[name]]),
        }
        for name in names
    }


def summarise(cases: Sequence[Mapping], modalities: Sequence[str] = MODALITIES) -> dict:
    """Grouped Dice, the three averages, gate usage and the specialisation index from per-case rows; the same
    groups and averages of the lesion-wise scores, and per-lesion numbers by lesion size."""
    modalities = list(modalities)
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    lesion_groups: dict[str, dict[str, dict[str, list]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    gate, experts = defaultdict(list), defaultdict(list)  # input modality -> per-case lists
    for c in cases:
        modality = c.get("modality") or "unknown"
        keys = {"task": f"{c['dataset']}/{modality}", "dataset": c["dataset"], "modality": modality}
        keys["lesion_type"] = c.get("lesion_type") or "unknown"
        for name, key in keys.items():
            groups[name][key].append(c["dice"])
            for metric in _LESION_MEANS:
                lesion_groups[name][key][metric].append(c.get(metric))
        for key, per_modality in (("gate_usage", gate), ("expert_dice", experts)):
            if c.get(key):
                per_modality[modality].append(c[key])
    table = {name: {k: _mean(v) for k, v in sorted(g.items())} for name, g in groups.items()}
    usage = {m: [float(x) for x in np.mean(rows, axis=0)] for m, rows in sorted(gate.items())}
    lesion_table: dict[str, dict] = {
        name: {k: {m: _mean(v) for m, v in per_metric.items()} for k, per_metric in sorted(g.items())}
        for name, g in lesion_groups.items()
    }
    lesion_table["average"] = {
        "task_level": {m: _mean([v[m] for v in lesion_table.get("task", {}).values()]) for m in _LESION_MEANS},
        "dataset_level": {m: _mean([v[m] for v in lesion_table.get("dataset", {}).values()]) for m in _LESION_MEANS},
        "case_level": {m: _mean([c.get(m) for c in cases]) for m in _LESION_MEANS},
    }
    return {
        "n_cases": len(cases),
        "dice": table,
        "average": {
            "task_level": _mean(list(table.get("task", {}).values())),
            "dataset_level": _mean(list(table.get("dataset", {}).values())),
            "case_level": _mean([c["dice"] for c in cases]),
        },
        "hd95_case_level": _mean([c.get("hd95", float("nan")) for c in cases]),
        "gate_usage": {"experts": modalities, "by_input_modality": usage},
        "specialisation_index": {m: usage[m][modalities.index(m)] for m in usage if m in modalities},
        "expert_dice_by_input_modality": {
            m: [float(x) for x in np.nanmean(rows, axis=0)] for m, rows in sorted(experts.items())
        },
        "lesion_wise": lesion_table,
        "by_size_bin": _by_size_bin(cases),
    }


def _fmt(values: Sequence[float] | None, n: int) -> list[str]:
    return [f"{v:.4f}" for v in (values or [float("nan")] * n)]


def _cell(value: float | int | None, spec: str) -> str:
    return "" if value is None else format(value, spec)


def _number(text: str | None, spec: str) -> float | int | None:
    if spec == "d":
        return int(text) if text else None
    return float(text or "nan")


def write_cases(cases: Sequence[Mapping], path: str | Path, modalities: Sequence[str] = MODALITIES) -> None:
    """``cases.csv``: one row per image with its metrics, gate shares, expert Dice and lesion-wise scores (last, so
    that the older columns keep their places)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["image", "subject", "dataset", "modality", "lesion_type", "dice", "hd95_mm"]
            + [f"gate_{m}" for m in modalities]
            + [f"dice_expert_{m}" for m in modalities]
            + [column for column, _ in _LESION_COLUMNS.values()]
        )
        for c in cases:
            writer.writerow(
                [c["image"], c["subject"], c["dataset"], c["modality"] or "unknown", c["lesion_type"]]
                + [f"{c['dice']:.4f}", f"{c['hd95']:.2f}"]
                + _fmt(c.get("gate_usage"), len(modalities))
                + _fmt(c.get("expert_dice"), len(modalities))
                + [_cell(c.get(key), spec) for key, (_, spec) in _LESION_COLUMNS.items()]
            )


def write_lesions(cases: Sequence[Mapping], path: str | Path) -> None:
    """``lesions.csv``: one row per scored ground-truth lesion of every case (``cases.csv`` has one row per image)."""
    with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow([*_GROUPS, *_LESION_FIELDS])
        for c in cases:
            group = [c["image"], c["dataset"], c["modality"] or "unknown", c["lesion_type"]]
            for lesion in c.get("lesions") or ():
                writer.writerow(
                    group
                    + [f"{lesion['volume_ml']:.4f}", lesion["size_bin"], f"{lesion['dice']:.4f}"]
                    + [f"{lesion['hd95']:.2f}", int(lesion["detected"])]
                )


def read_lesions(path: str | Path) -> dict[str, list[dict]]:
    """A ``lesions.csv`` back as each image's list of lesion dicts (the ``lesions`` of its case)."""
    by_image: dict[str, list[dict]] = defaultdict(list)
    with Path(path).open(newline="") as f:
        for r in csv.DictReader(f):
            by_image[r["image"]].append(
                {
                    "volume_ml": float(r["volume_ml"]),
                    "size_bin": r["size_bin"],
                    "dice": float(r["dice"]),
                    "hd95": float(r["hd95"]),
                    "detected": r["detected"] == "1",
                }
            )
    return dict(by_image)


def read_cases(path: str | Path) -> list[dict]:
    """Rows of a ``cases.csv`` back as the dicts :func:`summarise` takes (how the benchmarks read evaluate.json),
    with each image's ``lesions`` from the ``lesions.csv`` beside it (``None`` without one: an older report)."""
    path = Path(path)
    lesions = read_lesions(path.with_name("lesions.csv")) if path.with_name("lesions.csv").is_file() else None
    cases = []
    with path.open(newline="") as f:
        for r in csv.DictReader(f):
            case = {k: r[k] for k in ("image", "subject", "dataset", "modality", "lesion_type")}
            case["modality"] = None if r["modality"] == "unknown" else r["modality"]
            case |= {"dice": float(r["dice"] or "nan"), "hd95": float(r["hd95_mm"] or "nan")}
            for key, prefix in (("gate_usage", "gate_"), ("expert_dice", "dice_expert_")):
                values = [float(v or "nan") for k, v in r.items() if k.startswith(prefix)]
                case[key] = None if all(math.isnan(v) for v in values) else values
            for key, (column, spec) in _LESION_COLUMNS.items():  # absent from an older file: NaN / None
                case[key] = _number(r.get(column), spec)
            case["lesions"] = None if lesions is None else lesions.get(case["image"], [])
            cases.append(case)
    return cases


def radar_chart(series: Mapping[str, Mapping], path: str | Path, title: str = "Dice") -> None:
    """Radar chart of Dice by lesion type, by modality and the three averages, one polygon per model."""
    from matplotlib.figure import Figure

    first = next(iter(series.values()))
    axes = [(group, k) for group in ("lesion_type", "modality") for k in first["dice"].get(group, {})]
    axes += [("average", k) for k in ("task_level", "dataset_level", "case_level")]
    angles = np.linspace(0, 2 * np.pi, len(axes), endpoint=False).tolist()
    ax = Figure(figsize=(7, 7)).subplots(subplot_kw={"polar": True})
    for name, summary in series.items():
        values = [summary["average"][k] if g == "average" else summary["dice"][g].get(k, math.nan) for g, k in axes]
        values = [0.0 if math.isnan(v) else v for v in values]
        ax.plot(angles + angles[:1], values + values[:1], label=name)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.1)
    ax.set_xticks(angles)
    ax.set_xticklabels([k.replace("_level", " avg") for _, k in axes], fontsize=8)
    ax.set(ylim=(0, 1), title=title)
    ax.legend(loc="lower right", bbox_to_anchor=(1.25, -0.05), fontsize=8)
    _save(ax.figure, path)


def _save(fig, path: str | Path) -> None:
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=100)


def _gate_heatmap(summary: Mapping, path: Path) -> None:
    from matplotlib.figure import Figure

    usage = summary["gate_usage"]["by_input_modality"]
    if not usage:
        return
    data = np.array(list(usage.values()))
    ax = Figure(figsize=(6, 1 + 0.5 * len(usage))).subplots()
    im = ax.imshow(data, vmin=0, vmax=max(0.5, float(data.max())), cmap="viridis")
    ax.set_xticks(range(data.shape[1]), summary["gate_usage"]["experts"])
    ax.set_yticks(range(len(usage)), list(usage))
    ax.set(xlabel="expert", ylabel="input modality")
    for (i, j), share in np.ndenumerate(data):
        ax.text(j, i, f"{share:.2f}", ha="center", va="center", color="w", fontsize=8)
    ax.figure.colorbar(im, ax=ax, label="share of |gate weight|")
    _save(ax.figure, path)


def report(
    output_dir: str | Path, cases: Sequence[Mapping], modalities: Sequence[str] = MODALITIES, name: str = "MoME"
) -> dict:
    """``cases.csv``, ``lesions.csv``, ``summary.json``, ``radar.png`` and ``gate_usage.png`` in ``output_dir`` from
    per-case rows."""
    out = Path(output_dir)  # made by the first write
    write_cases(cases, out / "cases.csv", modalities)
    write_lesions(cases, out / "lesions.csv")
    summary = summarise(cases, modalities)
    save_json(summary, out / "summary.json")
    radar_chart({name: summary}, out / "radar.png", title=f"{name}: Dice ({len(cases)} images)")
    _gate_heatmap(summary, out / "gate_usage.png")
    print(json.dumps({"dice": summary["dice"], "average": summary["average"]}, indent=1))
    return summary
