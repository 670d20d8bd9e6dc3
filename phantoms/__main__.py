"""CLI: ``python -m phantoms --out DIR [--profiles NAME ...] [--subjects N] [--spacing MM] [--seed S]``."""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence

from phantoms.build import generate
from phantoms.profiles import PROFILES


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer (>= 1), got {value}")
    return value


def _spacing(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 1 or 2 (mm), got {text!r}") from None
    if value not in (1.0, 2.0):
        raise argparse.ArgumentTypeError(f"must be 1 (realistic) or 2 (fast) mm, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    width = max(len(n) for n in PROFILES)
    listing = "\n".join(f"  {n:<{width}}  {p.dataset}: {p.summary}" for n, p in PROFILES.items())
    parser = argparse.ArgumentParser(
        prog="python -m phantoms",
        description="Generate physics-based multi-modal brain-lesion phantoms in the layout of public datasets.",
        epilog=f"profiles:\n{listing}\n\nRun from bundle/. See docs/DATASETS.md for the trees.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, metavar="DIR", help="new or empty output folder")
    parser.add_argument(
        "--profiles", nargs="+", choices=list(PROFILES), default=None, metavar="NAME",
        help="profiles to generate (default: all): " + ", ".join(PROFILES),
    )  # fmt: skip
    parser.add_argument("--subjects", type=_positive_int, default=3, metavar="N", help="subjects per profile (3)")
    parser.add_argument(
        "--spacing", type=_spacing, default=2.0, metavar="MM", help="1 (realistic) or 2 (fast, default)"
    )
    parser.add_argument("--seed", type=int, default=0, metavar="S", help="random seed (0); same seed, same files")
    parser.add_argument("--qa", action="store_true", help="also write qa/qa_report.json and a montage per profile")
    parser.add_argument("--workers", type=_positive_int, default=None, metavar="W", help="processes (default 2)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    start = time.perf_counter()
    try:
        manifest = generate(
            args.out, args.profiles, args.subjects, args.spacing, args.seed, qa=args.qa, workers=args.workers
        )
    except (ValueError, OSError) as e:
        parser.error(str(e))
    n = sum(len(p["subjects"]) for p in manifest["profiles"].values())
    print(
        f"wrote {n} subjects ({', '.join(manifest['profiles'])}) to {args.out} in {time.perf_counter() - start:.1f} s"
    )
    if args.qa:
        import json
        from pathlib import Path

        report = json.loads((Path(args.out) / "qa" / "qa_report.json").read_text())
        print(f"QA {'passed' if report['passed'] else 'FAILED'}: see {Path(args.out) / 'qa'}")
        return 0 if report["passed"] else 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
