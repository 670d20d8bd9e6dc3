"""The whole pipeline on the embedded phantoms, for a newcomer: ``make demo`` runs this.

fresh phantoms (2 mm, a seed the released model never saw) -> datalist -> evaluation of the released model
(``bundle/models/model.pt``) -> a short fine-tune from it (same training config, curriculum logged) -> evaluation
again -> inference on one held-out image in its own space -> ``<out>/report/``: Dice tables (released vs
fine-tuned), radar, gate heatmap, training curve, a montage, ``REPORT.md``.

Every step is the bundle's own command line (printed before it runs), so the report doubles as a recipe.
``python -m demo --out demo_output [--subjects 4] [--epochs 3] [--weights models/model.pt]`` (``make demo``).
"""

from __future__ import annotations

import argparse
import json
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

from demo.commands import BUNDLE, bundle_command
from demo.studies import studies_from_items

ROOT = BUNDLE.parent
RELEASED = BUNDLE / "models" / "model.pt"


#: log lines worth a line on the terminal while a step runs (the full log goes to demo.log)
PROGRESS = re.compile(
    r"Iter: \d*0/\d+ -- train_loss|curriculum expert weight|Key metric|val_mean_dice|wrote |Engine run finished"
    r"|images? (evaluated|written)|saved "
)


