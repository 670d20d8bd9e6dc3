"""The released model's Dice on fresh phantoms (a seed never used to train it), by the evaluation workflow.

Every (dataset, sequence) task is reported, with the goals the project set: task-level average >= 0.60, and
>= 0.50 on each task whose lesion is visible on its sequence (FLAIR, T2, T1c, DWI).

    python benchmarks/bench_released.py [--weights bundle/models/model.pt] [--subjects 3] [--json OUT] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.timing import machine, write_results
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
SMOKE_PROFILES = ("isles2022", "wmh2017")  #: the smoke run checks the harness on two small datasets


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
    )
    return json.loads((work / "eval" / "summary.json").read_text())


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
    }
    for task, dice in tasks.items():
        print(f"{task:24s} {dice:.3f}")
    print(f"task-level average {summary['average']['task_level']:.3f} (goal {GOAL_AVERAGE})")
    write_results(args.json, result)


if __name__ == "__main__":
    main()
