"""Evaluation: per-case metrics the evaluator cannot compute by itself, grouped tables, averages and plots.

The evaluator (``configs/evaluate.json``) runs MoME once per case with ``with_aux=True`` and records, per case,
lesion Dice, HD95, each expert's own Dice and the share of gate-weight magnitude each expert receives. MONAI's
``MetricsSaver`` writes those per-case values; :func:`report` joins them with the datalist and writes:

- ``cases.csv``: one row per image (dataset, modality, lesion type, subject, metrics);
- ``summary.json``: Dice per (dataset, modality) task, per dataset, per modality and per lesion type; the
  task-, dataset- and case-level averages; the gate-usage matrix and the expert-specialisation index;
- ``radar.png`` (Dice by lesion type, modality and average) and ``gate_usage.png`` (input modality x expert).

Averages (the papers do not define them; ours): case level = mean over images; dataset level = mean of per-dataset
means; task level = mean of per-(dataset, modality) means.
"""

from __future__ import annotations

import csv
import json
import math
from collections import defaultdict
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.metrics import CumulativeIterationMetric
from monai.utils import MetricReduction

from scripts.atomic import save_json
from scripts.mome import MODALITIES

__all__ = ["ExpertDice", "GateUsage", "radar_chart", "report", "summarise"]


class GateUsage(CumulativeIterationMetric):
    """Per case and expert: mean |gate weight| inside the brain (image != 0), as a share of the sum over experts.

    Inputs: ``y_pred`` = gate weights (B, K*C, ...), ``y`` = the image (B, 1, ...).
    """

    def __init__(self, num_experts: int = len(MODALITIES), reduction: str = MetricReduction.MEAN) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        w = y_pred.abs().unflatten(1, (self.num_experts, -1)).sum(2)  # (B, K, ...)
        brain = (y != 0).to(w.dtype) if y is not None else torch.ones_like(w[:, :1])
        per_expert = (w * brain).flatten(2).sum(-1) / brain.flatten(2).sum(-1).clamp_min(1)
        return per_expert / per_expert.sum(1, keepdim=True).clamp_min(1e-12)

    def aggregate(self, reduction: str | None = None):
        data = self.get_buffer()
        return data.nanmean(0) if (reduction or self.reduction) != MetricReduction.NONE else data


class ExpertDice(CumulativeIterationMetric):
    """Per case and expert: lesion Dice of that expert's own prediction (how specialised the experts stay).

    Inputs: ``y_pred`` = expert logits (B, K*C, ...), ``y`` = one-hot label (B, C, ...) or class map (B, 1, ...).
    Empty prediction and empty label give Dice 1.
    """

    def __init__(self, num_experts: int = len(MODALITIES), reduction: str = MetricReduction.MEAN) -> None:
        super().__init__()
        self.num_experts = num_experts
        self.reduction = reduction

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        logits = y_pred.unflatten(1, (self.num_experts, -1))  # (B, K, C, ...)
        pred = (logits.argmax(2) > 0).flatten(2).float()  # (B, K, N)
        target = (y.argmax(1) if y.shape[1] > 1 else y[:, 0]) > 0
        target = target.flatten(1).float()[:, None]  # (B, 1, N)
        inter, total = (pred * target).sum(-1), pred.sum(-1) + target.sum(-1)
        return torch.where(total > 0, 2 * inter / total.clamp_min(1e-12), torch.ones_like(total))

    def aggregate(self, reduction: str | None = None):
        data = self.get_buffer()
        return data.nanmean(0) if (reduction or self.reduction) != MetricReduction.NONE else data


def _read_raw(path: Path) -> dict[str, list[float]]:
    if not path.is_file():
        return {}
    with path.open() as f:
        rows = list(csv.reader(f))
    out = {}
    for row in rows[1:]:
        values = [float(v) for v in row[1:-1]]  # drop MetricsSaver's trailing "mean" column
        out[str(Path(row[0]).resolve())] = values
    return out


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if v is not None and not math.isnan(v)]
    return float(np.mean(finite)) if finite else float("nan")


def summarise(cases: Sequence[Mapping], modalities: Sequence[str] = MODALITIES) -> dict:
    """Grouped Dice, the three averages, gate usage and the specialisation index from per-case rows."""
    groups: dict[str, dict[str, list[float]]] = defaultdict(lambda: defaultdict(list))
    gate: dict[str, list[list[float]]] = defaultdict(list)
    for c in cases:
        modality = c.get("modality") or "unknown"
        for name, key in (
            ("task", f"{c['dataset']}/{modality}"),
            ("dataset", c["dataset"]),
            ("modality", modality),
            ("lesion_type", c.get("lesion_type") or "unknown"),
        ):
            groups[name][key].append(c["dice"])
        if c.get("gate_usage"):
            gate[modality].append(c["gate_usage"])
    table = {name: {k: _mean(v) for k, v in sorted(g.items())} for name, g in groups.items()}
    usage = {m: [float(x) for x in np.mean(rows, axis=0)] for m, rows in sorted(gate.items())}
    return {
        "n_cases": len(cases),
        "dice": table,
        "average": {
            "task_level": _mean(list(table.get("task", {}).values())),
            "dataset_level": _mean(list(table.get("dataset", {}).values())),
            "case_level": _mean([c["dice"] for c in cases]),
        },
        "hd95_case_level": _mean([c.get("hd95", float("nan")) for c in cases]),
        "gate_usage": {"experts": list(modalities), "by_input_modality": usage},
        "specialisation_index": {m: usage[m][modalities.index(m)] for m in usage if m in modalities},
    }


