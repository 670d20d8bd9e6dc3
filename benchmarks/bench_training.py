"""CPU training throughput of the bundle's own training workflow (train.json + cpu.json), variants side by side.

Each variant is the real Ignite trainer built from the configs with other knobs (precision, memory order, data
workers, ...); the time the trainer waits for its next batch is the data-loading share, the rest is forward, loss,
backward, step and handlers. Rounds of ``--iterations`` alternate between variants so that machine-load drifts hit
all alike; medians are reported. With ``--dice N`` the first and last variants then train on to N iterations from
the same seed and are scored by the trainer's own validator (mean Dice on the validation split), so speed is never
bought with accuracy.

    python benchmarks/bench_training.py [--datalist DATA/datalist.json] [--iterations 20] [--rounds 3] [--dice 300]
        [--json OUT] [--smoke]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.timing import machine, write_results
from demo.commands import BUNDLE, config_files

#: How training ran before (float32, two data workers competing with the two compute threads for two cores,
#: MetaTensor batches, foreground indices searched on every crop), then each change added in turn.
#: Overrides with ``#`` change one component of train.json; the code paths they restore are kept below.
BEFORE = {
    "bf16": False,
    "channels_last": False,
    "num_workers": 2,
    "train#trainer#prepare_batch": "$__import__('benchmarks.bench_training').bench_training.metatensor_prepare_batch",
    "train#random_transforms#2#fg_indices_key": "$None",
    "train#random_transforms#2#bg_indices_key": "$None",
}
VARIANTS = {
    "before": BEFORE,
    "+ plain-tensor batches": {**BEFORE, "train#trainer#prepare_batch": "$scripts.losses.prepare_batch"},
    "+ cached crop indices": {"bf16": False, "channels_last": False, "num_workers": 2},
    "after (+ no data workers)": {"bf16": False, "channels_last": False, "num_workers": 0},
    # opt-in, not the default: NaN weight gradients in the bottleneck convolution in some runs (fp32 too)
    "after + channels_last": {"bf16": False, "channels_last": True, "num_workers": 0},
    # opt-in, not the default: on this CPU its weight gradients turn NaN within ~30 steps (SkipNonFiniteSteps)
    "after + bf16": {"bf16": True, "channels_last": True, "num_workers": 0},
}


AFTER = "after (+ no data workers)"  # what train.json + cpu.json do now


def metatensor_prepare_batch(batchdata, device=None, non_blocking=False, **kwargs):
    """The training step's input as it was before: the loader's MetaTensors, which copy their metadata (affine,
    applied transforms) on every operation of the network."""
    from scripts.losses import prepare_batch

    _, target = prepare_batch(batchdata, device, non_blocking, **kwargs)
    image = batchdata["image"].to(device=device, non_blocking=non_blocking, **kwargs)
    label = batchdata["label"].to(device=device, non_blocking=non_blocking, **kwargs)
    return image, {**target, "label": label}


def build(datalist: Path, out: Path, knobs: dict, iterations: int):
    """The training workflow, initialised (data cached), not run: its trainer is driven round by round."""
    from monai.bundle import ConfigWorkflow

    wf = ConfigWorkflow(
        config_file=[str(BUNDLE / f) for f in config_files(["train.json"])],
        workflow_type="train",
        bundle_root=str(BUNDLE),
        dataset_dir=str(datalist.parent),
        datalist=str(datalist),
        ckpt_dir=str(out / "models"),
        output_dir=str(out),
        iterations_per_epoch=iterations,
        epochs=1000,
        val_interval=10**6,
        progress_bar=False,
        **knobs,
    )
    wf.initialize()
    return wf


class DataWait:
    """Seconds the trainer spends waiting for batches (Ignite's GET_BATCH_STARTED -> GET_BATCH_COMPLETED)."""

    def __init__(self, trainer) -> None:
        from ignite.engine import Events

        self.seconds, self._start = 0.0, 0.0
        trainer.add_event_handler(Events.GET_BATCH_STARTED, self._started)
        trainer.add_event_handler(Events.GET_BATCH_COMPLETED, self._completed)

    def _started(self, _) -> None:
        self._start = time.perf_counter()

    def _completed(self, _) -> None:
        self.seconds += time.perf_counter() - self._start


def time_rounds(trainers: dict, rounds: int) -> dict[str, dict]:
    """Per variant: seconds per iteration and data-loading share, one epoch per round, medians over rounds."""
    waits = {name: DataWait(trainer) for name, trainer in trainers.items()}
    per_it: dict[str, list[float]] = {n: [] for n in trainers}
    share: dict[str, list[float]] = {n: [] for n in trainers}
    names, stopped = list(trainers), {}
    for r in range(rounds + 1):  # round 0 warms up (worker start, allocator, oneDNN kernel choice)
        for name in names if r % 2 == 0 else names[::-1]:
            if name in stopped:
                continue
            trainer = trainers[name]
            waits[name].seconds = 0.0
            start = time.perf_counter()
            trainer.state.max_epochs = trainer.state.epoch + 1  # one more epoch, then back here
            try:
                trainer.run()
            except FloatingPointError as e:  # SkipNonFiniteSteps gave up: this variant does not train; its time is moot
                stopped[name] = {"stopped": str(e), "iteration": trainer.state.iteration}
                continue
            seconds = time.perf_counter() - start
            if r == 0:
                continue
            per_it[name].append(seconds / trainer.state.epoch_length)
            share[name].append(waits[name].seconds / seconds)
    return {
        n: stopped[n]
        if n in stopped
        else {
            "seconds_per_iteration": statistics.median(per_it[n]),
            "iterations_per_minute": 60 / statistics.median(per_it[n]),
            "data_loading_share": statistics.median(share[n]),
            "all_seconds_per_iteration": per_it[n],
        }
        for n in names
    }


def dice_after(wf, iterations: int) -> float:
    """Train on to ``iterations`` in all, then the validation split's mean Dice from the trainer's own validator."""
    trainer = wf.parser.get_parsed_content("train#trainer")
    trainer.state.max_epochs = max(trainer.state.epoch + 1, -(-iterations // trainer.state.epoch_length))
    trainer.run()
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    evaluator.run()
    return float(evaluator.state.metrics["val_mean_dice"])


def _phantom_datalist(data: Path, subjects: int) -> Path:
    """All six phantom datasets at 2 mm and a datalist over them, one subject per dataset for validation."""
    from phantoms import generate
    from scripts.data.datalist import main as datalist_main

    generate(data, subjects=subjects, spacing=2, seed=0, workers=2)
    datalist_main(
        ["--out", str(data / "datalist.json"), "--phantoms", str(data), "--val", "0.34", "--test", "0", "--seed", "0"]
    )
    return data / "datalist.json"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datalist", type=Path, help="default: phantoms generated for the run (4 per dataset)")
    parser.add_argument("--iterations", type=int, default=20, help="iterations per timed round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dice", type=int, default=0, help="then train each variant to this many iterations")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--smoke", action="store_true")
    args = parser.parse_args(argv)
    if args.smoke:
        args.iterations, args.rounds = 2, 1
    torch.manual_seed(0)
    with tempfile.TemporaryDirectory() as tmp:
        datalist = args.datalist or _phantom_datalist(Path(tmp) / "data", 2 if args.smoke else 4)
        flows = {}
        variants = {n: VARIANTS[n] for n in ("before", AFTER)} if args.smoke else VARIANTS
        for name, knobs in variants.items():
            flows[name] = build(datalist, Path(tmp) / f"variant{len(flows)}", knobs, args.iterations)
        trainers = {n: wf.parser.get_parsed_content("train#trainer") for n, wf in flows.items()}
        results = time_rounds(trainers, args.rounds)
        base = results["before"]["seconds_per_iteration"]
        for r in results.values():
            if "seconds_per_iteration" in r:
                r["speed_up"] = base / r["seconds_per_iteration"]
        if args.dice:
            for name in ("before", AFTER):
                wf = flows[name]
                results[name]["dice_after"] = {
                    "iterations": args.dice,
                    "val_mean_dice": dice_after(wf, args.dice),
                }
    for name, r in results.items():
        if "stopped" in r:
            print(f"{name:26s} stopped at iteration {r['iteration']}: {r['stopped']}")
            continue
        dice = f", val Dice {r['dice_after']['val_mean_dice']:.3f} after {args.dice} it" if "dice_after" in r else ""
        print(
            f"{name:24s} {r['seconds_per_iteration']:.3f} s/it ({r['iterations_per_minute']:.1f} it/min, "
            f"x{r['speed_up']:.2f}), data loading {100 * r['data_loading_share']:.1f} %{dice}"
        )
    if args.json:
        write_results(
            args.json,
            {"machine": machine(), "smoke": args.smoke, "iterations_per_round": args.iterations, "results": results},
        )


if __name__ == "__main__":
    main()
