"""Seconds per image for the bundle's deterministic preprocessing at 1 mm: with MNI registration and without.

python benchmarks/bench_preprocessing.py [--smoke] [--reps 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from benchmarks.timing import cpu_busy_fraction, machine, write_results

ROOT = Path(__file__).resolve().parents[1]

def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--smoke", action="store_true", help="2 mm, one repetition")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    from monai.bundle import ConfigParser

    from phantoms import generate

    spacing = 2 if args.smoke else 1
    out = Path(tempfile.mkdtemp()) / "ph"
    generate(out, profiles=["brats2021", "wmh2017"], subjects=1, spacing=spacing, seed=0)
    images = sorted(out.rglob("*_t1.nii.gz")) + sorted(out.rglob("FLAIR.nii.gz"))
    results = {"machine": machine(), "smoke": args.smoke, "spacing_mm": spacing, "images": len(images), "modes": {}}
    for register in (True, False):
        parser_ = ConfigParser()
        parser_.read_config(str(ROOT / "bundle/configs/inference.json"))
        parser_.update({"register": register, "spacing": float(spacing), "bundle_root": str(ROOT / "bundle")})
        pre = parser_.get_parsed_content("preprocessing")
        pre({"image": str(images[0])})  # warm-up: template, ITK and MONAI imports
        times, busy = [], []
        for _ in range(1 if args.smoke else args.reps):
            for image in images:
                busy.append(cpu_busy_fraction(0.3))
                start = time.perf_counter()
                shape = tuple(pre({"image": str(image)})["image"].shape)
                times.append(time.perf_counter() - start)
        name = "registration" if register else "no_registration"
        results["modes"][name] = {
            "median_s": statistics.median(times),
            "times_s": times,
            "output_shape": shape,
            "busy_before": busy,
        }
        print(f"{name:16s} median {statistics.median(times):6.2f} s per image -> {shape}", flush=True)
    write_results(args.json, results)
    return results


if __name__ == "__main__":
    main()
