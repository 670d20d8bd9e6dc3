"""Command lines of the bundle's workflows, built in one place for the demo, the tests and the benchmarks.

Every command runs from ``bundle/`` (:data:`BUNDLE`) with the CPU overlay ``configs/cpu.json`` last, unless
``cpu=False``; knobs become ``--key value`` overrides in the spelling ``monai.bundle run`` (Python Fire) parses.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BUNDLE", "CONFIGS", "bundle_command", "config_files", "knob"]

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
CONFIGS = BUNDLE / "configs"


def config_files(configs: Sequence[str], cpu: bool = True) -> list[str]:
    """Bundle-relative config paths, the CPU overlay last."""
    names = [*configs, *(["cpu.json"] if cpu and "cpu.json" not in configs else [])]
    missing = [n for n in names if not (CONFIGS / n).is_file()]
    if missing:
        raise FileNotFoundError(f"no such bundle config(s) in {CONFIGS}: {', '.join(missing)}")
    return [f"configs/{n}" for n in names]


def knob(value: object) -> str:
    """One override value as ``monai.bundle run`` reads it: ``True``/``False``, ``[32, 32, 32]``, ``$None``."""
    if value is None:
        return "$None"  # monai.bundle.run drops overrides whose value is None
    if isinstance(value, (bool, list, tuple)):
        return repr(list(value) if isinstance(value, tuple) else value)
    return str(value)


def bundle_command(configs: Sequence[str], cpu: bool = True, command: str = "run", **knobs: object) -> list[str]:
    """``python -m monai.bundle run --config_file ... --logging_file configs/logging.conf --key value ...``."""
    files = config_files(configs, cpu)
    cmd = [sys.executable, "-m", "monai.bundle", command, "--config_file", files[0] if len(files) == 1 else str(files)]
    cmd += ["--logging_file", "configs/logging.conf"]
    for key, value in knobs.items():
        cmd += [f"--{key}", knob(value)]
    return cmd