def radar_chart(series: Mapping[str, Mapping], path: str | Path, title: str = "Dice") -> None:
    """Radar chart of Dice by lesion type, by modality and the three averages, one polygon per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    first = next(iter(series.values()))
    axes = [("lesion_type", k) for k in first["dice"].get("lesion_type", {})]
    axes += [("modality", k) for k in first["dice"].get("modality", {})]
    axes += [("average", k) for k in ("task_level", "dataset_level", "case_level")]
    angles = np.linspace(0, 2 * np.pi, len(axes), endpoint=False).tolist()
    fig, ax = plt.subplots(figsize=(7, 7), subplot_kw={"polar": True})
    for name, summary in series.items():
        values = [
            summary["average"][k] if group == "average" else summary["dice"][group].get(k, float("nan"))
            for group, k in axes
        ]
        values = [0.0 if math.isnan(v) else v for v in values]
        ax.plot(angles + angles[:1], values + values[:1], label=name)
        ax.fill(angles + angles[:1], values + values[:1], alpha=0.1)
    ax.set_xticks(angles)
    ax.set_xticklabels([k.replace("_level", " avg") for _, k in axes], fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="lower right", bbox_to_anchor=(1.25, -0.05), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _gate_heatmap(summary: Mapping, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    usage = summary["gate_usage"]["by_input_modality"]
    if not usage:
        return
    rows = list(usage)
    data = np.array([usage[r] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 1 + 0.5 * len(rows)))
    im = ax.imshow(data, vmin=0, vmax=max(0.5, float(data.max())), cmap="viridis")
    ax.set_xticks(range(data.shape[1]), summary["gate_usage"]["experts"])
    ax.set_yticks(range(len(rows)), rows)
    ax.set_xlabel("expert")
    ax.set_ylabel("input modality")
    for i in range(data.shape[0]):
        for j in range(data.shape[1]):
            ax.text(j, i, f"{data[i, j]:.2f}", ha="center", va="center", color="w", fontsize=8)
    fig.colorbar(im, ax=ax, label="share of |gate weight|")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def report(
    output_dir: str | Path, items: Sequence[Mapping], modalities: Sequence[str] = MODALITIES, name: str = "MoME"
) -> dict:
    """Join the evaluator's per-case CSVs in ``output_dir`` with the datalist ``items``; write tables and plots."""
    out = Path(output_dir)
    dice = _read_raw(out / "val_mean_dice_raw.csv")
    if not dice:
        raise FileNotFoundError(f"no per-case Dice in {out / 'val_mean_dice_raw.csv'}: did the evaluator run?")
    hd95 = _read_raw(out / "val_hd95_raw.csv")
    gate = _read_raw(out / "gate_usage_raw.csv")
    experts = _read_raw(out / "expert_dice_raw.csv")
    cases = []
    for item in items:
        key = str(Path(item["image"]).resolve())
        if key not in dice:
            raise KeyError(f"{item['image']} was not evaluated (no row in {out / 'val_mean_dice_raw.csv'})")
        cases.append(
            {
                "image": item["image"],
                "subject": item.get("subject"),
                "dataset": item.get("dataset", "unknown"),
                "modality": item.get("modality"),
                "lesion_type": item.get("lesion_type"),
                "dice": dice[key][0],
                "hd95": hd95.get(key, [float("nan")])[0],
                "gate_usage": gate.get(key),
                "expert_dice": experts.get(key),
            }
        )
    with (out / "cases.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["image", "subject", "dataset", "modality", "lesion_type", "dice", "hd95"]
            + [f"gate_{m}" for m in modalities]
            + [f"dice_expert_{m}" for m in modalities]
        )
        for c in cases:
            writer.writerow(
                [c["image"], c["subject"], c["dataset"], c["modality"] or "unknown", c["lesion_type"]]
                + [f"{c['dice']:.4f}", f"{c['hd95']:.2f}"]
                + [f"{v:.4f}" for v in (c["gate_usage"] or [float("nan")] * len(modalities))]
                + [f"{v:.4f}" for v in (c["expert_dice"] or [float("nan")] * len(modalities))]
            )
    summary = summarise(cases, modalities)
    summary["expert_dice_by_input_modality"] = {
        m: [float(x) for x in np.nanmean([c["expert_dice"] for c in cases if (c["modality"] or "unknown") == m], 0)]
        for m in {c["modality"] or "unknown" for c in cases if c["expert_dice"]}
    }
    save_json(summary, out / "summary.json")
    radar_chart({name: summary}, out / "radar.png", title=f"{name}: Dice ({len(cases)} images)")
    _gate_heatmap(summary, out / "gate_usage.png")
    print(json.dumps({"dice": summary["dice"], "average": summary["average"]}, indent=1))
    return summary
