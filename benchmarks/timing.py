"""Side-by-side timing on a shared, noisy machine: interleaved repetitions, medians, foreign-load check."""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable

from scripts.atomic import save_json
from scripts.precision import cpu_capability, native_bf16

__all__ = ["cpu_busy_fraction", "interleaved", "machine", "write_results"]


def _cpu_times() -> tuple[float, float]:
    with open("/proc/stat") as f:
        fields = [float(v) for v in f.readline().split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


def cpu_busy_fraction(seconds: float = 0.5) -> float:
    """Share of all cores busy over a short window (before a repetition: is someone else using the machine?)."""
    b0, t0 = _cpu_times()
    time.sleep(seconds)
    b1, t1 = _cpu_times()
    return (b1 - b0) / max(t1 - t0, 1e-9)


def interleaved(
    candidates: dict[str, Callable[[], object]],
    reps: int = 3,
    warmup: int = 1,
    quiet_below: float = 0.15,
    wait_s: float = 20,
) -> dict[str, dict]:
    """Run every candidate once per round, ``reps`` rounds after ``warmup``; report median and all times.

    Rounds alternate the order of candidates so drifts in machine load hit all of them alike. Before each round
    we wait (up to ``wait_s``; a smoke run: 0) for a quiet machine and record the busy fraction seen; each run's
    kernel (system) seconds and minor page faults are recorded too.
    """
    for _ in range(warmup):
        for fn in candidates.values():
            fn()
    times: dict[str, list[float]] = {name: [] for name in candidates}
    kernel: dict[str, list[tuple[float, int]]] = {name: [] for name in candidates}
    busy = []
    names = list(candidates)
    for r in range(reps):
        deadline = time.monotonic() + wait_s
        load = cpu_busy_fraction()
        while load > quiet_below and time.monotonic() < deadline:
            load = cpu_busy_fraction()
        busy.append(load)
        for name in names if r % 2 == 0 else names[::-1]:
            before = resource.getrusage(resource.RUSAGE_SELF)
            t = time.perf_counter()
            candidates[name]()
            times[name].append(time.perf_counter() - t)
            after = resource.getrusage(resource.RUSAGE_SELF)
            kernel[name].append((after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt))
    return {
        name: {
            "median_s": statistics.median(ts),
            "times_s": ts,
            "busy_before": busy,
            # kernel time and page faults of this process: memory first-touch costs show up here, not in user time
            "sys_s": [k[0] for k in kernel[name]],
            "minor_faults": [k[1] for k in kernel[name]],
        }
        for name, ts in times.items()
    }


def machine() -> dict:
    import torch

    cpu = platform.processor() or "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "cpu_capability": cpu_capability(),
        "native_bf16": native_bf16("cpu"),
        "python": platform.python_version(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "date": time.strftime("%Y-%m-%d"),
    }


def write_results(path: os.PathLike | None, results: dict) -> None:
    """Write a benchmark's results as JSON when a path is given (``--json``)."""
    if path is not None:
        save_json(results, path)
