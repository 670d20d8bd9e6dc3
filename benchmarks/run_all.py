"""``make benchmark``: run every benchmark, then write ``benchmarks/results.json`` and ``docs/BENCHMARKS.md``.

Parts run one after another (they would disturb each other's timings) and each leaves its JSON in
``benchmarks/out/``; ``--only`` re-runs some parts, ``--report`` only rebuilds the document from existing JSON.

    python benchmarks/run_all.py [--only network fidelity inference ...] [--report] [--smoke]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks/out"
PY = sys.executable

#: part -> command (the fidelity run must precede inference: its trained MoME measures the Dice differences)
PARTS = {
    "network": ["benchmarks/bench_network.py", "--reps", "3"],
    "fidelity": ["benchmarks/bench_fidelity.py", "--out", "benchmarks/out/fidelity"],
    "preprocessing": ["benchmarks/bench_preprocessing.py"],
    "phantoms": ["benchmarks/bench_phantoms.py"],
    "monailabel": ["benchmarks/bench_monailabel.py"],
    "inference": [
        "benchmarks/bench_inference.py",
        "--small-weights",
        "benchmarks/out/fidelity/models/mome/model_final.pt",
        "--datalist",
        "benchmarks/out/fidelity/data/datalist.json",
        "--dice-images",
        "4",
    ],
}


def run_part(name: str, smoke: bool) -> float:
    cmd = [PY, *PARTS[name]]
    out_json = OUT / f"{name}.json"
    if name != "fidelity":
        cmd += ["--json", str(out_json)]
    if smoke:
        cmd.append("--smoke")
        if name == "fidelity":
            cmd[cmd.index("benchmarks/out/fidelity")] = "benchmarks/out/fidelity_smoke"
    if name == "inference":
        _export_final_mome(smoke)
        if smoke:
            cmd = [c.replace("out/fidelity/", "out/fidelity_smoke/") for c in cmd]
    print(f"\n== {name}: {' '.join(cmd[1:])}", flush=True)
    start = time.monotonic()
    with (OUT / f"{name}.log").open("w") as log:
        result = subprocess.run(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - start
    if result.returncode:
        raise SystemExit(f"{name} failed after {seconds:.0f} s; see {OUT / (name + '.log')}")
    if name == "fidelity":
        src = OUT / ("fidelity_smoke" if smoke else "fidelity") / "fidelity.json"
        out_json.write_text(src.read_text())
    print(f"   {seconds / 60:.1f} min", flush=True)
    return seconds


def _export_final_mome(smoke: bool) -> None:
    """The fidelity run keeps training states; the inference benchmark wants a ``{"model": ...}`` file."""
    import torch

    models = OUT / ("fidelity_smoke" if smoke else "fidelity") / "models" / "mome"
    state = torch.load(models / "checkpoint.pt", map_location="cpu", weights_only=False)
    torch.save({"model": state["model"]}, models / "model_final.pt")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", choices=list(PARTS), default=list(PARTS))
    parser.add_argument("--report", action="store_true", help="only rebuild the document from benchmarks/out")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes: checks the harness, numbers mean nothing")
    args = parser.parse_args(argv)
    OUT.mkdir(parents=True, exist_ok=True)
    wall = {}
    if not args.report:
        for name in args.only:
            wall[name] = run_part(name, args.smoke)
    from benchmarks.report import write_report

    if args.smoke:  # never overwrite the published numbers with smoke numbers
        write_report(OUT, OUT / "results_smoke.json", OUT / "BENCHMARKS_smoke.md", wall, smoke=True)
    else:
        write_report(OUT, ROOT / "benchmarks/results.json", ROOT / "docs/BENCHMARKS.md", wall, smoke=False)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main()
