"""Full-volume inference cost: the reference pipeline vs ours, and MoME's memory vs one nnU-Net U-Net.

Timing and memory use the ``paper`` preset on a 1 mm phantom registered and cropped to the MNI box
(160x196x160), each variant in its own process so that its peak RSS is its own:

- ``reference``: what the official code does, in fp32: 128^3 windows at step 0.5 (12 tiles), Gaussian blending,
  8-way mirroring, all six networks per tile and mirror;
- ``default``: our inference default: one window over the whole box (padded to 160x224x160), no mirroring, fp32,
  and the lean eval forward (one expert's features in memory at a time);
- ``bf16``: ``default`` under bfloat16 autocast (float32 accumulation);
- ``unet``: one ``PlainConvUNet`` expert alone, as ``default`` runs it (the memory yardstick).

The reference pipeline would take about 1.5 hours on 2 CPU cores, so by default it is timed on one 128^3 tile with two
of its eight mirror passes and scaled to 12 tiles x 8 passes (every pass over a tile costs the same network forward;
``--reference-full`` runs it all). Its peak RSS is then that of one tile's pipeline (an underestimate by the
full-volume output and weight buffers, about 90 MB).

The paper preset cannot be trained on a CPU here, so its weights are random and its Dice says nothing; the Dice
differences between pipelines are measured with a trained ``small`` model (``--small-weights``) on 2 mm phantom test
images, where the reference pipeline uses the small model's training patch as window.

    python benchmarks/bench_inference.py [--smoke] [--small-weights model.pt --datalist datalist.json] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.timing import cpu_busy_fraction, machine, write_results
from demo.commands import run_bundle
from scripts.inference import MirroredSlidingWindowInferer
from scripts.mome import MoME, build_unet
from scripts.precision import cpu_capability, native_bf16

ROOT = Path(__file__).resolve().parents[1]

VARIANTS = {
    "reference": {"whole": False, "mirror": (0, 1, 2), "bf16": False},
    "default": {"whole": True, "mirror": (), "bf16": False},
    "bf16": {"whole": True, "mirror": (), "bf16": True},
    "unet": {"whole": True, "mirror": (), "bf16": False},
}


def _whole_roi(shape: tuple[int, ...], stride: int) -> list[int]:
    return [int(np.ceil(s / stride) * stride) for s in shape]


def preprocessed_volume(spacing: float, smoke: bool) -> tuple[torch.Tensor, list[dict]]:
    """A phantom T1 run through the bundle's registration + template crop + z-score (what inference sees), and
    that phantom's images as datalist items (the smoke run's Dice comparison)."""
    import tempfile

    from monai.transforms import Compose, LoadImaged, MaskIntensityd, NormalizeIntensityd, Orientationd

    from phantoms import generate
    from scripts.data.template import mni_template
    from scripts.data.transforms import RegisterToTemplated

    out = Path(tempfile.mkdtemp()) / "ph"
    generate(out, profiles=["brats2021"], subjects=1, spacing=2 if smoke else 1, seed=0)
    image = next(out.rglob("*_t1.nii.gz"))
    pre = Compose(
        [
            LoadImaged("image", ensure_channel_first=True),
            Orientationd("image", "RAS", labels=None),
            RegisterToTemplated("image", spacing=spacing),
            MaskIntensityd("image", mask_data=mni_template(spacing).mask[None]),
            NormalizeIntensityd("image", nonzero=True),
        ]
    )
    label = next(out.rglob("*_seg.nii.gz"))
    items = [{"image": str(p), "label": str(label)} for p in sorted(image.parent.glob("*_t[12]*.nii.gz"))]
    return pre({"image": str(image)})["image"].as_tensor()[None].float(), items


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ``ru_maxrss``: Linux carries that over from the parent across exec."""
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmHWM:")) / 1024