def run(cmd: list[str], log: Path, steps: list[dict], title: str) -> None:
    shown = " ".join(shlex.quote(c) for c in cmd).replace(sys.executable, "python")
    print(f"\n== {title}\n$ {shown}", flush=True)
    start = time.monotonic()
    with log.open("a") as f:
        f.write(f"\n== {title}\n$ {shown}\n")
        f.flush()
        proc = subprocess.Popen(cmd, cwd=BUNDLE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for line in proc.stdout:
            f.write(line)
            if PROGRESS.search(line):
                print(f"   [{time.monotonic() - start:5.0f} s] {line.split(' - ')[-1].strip()[:110]}", flush=True)
        returncode = proc.wait()
    seconds = time.monotonic() - start
    steps.append({"step": title, "command": shown, "seconds": round(seconds, 1)})
    if returncode:
        tail = log.read_text().splitlines()[-25:]
        lines = "\n".join(tail)
        raise SystemExit(f"step failed ({title}), exit code {returncode}; last lines of {log}:\n{lines}")
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


def _curve(log: Path, out: Path) -> int:
    """Training-loss curve (per iteration) and curriculum weight (per epoch) of the fine-tune, from its log."""
    import re

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    text = log.read_text().split("== fine-tune", 1)[-1].split("\n== ", 1)[0]
    losses = [float(v) for v in re.findall(r"Iter: \d+/\d+ -- train_loss: ([0-9.eE+-]+|nan)", text)]
    weights = [float(v) for v in re.findall(r"curriculum expert weight ([0-9.]+)", text)]
    fig, ax = plt.subplots(figsize=(7, 3.5))
    ax.plot(range(1, len(losses) + 1), losses, lw=1, label="training loss")
    ax.set_xlabel("iteration")
    ax.set_ylabel("loss")
    if weights:
        per_epoch = max(1, len(losses) // len(weights))
        twin = ax.twinx()
        twin.step([e * per_epoch for e in range(len(weights))], weights, where="post", color="tab:orange")
        twin.set_ylabel("curriculum expert weight", color="tab:orange")
        twin.set_ylim(0, 1.05)
    ax.set_title("fine-tuning the released model")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return len(losses)


def _report(report: Path, before: dict, after: dict, steps: list[dict], held_out: dict, args) -> None:
    lines = [
        "# MoME demo report",
        "",
        f"Fresh synthetic phantoms (2 mm, {args.subjects} subjects per imitated dataset, seed {args.seed}: never seen "
        "in training) segmented by the released model `bundle/models/model.pt`, then by the same model after a "
        f"short fine-tune ({args.epochs} epochs x {args.iterations} iterations on this set's training split, the "
        "curriculum as in training). Phantoms say that the pipeline and the model work; they are not patients.",
        "",
        "## Dice on the test split (each image's own grid)",
        "",
        "| group | value | released | fine-tuned |",
        "|---|---|---|---|",
    ]
    for group in ("dataset", "modality", "lesion_type", "task"):
        for key, value in before["dice"].get(group, {}).items():
            tuned = after["dice"].get(group, {}).get(key, float("nan"))
            lines.append(f"| {group} | {key} | {value:.3f} | {tuned:.3f} |")
    for key, value in before["average"].items():
        lines.append(
            f"| average | {key.replace('_', ' ')} | {value:.3f} | {after['average'].get(key, float('nan')):.3f} |"
        )
    lines += [
        "",
        f"Images: {before['n_cases']}. Per case: `released/cases.csv`, `cases.csv`. Plots: `radar.png`, "
        "`gate_usage.png` (fine-tuned; the released model's in `released/`), `training_curve.png`, `held_out.png`.",
        "",
        "## Expert-specialisation index (share of gate weight on the matching expert, fine-tuned)",
        "",
    ]
    for modality, share in after.get("specialisation_index", {}).items():
        lines.append(f"- {modality}: {share:.3f} (uniform would be {1 / len(after['gate_usage']['experts']):.3f})")
    lines += [
        "",
        "## Held-out inference",
        "",
        f"`{held_out['image']}` ({held_out['dataset']}, {held_out['modality'] or 'unknown'}) -> `prediction/` in "
        "the image's own space; `held_out.png`: image, reference (green) and prediction (red).",
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
    parser.add_argument("--weights", type=Path, default=RELEASED, help="the model to evaluate and fine-tune")
    parser.add_argument("--subjects", type=int, default=4, help="phantom subjects per imitated dataset")
    parser.add_argument("--epochs", type=int, default=3, help="fine-tuning epochs")
    parser.add_argument("--iterations", type=int, default=25, help="iterations per fine-tuning epoch")
    parser.add_argument("--seed", type=int, default=0, help="phantom seed (the released model never saw seed 0)")
    args = parser.parse_args(argv)
    if not args.weights.is_file():
        raise SystemExit(f"no weights at {args.weights}: the released model ships in git (bundle/models/model.pt)")
    out = args.out.resolve()
    if out.exists():
        shutil.rmtree(out)  # a demo starts clean; everything in it is re-made
    out.mkdir(parents=True)
    data, models, report = out / "data", out / "models", out / "report"
    log, steps = out / "demo.log", []
    started = time.monotonic()

    phantoms = [sys.executable, "-m", "phantoms", "--out", str(data), "--subjects", str(args.subjects)]
    run([*phantoms, "--spacing", "2", "--seed", str(args.seed)], log, steps, "phantoms")
    split = ["--val", "0.15", "--test", "0.2", "--seed", str(args.seed)]
    datalist = [sys.executable, "-m", "scripts.data.datalist", "--out", str(data / "datalist.json")]
    run([*datalist, "--phantoms", str(data), *split], log, steps, "datalist")
    released = {"dataset_dir": str(data), "ckpt_dir": str(args.weights.resolve().parent)}
    released["model_file"] = args.weights.name
    evaluate = ["train.json", "evaluate.json"]
    run(bundle_command(evaluate, output_dir=str(report / "released"), **released), log, steps, "evaluate released")
    run(
        bundle_command(
            ["train.json"],
            dataset_dir=str(data),
            ckpt_dir=str(models),
            output_dir=str(out / "train"),
            init_from=str(args.weights.resolve()),
            epochs=args.epochs,
            iterations_per_epoch=args.iterations,
            val_interval=args.epochs,
            progress_bar=False,
        ),
        log,
        steps,
        "fine-tune",
    )
    tuned = {"dataset_dir": str(data), "ckpt_dir": str(models)}
    run(bundle_command(evaluate, output_dir=str(report), **tuned), log, steps, "evaluate fine-tuned")

    test = json.loads((data / "datalist.json").read_text())["test"]
    held_out = next(i for i in test if i["dataset"] == "BraTS2021" and i["modality"] == "FLAIR")
    image = data / held_out["image"]
    prediction_dir = report / "prediction"
    infer = bundle_command(["inference.json"], input=str(image), ckpt_dir=str(models), output_dir=str(prediction_dir))
    run(infer, log, steps, "inference")
    prediction = prediction_dir / image.name.replace(".nii.gz", "_seg.nii.gz")
    scan = json.loads(prediction_dir.joinpath(image.name.replace(".nii.gz", "_report.json")).read_text())
    flags = ", ".join(f["flag"] for f in scan["qc_flags"]) or "none"
    print(
        f"   held-out scan: {scan['n_lesions']} lesions, {scan['total_volume_ml']:.1f} ml, gate relied on "
        f"{scan['relied_on']}, QC flags: {flags} -> {prediction_dir / 'cohort.csv'}",
        flush=True,
    )
    _montage(image, prediction, data / held_out["label"], report / "held_out.png")
    iterations = _curve(log, report / "training_curve.png")
    print(f"   fine-tune: {iterations} iterations logged -> {report / 'training_curve.png'}", flush=True)
    before = json.loads((report / "released" / "summary.json").read_text())
    after = json.loads((report / "summary.json").read_text())
    _report(report, before, after, steps, held_out, args)
    studies_from_items(test, data, out / "studies")
    for name, summary in (("released", before), ("fine-tuned", after)):
        print(f"   {name}: task-level average Dice {summary['average'].get('task_level', float('nan')):.3f}")
    print(f"\ndemo finished in {(time.monotonic() - started) / 60:.1f} min; report: {report / 'REPORT.md'}")


if __name__ == "__main__":
    main()
