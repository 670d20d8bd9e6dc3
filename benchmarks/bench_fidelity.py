"""Does MoME do what the paper claims? Four models at an equal training budget on the phantom benchmark.

- ``mome``: MoME with the curriculum (``(1 - e/E)^2``);
- ``mome_no_curriculum``: the same network trained on the fused loss only;
- ``universal_unet``: one expert-sized U-Net trained on every image (the paper's "single nnU-Net");
- ``task_unets``: one U-Net per modality, each on its own modality's images, sharing the budget; at test time each
  image goes to the U-Net of its (known) modality.

Budget: the same number of iterations x batch for every model (the task U-Nets split it between the sequences that
have training images). The CPU overlay (``configs/cpu.json``: small preset, 2 mm, 32^3 patches), no validation-
based selection (final weights). Every number comes from the bundle's own evaluation (``configs/evaluate.json``,
native grid). One profile is held out of training entirely and reported as "unseen". Reported: Dice per (dataset,
modality), per lesion type, task/dataset/case averages, a radar chart of all models, and the expert-specialisation
index (share of gate weight on the matching expert).

    python benchmarks/bench_fidelity.py --out benchmarks/out/fidelity [--smoke] [--iterations 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from benchmarks.timing import machine
from demo.commands import BUNDLE, bundle_command, run_bundle
from scripts.atomic import save_json
from scripts.evaluation import radar_chart, read_cases, summarise
from scripts.mome import MODALITIES

ROOT = BUNDLE.parent

HOLDOUT = "MSSEG2016"  #: the dataset kept out of training, reported as "unseen"
#: The smoke run: two one-sequence datasets (one held out), three test images in all, resampled to 3 mm.
SMOKE = {"profiles": ["isles2022", "atlas2"], "holdout": "ATLAS2", "spacing": 3.0}
#: On top of configs/cpu.json: no validation-based selection (the final weights are evaluated); the
#: training outputs (TensorBoard) go with the weights.
COMMON = {"val_interval": 100000, "progress_bar": False, "cache_rate": 1.0}


def _run(configs: list[str], log: Path, **knobs: object) -> float:
    """One bundle workflow in this process (``demo.commands.run_bundle``: the CPU overlay, the same knobs as on the
    command line); returns its wall time."""
    start = time.monotonic()
    with log.open("a") as f:
        f.write(f"$ {' '.join(bundle_command(configs, **knobs)[1:])}\n")
    run_bundle(configs, log=log, **knobs)
    return time.monotonic() - start


def _dirs(folder: Path) -> dict[str, str]:
    return {"ckpt_dir": str(folder), "output_dir": str(folder / "train")}


def train_all(
    data: Path, models: Path, log: Path, epochs: int, iterations: int, batch: int, lr: float, **extra: object
) -> dict:
    """Train the four variants; returns seconds per variant. Weights: ``models/<variant>/`` training states."""
    knobs = {**COMMON, "dataset_dir": str(data), "epochs": epochs, "batch_size": batch, "learning_rate": lr, **extra}
    mome, unet = ["train.json"], ["train.json", "train_experts.json"]
    seconds = {
        "mome": _run(mome, log, **_dirs(models / "mome"), iterations_per_epoch=iterations, **knobs),
        "mome_no_curriculum": _run(
            mome,
            log,
            **_dirs(models / "mome_no_curriculum"),
            iterations_per_epoch=iterations,
            curriculum_power=None,
            **{"loss#expert_weight": 0.0},
            **knobs,
        ),
        "universal_unet": _run(
            unet, log, expert=None, **_dirs(models / "universal_unet"), iterations_per_epoch=iterations, **knobs
        ),
    }
    present = _training_modalities(data)
    share = max(1, iterations // len(present))
    seconds["task_unets"] = sum(
        _run(unet, log, expert=m, **_dirs(models / "task_unets"), iterations_per_epoch=share, **knobs) for m in present
    )
    return seconds


def _training_modalities(data: Path) -> list[str]:
    """The sequences with training images: one task-specific U-Net each."""
    from scripts.data.datalist import load

    found = {i.get("modality") for i in load(data / "datalist.json", "training")}
    return [m for m in MODALITIES if m in found]


def evaluate(data: Path, models: Path, out: Path, log: Path, **extra: object) -> dict[str, list[dict]]:
    """Per model: the case rows of the bundle's own evaluation (``configs/evaluate.json``) on the test split.

    The task U-Nets are one evaluation per modality, each on that modality's test images (routing by the known
    modality); their rows are pooled.
    """
    common = {"dataset_dir": str(data), "eval_split": "test", "num_workers": 0, **extra}
    runs = {
        "mome": (
            ["train.json", "evaluate.json"],
            {"ckpt_dir": models / "mome", "model_file": "checkpoint.pt", "tsne": True},
        ),
        "mome_no_curriculum": (
            ["train.json", "evaluate.json"],
            {"ckpt_dir": models / "mome_no_curriculum", "model_file": "checkpoint.pt"},
        ),
        "universal_unet": (
            ["train.json", "train_experts.json", "evaluate.json"],
            {
                "ckpt_dir": models / "universal_unet",
                "expert": None,
                "model_file": "checkpoint_universal.pt",
                "tsne": True,
            },
        ),
    }
    for m in _training_modalities(data):
        runs[f"task_unets/{m}"] = (
            ["train.json", "train_experts.json", "evaluate.json"],
            {"ckpt_dir": models / "task_unets", "expert": m, "eval_modality": m, "model_file": f"checkpoint_{m}.pt"},
        )
    rows: dict[str, list[dict]] = {}
    for name, (configs, knobs) in runs.items():
        where = out / "eval" / name
        knobs = {k: str(v) if isinstance(v, Path) else v for k, v in knobs.items()}
        _run(configs, log, output_dir=str(where), **common, **knobs)
        rows.setdefault(name.split("/")[0], []).extend(read_cases(where / "cases.csv"))
    return rows


def report(rows: dict, out: Path, holdout: str = HOLDOUT) -> dict:
    summary = {}
    for name, cases in rows.items():
        seen = [c for c in cases if c["dataset"] != holdout]
        unseen = [c for c in cases if c["dataset"] == holdout]
        summary[name] = {"seen": summarise(seen), "unseen": summarise(unseen) if unseen else None}
        if not name.startswith("mome"):
            del summary[name]["seen"]["expert_dice_by_input_modality"]
    radar_chart({n: s["seen"] for n, s in summary.items()}, out / "radar_seen.png", title="Dice, seen datasets")
    tsne(out)
    return summary


def tsne(out: Path) -> None:
    """The paper's figure 2b: the gate's bottleneck features of MoME beside a universal U-Net's, by t-SNE."""
    import numpy as np

    from scripts.features import tsne_figure

    series = {}
    for name, label in (("mome", "MoME (gate)"), ("universal_unet", "universal U-Net")):
        path = out / "eval" / name / "bottleneck_features.npz"
        if path.is_file():
            z = np.load(path)
            series[label] = (z["features"], z["modality"], z["lesion_type"])
    if len(series) == 2 and min(len(f) for f, _, _ in series.values()) >= 3:
        tsne_figure(series, out / "tsne.png")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/fidelity")
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=50, help="iterations per epoch (budget = epochs x this)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-2, help="from scratch: nnU-Net's 1e-2 (paper 1e-3 fine-tunes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="2 datasets, 2 subjects each, 1 epoch of 2 iterations")
    args = parser.parse_args(argv)
    profiles, holdout = None, HOLDOUT
    if args.smoke:
        args.subjects, args.epochs, args.iterations = 2, 1, 2
        profiles, holdout = SMOKE["profiles"], SMOKE["holdout"]
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data, models, log = out / "data", out / "models", out / "train.log"
    start = time.monotonic()
    if not (data / "datalist.json").exists():
        from phantoms import generate
        from scripts.data.datalist import main as datalist

        generate(data, profiles=profiles, subjects=args.subjects, spacing=2, seed=args.seed)
        test = "0.5" if args.smoke else "0.25"
        datalist(
            [
                "--out",
                str(data / "datalist.json"),
                "--phantoms",
                str(data),
                "--val",
                "0",
                "--test",
                test,
                "--holdout",
                holdout,
                "--seed",
                str(args.seed),
            ]
        )
    extra = {"spacing": SMOKE["spacing"]} if args.smoke else {}
    seconds = train_all(data, models, log, args.epochs, args.iterations, args.batch, args.lr, **extra)
    rows = evaluate(data, models, out, log, **extra)
    summary = report(rows, out, holdout)
    results = {
        "machine": machine(),
        "smoke": args.smoke,
        "budget": {
            "epochs": args.epochs,
            "iterations_per_epoch": args.iterations,
            "batch": args.batch,
            "patch": 32,
            "learning_rate": args.lr,
            "subjects_per_profile": args.subjects,
            "seed": args.seed,
            "holdout": holdout,
        },
        "train_seconds": seconds,
        "summary": summary,
        "cases": rows,
        "wall_seconds": time.monotonic() - start,
    }
    save_json(results, out / "fidelity.json")
    for name, s in summary.items():
        a = s["seen"]["average"]
        unseen = s["unseen"]["average"]["case_level"] if s["unseen"] else float("nan")
        print(
            f"{name:20s} task {a['task_level']:.3f} dataset {a['dataset_level']:.3f} case {a['case_level']:.3f}"
            f"  unseen {unseen:.3f}"
        )
    return results


if __name__ == "__main__":
    main()
