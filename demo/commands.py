"""Command lines of the bundle's workflows, built in one place for the demo, the tests and the benchmarks.

Every command runs from ``bundle/`` (:data:`BUNDLE`) with the CPU overlay ``configs/cpu.json`` last, unless
``cpu=False``; knobs become ``--key value`` overrides in the spelling ``monai.bundle run`` (Python Fire) parses.
:func:`run_bundle` runs the same workflow in this process (no interpreter start-up per run: the benchmarks run
dozens), with the same config files and knobs.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BUNDLE", "CONFIGS", "bundle_command", "config_files", "cpu_conf", "knob", "run_bundle"]

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"
CONFIGS = BUNDLE / "configs"


def config_files(configs: Sequence[str], cpu: bool = True) -> list[str]:
    """Bundle-relative config paths, the CPU overlay last."""
    names = [*configs, *(["cpu.json"] if cpu and "cpu.json" not in configs else [])]
    missing = [n for n in names if not (CONFIGS / n).is_file()]
    if missing:
        raise FileNotFoundError(f"no such bundle config(s) in {CONFIGS}: {', '.join(missing)}")
    return [f"configs/{n}" for n in names]


def cpu_conf() -> dict[str, str]:
    """The CPU overlay's network and preprocessing knobs as MONAI Label ``--conf`` values (the app's spelling)."""
    import json

    cpu = json.loads((CONFIGS / "cpu.json").read_text())
    knobs = {k: cpu[k] for k in ("preset", "spacing", "register", "sw_roi_size")}  # None: one window per image
    return {k: str(v).lower() if isinstance(v, (bool, type(None))) else str(v) for k, v in knobs.items()}


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


def run_bundle(configs: Sequence[str], log: str | Path | None = None, cpu: bool = True, **knobs: object) -> None:
    """``monai.bundle.run`` here, as :func:`bundle_command` would run it; its log lines appended to ``log``."""
    import logging

    import monai.bundle

    files = [str(BUNDLE / f) for f in config_files(configs, cpu)]
    values = {k: "$None" if v is None else list(v) if isinstance(v, tuple) else v for k, v in knobs.items()}
    root, handler = logging.getLogger(), logging.FileHandler(log) if log else logging.NullHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s - %(name)s - %(levelname)s - %(message)s"))
    level, root.level = root.level, logging.INFO
    root.addHandler(handler)
    try:  # logging_file=False: this process's logging stays as it is (the file above gets the lines)
        monai.bundle.run(config_file=files, logging_file=False, bundle_root=str(BUNDLE), **values)
    finally:
        root.removeHandler(handler)
        root.level = level
        handler.close()
