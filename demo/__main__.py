"""The whole pipeline on the embedded phantoms, for a newcomer: ``make demo`` runs this.

phantoms (2 mm) -> datalist -> short MoME training (small preset) -> evaluation -> inference on one held-out
image -> ``<out>/report/`` with the Dice tables, plots, the prediction and ``REPORT.md``.

Every step is the bundle's own command line (printed before it runs), so the report doubles as a recipe.
``python -m demo --out demo_output [--subjects 6] [--epochs 20]`` (``make demo``).
The model is trained on synthetic phantoms for a few minutes: its numbers say the pipeline works, not how
MoME performs on patients.
"""

from __future__ import annotations

import argparse
import json
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from demo.commands import BUNDLE, bundle_command
from demo.studies import studies_from_items

ROOT = BUNDLE.parent


def run(cmd: list[str], log: Path, steps: list[dict], title: str) -> None:
    shown = " ".join(shlex.quote(c) for c in cmd).replace(sys.executable, "python")
    print(f"\n== {title}\n$ {shown}", flush=True)
    start = time.monotonic()
    with log.open("a") as f:
        f.write(f"\n== {title}\n$ {shown}\n")
        f.flush()
        result = subprocess.run(cmd, cwd=BUNDLE, stdout=f, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    steps.append({"step": title, "command": shown, "seconds": round(seconds, 1)})
    if result.returncode:
        tail = log.read_text().splitlines()[-25:]
        lines = "\n".join(tail)
        raise SystemExit(f"step failed ({title}), exit code {result.returncode}; last lines of {log}:\n{lines}")
    print(f"   done in {seconds:.0f} s", flush=True)


def _montage(image: Path, prediction: Path, label: Path | None, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import nibabel as nib
    import numpy as np

    img = np.asarray(nib.load(image).dataobj, dtype=np.float32)
    pred = np.asarray(nib.load(prediction).dataobj) > 0
    truth = np.asarray(nib.load(label).dataobj) > 0 if label else None
    ref = truth if truth is not None and truth.any() else pred
    centre = [int(round(c.mean())) for c in np.nonzero(ref)] if ref.any() else [s // 2 for s in img.shape]
    fig, axes = plt.subplots(1, 3, figsize=(12, 4.5))
    for ax, axis in zip(axes, range(3), strict=True):
        take = [slice(None)] * 3
        take[axis] = centre[axis]
        ax.imshow(np.rot90(img[tuple(take)]), cmap="gray")
        if truth is not None:
            ax.contour(np.rot90(truth[tuple(take)]), levels=[0.5], colors="lime", linewidths=1)
        ax.contour(np.rot90(pred[tuple(take)]), levels=[0.5], colors="red", linewidths=1)
        ax.axis("off")
    fig.suptitle(f"{image.name}: prediction (red) vs reference (green), native grid")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def _report(report: Path, summary: dict, steps: list[dict], held_out: dict, args: argparse.Namespace) -> None:
    lines = [
        "# MoME demo report",
        "",
        f"Synthetic phantoms (2 mm, {args.subjects} subjects per imitated dataset), small preset, "
        f"{args.epochs} epochs x {args.iterations} iterations on CPU. The numbers show that the pipeline works end to "
        "end; a model trained for minutes on phantoms says nothing about performance on patient data.",
        "",
        "## Dice on the test split",
        "",
        "| group | value | Dice |",
        "|---|---|---|",
    ]
    for group in ("dataset", "modality", "lesion_type", "task"):
        for key, value in summary["dice"].get(group, {}).items():
            lines.append(f"| {group} | {key} | {value:.3f} |")
    for key, value in summary["average"].items():
        lines.append(f"| average | {key.replace('_', ' ')} | {value:.3f} |")
    lines += ["", f"Images: {summary['n_cases']}. Per case: `cases.csv`. Plots: `radar.png`, `gate_usage.png`.", ""]
    lines += ["## Expert-specialisation index (share of gate weight on the matching expert)", ""]
    for modality, share in summary.get("specialisation_index", {}).items():
        lines.append(f"- {modality}: {share:.3f} (uniform would be {1 / len(summary['gate_usage']['experts']):.3f})")
    lines += [
        "",
        "## Held-out inference",
        "",
        f"`{held_out['image']}` ({held_out['dataset']}, "
        f"{held_out['modality'] or 'unknown'}) -> `prediction/` in the image's own space; see `held_out.png`.",
        "",
        "## Steps",
        "",
        "| step | seconds | command |",
        "|---|---|---|",
    ]
    for s in steps:
        lines.append(f"| {s['step']} | {s['seconds']} | `{s['command']}` |")
    (report / "REPORT.md").write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "demo_output")
    parser.add_argument("--subjects", type=int, default=6, help="phantom subjects per imitated dataset")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=25, help="iterations per epoch")
    parser.add_argument("--patch", type=int, default=32, help="training patch edge (multiple of 16)")
    parser.add_argument("--batch", type=int, default=4, help="training batch size")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)  # a demo starts clean; everything in it is re-made
    out.mkdir(parents=True)
    data, models, report = out / "data", out / "models", out / "report"
    log, steps = out / "demo.log", []
    started = time.monotonic()

    run(
        [
            sys.executable,
            "-m",
            "phantoms",
            "--out",
            str(data),
            "--subjects",
            str(args.subjects),
            "--spacing",
            "2",
            "--seed",
            str(args.seed),
        ],
        log,
        steps,
        "phantoms",
    )
    run(
        [
            sys.executable,
            "-m",
            "scripts.data.datalist",
            "--out",
            str(data / "datalist.json"),
            "--phantoms",
            str(data),
            "--val",
            "0.15",
            "--test",
            "0.2",
            "--seed",
            str(args.seed),
        ],
        log,
        steps,
        "datalist",
    )
    knobs = {"dataset_dir": str(data), "ckpt_dir": str(models), "num_workers": 2}
    run(
        bundle_command(
            ["train.json"],
            epochs=args.epochs,
            iterations_per_epoch=args.iterations,
            patch_size=[args.patch] * 3,
            batch_size=args.batch,
            val_interval=args.epochs,
            progress_bar=False,
            output_dir=str(out / "train"),
            **knobs,
        ),
        log,
        steps,
        "train",
    )
    run(bundle_command(["train.json", "evaluate.json"], output_dir=str(report), **knobs), log, steps, "evaluate")

    test = json.loads((data / "datalist.json").read_text())["test"]
    held_out = next(i for i in test if i["dataset"] == "BraTS2021" and i["modality"] == "FLAIR")
    image = data / held_out["image"]
    run(
        bundle_command(
            ["inference.json"], input=str(image), ckpt_dir=str(models), output_dir=str(report / "prediction")
        ),
        log,
        steps,
        "inference",
    )
    prediction = report / "prediction" / image.name.replace(".nii.gz", "_seg.nii.gz")
    _montage(image, prediction, data / held_out["label"], report / "held_out.png")
    summary = json.loads((report / "summary.json").read_text())
    _report(report, summary, steps, held_out, args)
    studies_from_items(test, data, out / "studies")
    print(f"\ndemo finished in {(time.monotonic() - started) / 60:.1f} min; report: {report / 'REPORT.md'}")


if __name__ == "__main__":
    main()
