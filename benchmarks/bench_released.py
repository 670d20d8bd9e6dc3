"""The released model's Dice on fresh phantoms (a seed never used to train it), by the evaluation workflow.

Every (dataset, sequence) task is reported, with the goals the project set: task-level average >= 0.60, and
>= 0.50 on each task whose lesion is visible on its sequence (FLAIR, T2, T1c, DWI); lesion-wise scores beside.

Then the per-scan report's cost, side by side on the same test images (interleaved, medians): inference.json
writing the label only (no expert outputs, no report) vs the label, the report and the uncertainty map, from one
forward pass (goal: <= 10 % more time per scan). The reports' disagreement scores and QC flags on these
in-distribution images are what the QC limits are set against.

    python benchmarks/bench_released.py [--weights bundle/models/model.pt] [--subjects 3] [--json OUT] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

from benchmarks.timing import interleaved, machine, write_results
from demo.commands import BUNDLE, run_bundle

VISIBLE = ("FLAIR", "T2", "T1c", "DWI")
GOAL_AVERAGE, GOAL_VISIBLE = 0.60, 0.50


#: phantom profile -> its dataset; all held out: the whole fresh set is the test split
DATASETS = {
    "atlas2": "ATLAS2",
    "brats2021": "BraTS2021",
    "brats_mets": "BraTS2023-MET",
    "isles2022": "ISLES2022",
    "msseg2016": "MSSEG2016",
    "wmh2017": "WMH2017",
}
SMOKE_PROFILES = ("wmh2017",)  #: the smoke run checks the harness on one small dataset (two sequences)


def evaluate(weights: Path, subjects: int, seed: int, work: Path, profiles: tuple[str, ...] = tuple(DATASETS)) -> dict:
    from phantoms import generate
    from scripts.data.datalist import main as datalist_main

    data = work / "data"
    generate(data, profiles=list(profiles), subjects=subjects, spacing=2, seed=seed, workers=2)
    split = ["--val", "0", "--test", "0", "--seed", str(seed), "--holdout", *(DATASETS[p] for p in profiles)]
    datalist_main(["--out", str(data / "datalist.json"), "--phantoms", str(data), *split])
    run_bundle(
        ["train.json", "evaluate.json"],
        log=work / "evaluate.log",
        dataset_dir=str(data),
        ckpt_dir=str(weights.resolve().parent),
        model_file=weights.name,
        output_dir=str(work / "eval"),
        tsne=True,
    )
    return json.loads((work / "eval" / "summary.json").read_text())


def _pipeline(weights: Path, output_dir: Path, full: bool):
    """One scan through inference.json's preprocessing, inferer and postprocessing: ``full`` as shipped (label,
    report, uncertainty map), else the label alone (the inferer without expert outputs; no report)."""
    import torch
    from monai.bundle import ConfigParser
    from monai.data import decollate_batch, list_data_collate

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser.update({"bundle_root": str(BUNDLE), "ckpt_path": str(weights), "output_dir": str(output_dir)})
    parser.update({"uncertainty": full, "inferer#with_aux": full})
    pre, net = parser.get_parsed_content("preprocessing"), parser.get_parsed_content("network")
    inferer, post = parser.get_parsed_content("inferer"), parser.get_parsed_content("postprocessing")
    if not full:
        keep = ("SplitOutputsd", "Invertd", "AsDiscreted", "SaveImaged")
        post.transforms = tuple(t for t in post.transforms if type(t).__name__ in keep)[:-1]  # no uncertainty map
    net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True)["model"])
    net.eval()

    def run(image: str) -> dict:
        batch = list_data_collate([pre({"image": image})])
        with torch.no_grad():
            batch["pred"] = inferer(batch["image"], net)
        return post(decollate_batch(batch)[0])

    return run


def report_overhead(weights: Path, images: list[str], work: Path, reps: int, warmup: int, wait_s: float = 20) -> dict:
    label, full = _pipeline(weights, work / "label", False), _pipeline(weights, work / "full", True)
    names = ("label only", "label + report + uncertainty")
    per_image = [
        interleaved({names[0]: lambda i=i: label(i), names[1]: lambda i=i: full(i)}, reps, warmup, wait_s=wait_s)
        for i in images
    ]
    medians = {k: [r[k]["median_s"] for r in per_image] for k in per_image[0]}
    ratios = [f / max(lo, 1e-9) for lo, f in zip(*medians.values(), strict=True)]
    reports = [full(i)["report"] for i in images]
    return {
        "images": len(images),
        "reps": reps,
        "median_s": {k: float(sorted(v)[len(v) // 2]) for k, v in medians.items()},
        "ratio_per_image": ratios,
        "median_ratio": float(sorted(ratios)[len(ratios) // 2]),
        "uncertainty": sorted(float(r["uncertainty"]) for r in reports),
        "qc_flags": sorted(f["flag"] for r in reports for f in r["qc_flags"]),
        "brain_z": [min(r["brain_z"][0] for r in reports), max(r["brain_z"][1] for r in reports)],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=BUNDLE / "models" / "model.pt")
    parser.add_argument("--subjects", type=int, default=3, help="phantom subjects per dataset (seed 0), all tested")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    subjects = 1 if args.smoke else args.subjects
    with tempfile.TemporaryDirectory() as tmp:
        summary = evaluate(args.weights, subjects, 0, Path(tmp), SMOKE_PROFILES if args.smoke else tuple(DATASETS))
        items = json.loads((Path(tmp) / "data" / "datalist.json").read_text())["test"]
        images = [str(Path(tmp) / "data" / i["image"]) for i in items]
        images = images[:1] if args.smoke else images[::8]  # every dataset, an eighth of the images
        if (work_tsne := Path(tmp) / "eval" / "tsne.png").is_file() and args.json:  # beside the JSON, for the docs
            args.json.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(work_tsne, args.json.with_name("released_tsne.png"))
        reps, warmup, wait_s = (1, 0, 0) if args.smoke else (5, 1, 20)
        overhead = report_overhead(args.weights, images, Path(tmp), reps, warmup, wait_s)
    tasks = summary["dice"]["task"]
    visible = {t: d for t, d in tasks.items() if t.split("/")[-1] in VISIBLE}
    result = {
        "machine": machine(),
        "smoke": args.smoke,
        "weights": str(args.weights),
        "subjects_per_dataset": subjects,
        "n_cases": summary["n_cases"],
        "task_dice": tasks,
        "average": summary["average"],
        "goal_average_met": summary["average"]["task_level"] >= GOAL_AVERAGE,
        "visible_below_goal": sorted(t for t, d in visible.items() if not d >= GOAL_VISIBLE),
        "lesion_wise": summary["lesion_wise"],
        "by_size_bin": summary["by_size_bin"],
        "report_overhead": overhead,
    }
    for task, dice in tasks.items():
        print(f"{task:24s} {dice:.3f}")
    print(f"task-level average {summary['average']['task_level']:.3f} (goal {GOAL_AVERAGE})")
    print(f"report + uncertainty map: x{overhead['median_ratio']:.3f} the time of the label alone (median)")
    write_results(args.json, result)


if __name__ == "__main__":
    main()
