"""MoME+ over all 15 availability combinations of T1, T1c, T2, FLAIR, on fresh phantom cases (a seed never used to
train), by the bundle's evaluation (train.json + train_plus.json + evaluate.json + evaluate_plus.json).

Each combination is one evaluation of the cases that have all of its sequences, segmented from those alone; the
table is Dice by combination and lesion type (the mean over cases, computed by the evaluation), with the heatmap
beside the JSON. ``--baseline`` adds the zero-filled multi-channel U-Net (train_plus_baseline.json) on the same
cases and combinations. Not yet here: the single-sequence MoME on the same cases.

    python benchmarks/bench_plus.py --weights MODEL_PLUS.pt [--baseline ZERO_FILL_UNET.pt] [--subjects 3]
        [--json OUT] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.bench_released import DATASETS
from benchmarks.timing import machine, write_results
from demo.commands import run_bundle

#: phantom profiles with several of the four sequences (ISLES is DWI-only, ATLAS T1-only)
PROFILES = ("brats2021", "brats_mets", "msseg2016", "wmh2017")
SMOKE_PROFILES = ("brats2021",)
CONFIGS = ["train.json", "train_plus.json", "evaluate.json", "evaluate_plus.json"]


def combinations(sequences: tuple[str, ...]) -> list[list[str]]:
    """The 2^K - 1 non-empty subsets, in the order of ``scripts.mome_plus.all_masks``."""
    from scripts.mome_plus import all_masks

    return [[s for s, a in zip(sequences, mask.tolist(), strict=True) if a] for mask in all_masks(len(sequences))]


def cases(work: Path, subjects: int, seed: int, profiles: tuple[str, ...], sequences: tuple[str, ...]) -> Path:
    from phantoms import generate
    from scripts.data.datalist import main as datalist_main

    data = work / "data"
    generate(data, profiles=list(profiles), subjects=subjects, spacing=2, seed=seed, workers=2)
    held_out = ["--val", "0", "--test", "0", "--holdout", *(DATASETS[p] for p in profiles)]  # all of it: the test split
    args = ["--out", str(data / "datalist_cases.json"), "--phantoms", str(data), *held_out]
    datalist_main([*args, "--seed", str(seed), "--cases", *sequences])
    return data


def evaluate(weights: Path, data: Path, keep: list[str], out: Path, configs: list[str] = CONFIGS) -> dict:
    run_bundle(
        configs,
        log=out.with_suffix(".log"),
        dataset_dir=str(data),
        ckpt_dir=str(weights.resolve().parent),
        model_file=weights.name,
        output_dir=str(out),
        eval_sequences=keep,
    )
    return json.loads((out / "summary.json").read_text())


def heatmap(table: dict[str, dict[str, float]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    rows = list(table)
    columns = sorted({c for r in table.values() for c in r})
    values = np.array([[table[r].get(c, np.nan) for c in columns] for r in rows])
    fig, ax = plt.subplots(figsize=(1.6 + 1.1 * len(columns), 0.9 + 0.35 * len(rows)))
    im = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(columns)), columns)
    ax.set_yticks(range(len(rows)), rows)
    for (i, j), v in np.ndenumerate(values):
        if not np.isnan(v):
            ax.text(j, i, f"{v:.2f}", ha="center", va="center", color="w" if v < 0.5 else "k", fontsize=8)
    fig.colorbar(im, ax=ax, label="Dice")
    ax.set_title("MoME+ Dice by available sequences and lesion type")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, required=True, help="a MoME+ model.pt (train_plus.json)")
    parser.add_argument("--baseline", type=Path, help="a zero-filled U-Net zero_fill_unet.pt, same cases")
    parser.add_argument("--subjects", type=int, default=3, help="phantom subjects per dataset (seed 0), all tested")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    from scripts.record import read

    sequences = tuple((read(args.weights) or {}).get("modalities") or ("T1", "T1c", "T2", "FLAIR"))
    subjects = 1 if args.smoke else args.subjects
    by_type: dict[str, dict[str, float]] = {}
    n_cases: dict[str, int] = {}
    average: dict[str, float] = {}
    baseline: dict[str, float] = {}
    baseline_configs = [*CONFIGS[:2], "train_plus_baseline.json", *CONFIGS[2:]]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = cases(work, subjects, 0, SMOKE_PROFILES if args.smoke else PROFILES, sequences)
        combos = combinations(sequences)[-2:] if args.smoke else combinations(sequences)
        for keep in combos:
            name = "+".join(keep)
            summary = evaluate(args.weights, data, keep, work / f"eval_{name}")
            by_type[name] = summary["dice"]["lesion_type"]
            n_cases[name] = summary["n_cases"]
            average[name] = summary["average"]["case_level"]
            print(f"{name:<20} {n_cases[name]:>3} cases  Dice {average[name]:.3f}  {by_type[name]}", flush=True)
            if args.baseline:
                out = work / f"baseline_{name}"
                baseline[name] = evaluate(args.baseline, data, keep, out, baseline_configs)["average"]["case_level"]
                print(f"{'':<20} zero-filled U-Net Dice {baseline[name]:.3f}", flush=True)
    one = [c for c in by_type if "+" not in c]
    result = {
        "machine": machine(),
        "smoke": args.smoke,
        "weights": str(args.weights),
        "subjects_per_dataset": subjects,
        "dice_by_lesion_type": by_type,
        "case_level_dice": average,
        "n_cases": n_cases,
        "one_sequence_mean": sum(average[c] for c in one) / len(one) if one else None,
        "all_sequences": average.get("+".join(sequences)),
    }
    if args.baseline:
        result["baseline"] = {"weights": str(args.baseline), "case_level_dice": baseline}
        result["baseline"]["one_sequence_mean"] = sum(baseline[c] for c in one) / len(one) if one else None
        result["mean_over_combinations"] = {
            "mome_plus": sum(average.values()) / len(average),
            "zero_fill_unet": sum(baseline.values()) / len(baseline),
        }
    if args.json:
        heatmap(by_type, args.json.with_name("plus_heatmap.png"))
        write_results(args.json, result)
    return result


if __name__ == "__main__":
    main()
