"""``make benchmark``: run every benchmark, then write ``benchmarks/results.json`` and ``docs/BENCHMARKS.md``.

Parts run one after another (they would disturb each other's timings) and each leaves its JSON in the output
folder; ``--only`` re-runs some parts, ``--report`` only rebuilds the document from existing JSON. ``--smoke`` runs
every part at toy size, in this process, into its own folder (the test suite does this so the harness cannot rot).

    python benchmarks/run_all.py [--only network fidelity ...] [--report] [--smoke] [--out DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.report import write_report
from scripts.atomic import save_json

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable

#: in this order: the fidelity run trains the MoME whose Dice the inference part compares between pipelines
PARTS = ("network", "training", "released", "fidelity", "preprocessing", "phantoms", "monailabel", "inference")


def command(name: str, out: Path, smoke: bool) -> list[str]:
    script = {
        "network": "bench_network.py",
        "training": "bench_training.py",
        "released": "bench_released.py",
        "fidelity": "bench_fidelity.py",
        "preprocessing": "bench_preprocessing.py",
        "phantoms": "bench_phantoms.py",
        "monailabel": "bench_monailabel.py",
        "inference": "bench_inference.py",
    }
    cmd = [PY, f"benchmarks/{script[name]}"]
    if name == "fidelity":
        cmd += ["--out", str(out / "fidelity")]
    else:
        cmd += ["--json", str(out / f"{name}.json")]
    if name == "network" and not smoke:
        cmd += ["--reps", "3"]
    if name == "training" and not smoke:  # speed side by side, then Dice after the same iterations
        cmd += ["--iterations", "10", "--rounds", "3", "--dice", "200"]
    weights = out / "fidelity/models/mome/model_final.pt"
    if name == "inference" and weights.is_file():  # the fidelity run's MoME, for the Dice comparison
        cmd += ["--small-weights", str(weights)]
        cmd += ["--datalist", str(out / "fidelity/data/datalist.json"), "--dice-images", "1" if smoke else "4"]
    return cmd + (["--smoke"] if smoke else [])


def run_part(name: str, out: Path, smoke: bool, run: str) -> float:
    """Run one part as its own process, its output in ``<out>/<name>.log``; its wall time is recorded.

    A smoke part runs in this process instead: its numbers mean nothing, and a new interpreter per part would
    spend most of a toy-sized run importing torch, MONAI and ITK again.
    """
    if name == "inference":
        _export_final_mome(out)
    cmd = command(name, out, smoke)
    print(f"\n== {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.monotonic()
    with (out / f"{name}.log").open("w") as log:
        if smoke:
            with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
                importlib.import_module(f"benchmarks.{Path(cmd[1]).stem}").main(cmd[2:])
            returncode = 0
        else:
            returncode = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.monotonic() - start
    if returncode:
        raise SystemExit(f"{name} failed after {seconds:.0f} s; see {out / (name + '.log')}")
    if name == "fidelity":
        (out / "fidelity.json").write_text((out / "fidelity" / "fidelity.json").read_text())
    print(f"   {seconds / 60:.1f} min", flush=True)
    _record_wall(out, name, seconds, run)
    return seconds


def _record_wall(out: Path, name: str, seconds: float, run: str) -> None:
    """Keep every part's latest wall time and the start of the invocation that ran it (parts re-run with ``--only``
    keep the others' times, and the report can tell one uninterrupted run from a patchwork)."""
    path = out / "wall_seconds.json"
    wall = json.loads(path.read_text()) if path.exists() else {}
    wall[name] = {"seconds": seconds, "finished": time.strftime("%Y-%m-%d %H:%M"), "run": run}
    save_json(wall, path)


def _export_final_mome(out: Path) -> None:
    """The fidelity run keeps training states; the inference benchmark wants a ``{"model": ...}`` file."""
    import torch

    models = out / "fidelity" / "models" / "mome"
    if not (models / "checkpoint.pt").is_file():
        return  # fidelity not run (yet): the inference part measures without a trained model
    state = torch.load(models / "checkpoint.pt", map_location="cpu", weights_only=False)
    torch.save({"model": state["model"]}, models / "model_final.pt")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=PARTS, default=list(PARTS))
    parser.add_argument("--report", action="store_true", help="only rebuild the document from the JSON files")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks the harness, numbers mean nothing")
    parser.add_argument("--out", type=Path, help="default: benchmarks/out (smoke: benchmarks/out/smoke)")
    args = parser.parse_args(argv)
    out = (args.out or ROOT / ("benchmarks/out/smoke" if args.smoke else "benchmarks/out")).resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.report:
        run = time.strftime("%Y-%m-%d %H:%M:%S")
        for name in args.only:
            run_part(name, out, args.smoke, run)
    if args.smoke:  # never overwrite the published numbers with smoke numbers
        write_report(out, out / "results.json", out / "BENCHMARKS.md", smoke=True)
    else:
        write_report(out, ROOT / "benchmarks/results.json", ROOT / "docs/BENCHMARKS.md", smoke=False)


if __name__ == "__main__":
    main()