def _tiles(shape: tuple[int, ...], patch: int, overlap: float = 0.5) -> int:
    """How many windows MONAI's sliding window puts on ``shape`` (same formula as ``dense_patch_slices``)."""
    step = int(patch * (1 - overlap))
    return int(np.prod([1 if s <= patch else int(np.ceil((s - patch) / step)) + 1 for s in shape]))


def run_variant(name: str, preset: str, volume: Path, patch: int, smoke: bool, full: bool = False) -> dict:
    """One variant, in this process: load, warm nothing, time one full-volume inference, report peak RSS."""
    torch.manual_seed(0)
    x = torch.load(volume, weights_only=True)
    baseline = _peak_rss_mb()
    cfg = dict(VARIANTS[name])
    scale = 1.0
    if name == "reference" and (smoke or not full):
        # every (tile, mirror) pass is one identical forward: time one tile, two passes, scale to the whole pipeline
        scale = _tiles(tuple(x.shape[2:]), patch) * 2 ** len(cfg["mirror"]) / 2
        cfg["mirror"] = (0,)
        x = x[..., :patch, :patch, :patch]
    net = build_unet(1, 2, preset) if name == "unet" else MoME(preset)
    net.eval()
    stride = 32 if preset == "paper" else 16
    roi = _whole_roi(tuple(x.shape[2:]), stride) if cfg["whole"] else [patch] * 3
    inferer = MirroredSlidingWindowInferer(roi, overlap=0.5, mirror_axes=cfg["mirror"], bf16=cfg["bf16"])
    busy = cpu_busy_fraction()
    start = time.perf_counter()
    with torch.inference_mode():
        out = inferer(x, net)
    seconds = time.perf_counter() - start
    peak = _peak_rss_mb()
    return {
        "variant": name,
        "preset": preset,
        "seconds": seconds * scale,
        "measured_seconds": seconds,
        "scaled_by": scale,
        "peak_rss_mb": peak,
        "rss_after_imports_mb": baseline,
        "roi": roi,
        "mirror_passes": 2 ** len(VARIANTS[name]["mirror"]),
        "busy_before": busy,
        "output_shape": list(out.shape),
    }


