"""Does MoME do what the paper claims? Four models at an equal training budget on the phantom benchmark.

- ``mome``: MoME with the curriculum (``(1 - e/E)^2``);
- ``mome_no_curriculum``: the same network trained on the fused loss only;
- ``universal_unet``: one expert-sized U-Net trained on every image (the paper's "single nnU-Net");
- ``task_unets``: one U-Net per modality, each on its own modality's images, sharing the budget; at test time each
  image goes to the U-Net of its (known) modality.

Budget: the same number of iterations x batch for every model (the task U-Nets split it five ways). Small preset,
2 mm, 32^3 patches, no validation-based selection (final weights). One profile is held out of training entirely
and reported as "unseen". Reported: Dice per (dataset, modality), per lesion type, task/dataset/case averages, a
radar chart of all models, and the expert-specialisation index (share of gate weight on the matching expert).

    python benchmarks/bench_fidelity.py --out benchmarks/out/fidelity [--smoke] [--iterations 1000] [--seed 0]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import machine
from scripts.atomic import save_json
from scripts.evaluation import radar_chart, summarise
from scripts.mome import MODALITIES, MoME, build_unet

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundle"

HOLDOUT = ("msseg2016", "MSSEG2016")  # profile folder, dataset name in the datalist
COMMON = {
    "preset": "small",
    "spacing": 2.0,
    "register": False,
    "val_interval": 100000,
    "num_workers": 2,
    "progress_bar": False,
    "cache_rate": 1.0,
}


def _cli(configs: list[str], **knobs) -> list[str]:
    files = [f"configs/{c}" for c in configs]
    cmd = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        files[0] if len(files) == 1 else str(files),
        "--logging_file",
        "configs/logging.conf",
    ]
    for key, value in {**COMMON, **knobs}.items():
        value = "$None" if value is None else value  # monai.bundle.run drops None overrides
        cmd += [f"--{key}", repr(value) if isinstance(value, (bool, list)) else str(value)]
    return cmd


def _train(cmd: list[str], log: Path) -> float:
    start = time.monotonic()
    with log.open("a") as f:
        f.write("$ " + " ".join(cmd) + "\n")
        f.flush()
        result = subprocess.run(cmd, cwd=BUNDLE, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode:
        raise SystemExit(f"training failed, see {log}")
    return time.monotonic() - start


def train_all(data: Path, models: Path, log: Path, epochs: int, iterations: int, batch: int, lr: float) -> dict:
    """Train the four variants; returns seconds per variant. Weights: ``models/<variant>/`` training states."""
    knobs = {
        "dataset_dir": str(data),
        "epochs": epochs,
        "batch_size": batch,
        "patch_size": [32, 32, 32],
        "learning_rate": lr,
    }
    seconds = {}
    seconds["mome"] = _train(
        _cli(
            ["train.json"],
            ckpt_dir=str(models / "mome"),
            iterations_per_epoch=iterations,
            output_dir=str(models / "mome/eval"),
            **knobs,
        ),
        log,
    )
    seconds["mome_no_curriculum"] = _train(
        _cli(
            ["train.json"],
            ckpt_dir=str(models / "mome_no_curriculum"),
            iterations_per_epoch=iterations,
            curriculum_power=None,
            **{"loss#expert_weight": 0.0},
            output_dir=str(models / "nc/eval"),
            **knobs,
        ),
        log,
    )
    seconds["universal_unet"] = _train(
        _cli(
            ["train.json", "train_experts.json"],
            expert=None,
            ckpt_dir=str(models / "universal_unet"),
            iterations_per_epoch=iterations,
            output_dir=str(models / "u/eval"),
            **knobs,
        ),
        log,
    )
    share = max(1, iterations // len(MODALITIES))
    seconds["task_unets"] = 0.0
    for modality in MODALITIES:
        seconds["task_unets"] += _train(
            _cli(
                ["train.json", "train_experts.json"],
                expert=modality,
                ckpt_dir=str(models / "task_unets"),
                iterations_per_epoch=share,
                output_dir=str(models / "t/eval"),
                **knobs,
            ),
            log,
        )
    return seconds


def _weights(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=False)["model"]


def load_models(models: Path) -> dict:
    out = {}
    for name in ("mome", "mome_no_curriculum"):
        net = MoME("small")
        net.load_state_dict(_weights(models / name / "checkpoint.pt"))
        out[name] = net.eval()
    net = build_unet(1, 2, "small")
    net.load_state_dict(_weights(models / "universal_unet" / "checkpoint_universal.pt"))
    out["universal_unet"] = net.eval()
    task = {}
    for m in MODALITIES:
        net = build_unet(1, 2, "small")
        net.load_state_dict(_weights(models / "task_unets" / f"checkpoint_{m}.pt"))
        task[m] = net.eval()
    out["task_unets"] = task
    return out


def evaluate(models: dict, datalist: Path, limit: int | None) -> dict:
    """Per model: case rows (Dice; for MoME also gate usage and expert Dice) on every test image."""
    from monai.bundle import ConfigParser
    from monai.inferers import SlidingWindowInferer

    from scripts.data.datalist import load

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs/train.json"))
    parser.update({"preset": "small", "spacing": 2.0, "register": False, "bundle_root": str(BUNDLE)})
    pre = parser.get_parsed_content("validate#preprocessing")
    inferer = SlidingWindowInferer([96, 128, 96], sw_batch_size=1, overlap=0.5, mode="gaussian")
    items = load(datalist, "test")[:limit]
    rows: dict[str, list[dict]] = {name: [] for name in models}
    for item in items:
        data = pre(item)
        x, y = data["image"].as_tensor()[None], data["label"].as_tensor()[0] > 0
        brain = x[0, 0] != 0
        meta = {k: item.get(k) for k in ("image", "dataset", "modality", "lesion_type", "subject")}
        meta["unseen"] = item["dataset"] == HOLDOUT[1]
        for name, net in models.items():
            row = dict(meta)
            with torch.inference_mode():
                if isinstance(net, dict):
                    logits = inferer(x, net[item["modality"]])
                elif isinstance(net, MoME):
                    aux = inferer(x, lambda t, n=net: n(t, with_aux=True))
                    logits = aux["logits"]
                    gate = aux["gate"][0].abs().unflatten(0, (len(MODALITIES), -1)).sum(1)[:, brain].mean(1)
                    row["gate_usage"] = (gate / gate.sum()).tolist()
                    experts = aux["experts"][0].unflatten(0, (len(MODALITIES), -1)).argmax(1) > 0
                    row["expert_dice"] = [_dice(e, y) for e in experts]
                else:
                    logits = inferer(x, net)
            row["dice"] = _dice(logits.argmax(1)[0] > 0, y)
            rows[name].append(row)
    return rows


def _dice(pred: torch.Tensor, truth: torch.Tensor) -> float:
    total = int(pred.sum() + truth.sum())
    return 1.0 if total == 0 else float(2 * (pred & truth).sum() / total)


def report(rows: dict, out: Path) -> dict:
    summary = {}
    for name, cases in rows.items():
        seen = [c for c in cases if not c["unseen"]]
        unseen = [c for c in cases if c["unseen"]]
        summary[name] = {"seen": summarise(seen), "unseen": summarise(unseen) if unseen else None}
        if name.startswith("mome"):
            by_mod: dict[str, list] = {}
            for c in seen:
                by_mod.setdefault(c["modality"] or "unknown", []).append(c["expert_dice"])
            summary[name]["expert_dice_by_input_modality"] = {
                m: [float(v) for v in np.mean(v, 0)] for m, v in sorted(by_mod.items())
            }
    radar_chart({n: s["seen"] for n, s in summary.items()}, out / "radar_seen.png", title="Dice, seen datasets")
    return summary


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks/out/fidelity")
    parser.add_argument("--subjects", type=int, default=8)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--iterations", type=int, default=50, help="iterations per epoch (budget = epochs x this)")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--lr", type=float, default=1e-2, help="from scratch: nnU-Net's 1e-2 (paper 1e-3 fine-tunes)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--smoke", action="store_true", help="1 subject, 2 iterations, 4 test images")
    args = parser.parse_args(argv)
    if args.smoke:
        args.subjects, args.epochs, args.iterations = 2, 1, 5
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    data, models, log = out / "data", out / "models", out / "train.log"
    start = time.monotonic()
    if not (data / "datalist.json").exists():
        from phantoms import generate
        from scripts.data.datalist import main as datalist

        generate(data, subjects=args.subjects, spacing=2, seed=args.seed)
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
                HOLDOUT[1],
                "--seed",
                str(args.seed),
            ]
        )
    seconds = train_all(data, models, log, args.epochs, args.iterations, args.batch, args.lr)
    rows = evaluate(load_models(models), data / "datalist.json", None)
    summary = report(rows, out)
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
            "holdout": HOLDOUT[1],
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
