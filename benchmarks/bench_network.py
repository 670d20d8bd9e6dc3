"""MoME overhead over its six U-Nets: eval forward and one training step, measured side by side.

The reference is the sum of the six stand-alone ``PlainConvUNet`` costs (five experts on the image, the gate on a
pre-built ``1 + K*features[0]``-channel input), using MoME's own sub-networks so the weights and kernels are the
same. What MoME adds is the concatenation, the fusion and, in training, the two-term loss.

    python benchmarks/bench_network.py [--smoke] [--presets small paper] [--reps 3] [--glibc-default] [--json OUT]
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from benchmarks.timing import interleaved, machine, write_results
from scripts.losses import MoMELoss, seg_loss
from scripts.memory import keep_freed_memory
from scripts.mome import PRESETS, MoME

# (eval size, train size, train batch) per preset; the paper's 128^3 training step does not fit 24 GiB on CPU
SIZES = {"small": (64, 64, 2), "paper": (128, 64, 2)}
SMOKE_SIZES = {"small": (32, 32, 2), "paper": (64, 64, 1)}


def eval_candidates(model: MoME, size: int) -> dict:
    x = torch.randn(1, 1, size, size, size)
    gate_in = torch.randn(1, model.gate.encoder.stages[0][0].convs[0].conv.in_channels, size, size, size)

    def mome() -> None:
        model.eval()
        with torch.inference_mode():
            model(x)

    def six_unets() -> None:
        model.eval()
        with torch.inference_mode():
            for expert in model.experts:
                expert(x)
            model.gate(gate_in)

    return {"mome": mome, "sum_of_unets": six_unets}


def train_candidates(model: MoME, size: int, batch: int) -> dict:
    x = torch.randn(batch, 1, size, size, size)
    y = (torch.rand(batch, 1, size, size, size) > 0.9).float()
    modality = torch.arange(batch) % len(model.experts)
    gate_in = torch.randn(batch, model.gate.encoder.stages[0][0].convs[0].conv.in_channels, size, size, size)
    loss = MoMELoss(model.num_levels, expert_weight=0.5)
    ds = seg_loss(model.num_levels)
    nets = [*model.experts, model.gate]
    optims = [torch.optim.SGD(n.parameters(), lr=1e-3, momentum=0.99, nesterov=True) for n in nets]
    full = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.99, nesterov=True)

    def mome() -> None:
        model.train()
        full.zero_grad()
        loss(model(x), {"label": y, "modality": modality}).backward()
        full.step()

    def six_unets() -> None:
        model.train()
        for net, opt in zip(nets, optims, strict=True):
            opt.zero_grad()
            out = net(gate_in if net is model.gate else x)
            # the gate has K*C outputs; score its first C channels, as a stand-alone U-Net would be scored
            ds([o[:, : model.num_classes] for o in out], y).backward()
            opt.step()

    return {"mome": mome, "sum_of_unets": six_unets}


def run(presets: list[str], reps: int, smoke: bool, keep_memory: bool = True) -> dict:
    torch.manual_seed(0)
    # as the bundle's training does: without it, page faults on freed-and-reallocated activations dominate and
    # grow with peak memory (see scripts/memory.py); --glibc-default measures that case
    kept = keep_freed_memory() if keep_memory else False
    results = {"machine": machine(), "smoke": smoke, "keep_freed_memory": kept, "cases": []}
    sizes = SMOKE_SIZES if smoke else SIZES
    for preset in presets:
        model = MoME(preset)
        eval_size, train_size, batch = sizes[preset]
        for kind, cands, shape in (
            ("eval_forward", eval_candidates(model, eval_size), [1, 1, *[eval_size] * 3]),
            ("train_step", train_candidates(model, train_size, batch), [batch, 1, *[train_size] * 3]),
        ):
            # training steps: two warm-up rounds, MoME's heap takes two steps to reach its steady size
            warmup = 0 if smoke else 2 if kind == "train_step" else 1
            timed = interleaved(cands, reps=reps, warmup=warmup, wait_s=0 if smoke else 20)
            ratio = timed["mome"]["median_s"] / timed["sum_of_unets"]["median_s"]
            case = {"preset": preset, "kind": kind, "input_shape": shape, "ratio": ratio, **timed}
            results["cases"].append(case)
            print(
                f"{preset:6s} {kind:13s} {'x'.join(map(str, shape[2:])):>12s} b={shape[0]}  "
                f"MoME {timed['mome']['median_s']:8.3f} s   six U-Nets {timed['sum_of_unets']['median_s']:8.3f} s   "
                f"ratio {ratio:.3f}   kernel s {statistics.median(timed['mome']['sys_s']):.1f} / "
                f"{statistics.median(timed['sum_of_unets']['sys_s']):.1f}",
                flush=True,
            )
    return results


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=list(PRESETS))
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--smoke", action="store_true", help="tiny sizes, one repetition (for the test suite)")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--glibc-default", action="store_true", help="leave malloc as it is (mmap per big block)")
    args = parser.parse_args(argv)
    presets = ["small"] if args.smoke else args.presets  # the smoke run checks the harness, not the paper network
    results = run(presets, 1 if args.smoke else args.reps, args.smoke, keep_memory=not args.glibc_default)
    write_results(args.json, results)
    return results


if __name__ == "__main__":
    main()