def _subprocess(name: str, preset: str, volume: Path, patch: int, smoke: bool, full: bool) -> dict:
    cmd = [sys.executable, __file__, "--variant", name, "--preset", preset, "--volume", str(volume)]
    cmd += ["--patch", str(patch)] + (["--smoke"] if smoke else []) + (["--reference-full"] if full else [])
    result = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if result.returncode:
        raise RuntimeError(f"variant {name} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def dice_agreement(weights: Path, items: list[dict], patch: int, smoke: bool = False) -> dict:
    """Dice vs reference labels of each pipeline with a trained small model, and the largest difference.

    Each pipeline is the bundle's ``inference.json`` (CPU overlay) writing native-grid labels, scored by the
    bundle's evaluation (:func:`scripts.evaluation.evaluate_folder`).
    """
    import tempfile

    from scripts.evaluation import evaluate_folder

    pipelines = {"reference": {"sw_roi_size": [patch] * 3, "tta": not smoke}, "default": {}}
    if native_bf16("cpu") and not smoke:  # the smoke run checks the harness: the bf16 variant is timed above
        pipelines["bf16"] = {"bf16": True}
    work = Path(tempfile.mkdtemp(prefix="bench_inference_"))
    (work / "models").mkdir()
    (work / "models" / "model.pt").write_bytes(weights.read_bytes())
    scores: dict[str, list[float]] = {}
    for name, knobs in pipelines.items():
        knobs = {"input": [i["image"] for i in items], "ckpt_dir": str(work / "models"), **knobs}
        run_bundle(["inference.json"], log=work / "inference.log", output_dir=str(work / name), **knobs)
        scores[name] = [c["dice"] for c in evaluate_folder(items, work / name)]
    mean = {k: float(np.mean(v)) for k, v in scores.items()}
    return {
        "n_images": len(items),
        "mean_dice": mean,
        "delta_default_vs_reference": mean["default"] - mean["reference"],
        "delta_bf16_vs_default": mean["bf16"] - mean["default"] if "bf16" in mean else None,
        "per_image": scores,
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="small preset at 2 mm (for the test suite)")
    parser.add_argument("--small-weights", type=Path, help="trained small-preset model.pt for the Dice comparison")
    parser.add_argument("--datalist", type=Path, help="datalist with a test split, for the Dice comparison")
    parser.add_argument("--dice-images", type=int, default=12)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--reference-full", action="store_true", help="run all 12 x 8 reference passes (~1.5 h)")
    parser.add_argument("--variant", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="paper", help=argparse.SUPPRESS)
    parser.add_argument("--volume", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--patch", type=int, default=128, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.variant:  # child process
        print(
            json.dumps(run_variant(args.variant, args.preset, args.volume, args.patch, args.smoke, args.reference_full))
        )
        return {}
    preset, spacing, patch = ("small", 2.0, 64) if args.smoke else ("paper", 1.0, 128)
    import tempfile

    volume = Path(tempfile.mkdtemp()) / "volume.pt"
    x, phantom_items = preprocessed_volume(spacing, args.smoke)
    if args.smoke:  # a corner of the box: one small window per variant is enough to run the harness
        x = x[..., :48, :48, :48].contiguous()
    torch.save(x, volume)
    results = {"machine": machine(), "smoke": args.smoke, "preset": preset, "volume_shape": None, "variants": {}}
    results["volume_shape"] = list(x.shape[2:])
    variants = ["unet", "default", "bf16", "reference"]
    if not native_bf16("cpu"):  # emulated bf16 is 30-90x slower: a figure for a mode nobody should use
        variants.remove("bf16")
        results["skipped"] = {"bf16": f"no native bf16 on this CPU ({cpu_capability()})"}
    for name in variants:  # each in its own process for its own peak RSS (the smoke run: here, RSS meaningless)
        if args.smoke:
            r = run_variant(name, preset, volume, patch, True)
        else:
            r = _subprocess(name, preset, volume, patch, args.smoke, args.reference_full)
        results["variants"][name] = r
        print(
            f"{name:9s} {r['seconds']:9.1f} s (measured {r['measured_seconds']:.1f} s x {r['scaled_by']:g})   "
            f"peak RSS {r['peak_rss_mb']:8.0f} MB   roi {r['roi']}",
            flush=True,
        )
    v = results["variants"]
    unet_above_imports = v["unet"]["peak_rss_mb"] - v["unet"]["rss_after_imports_mb"]  # 0 when run in-process (smoke)
    results["ratios"] = {
        "reference_over_default_time": v["reference"]["seconds"] / v["default"]["seconds"],
        "default_over_bf16_time": v["default"]["seconds"] / v["bf16"]["seconds"] if "bf16" in v else None,
        "default_over_unet_peak_rss": v["default"]["peak_rss_mb"] / v["unet"]["peak_rss_mb"],
        "default_over_unet_peak_rss_above_imports": (v["default"]["peak_rss_mb"] - v["default"]["rss_after_imports_mb"])
        / unet_above_imports
        if unet_above_imports > 0
        else None,
    }
    print(json.dumps(results["ratios"], indent=1))
    if args.small_weights and args.datalist:
        from scripts.data.datalist import load

        items = load(args.datalist, "test")[: args.dice_images]
        results["dice"] = dice_agreement(args.small_weights, items, 64 if args.smoke else 32, smoke=args.smoke)
    elif args.smoke:  # no trained model: random weights on the phantom above, to run the pipeline end to end
        weights = volume.with_name("random_small.pt")
        torch.save({"model": MoME("small").state_dict()}, weights)
        results["dice"] = dice_agreement(weights, phantom_items[:1], 64, smoke=True)
    if "dice" in results:
        print(json.dumps({k: v for k, v in results["dice"].items() if k != "per_image"}, indent=1))
    write_results(args.json, results)
    return results


if __name__ == "__main__":
    main()
