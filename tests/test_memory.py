from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BUNDLE = Path(__file__).resolve().parents[1] / "bundle"

# in a child process: the setting lasts for the life of the process and must not leak into the test session
PROBE = f"""
import resource, sys
import torch
sys.path.insert(0, {str(BUNDLE)!r})
from scripts.memory import keep_freed_memory

def step() -> None:  # a training step's pattern: several blocks above glibc's 32 MiB mmap limit, all freed at the end
    a, b = torch.ones(2**24), torch.ones(3 * 2**23)
    (a.sum() + b.sum()).item()

def faults_of_last_step(steps: int = 8) -> int:
    for _ in range(steps - 1):
        step()
    start = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    step()
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt - start

if sys.argv[1] == "keep":
    assert keep_freed_memory()
print(faults_of_last_step())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning is Linux-only")
def test_repeated_steps_stop_faulting_in_fresh_pages() -> None:
    def faults(mode: str) -> int:
        probe = subprocess.run([sys.executable, "-c", PROBE, mode], capture_output=True, text=True, check=True)
        return int(probe.stdout)

    default, kept = faults("default"), faults("keep")
    assert default > 10_000, "glibc's default maps (and faults in) 160 MiB of fresh pages on every step"
    assert kept < default / 20, (default, kept)


def test_training_config_applies_it() -> None:
    import json

    config = json.loads((BUNDLE / "configs/train.json").read_text())
    assert "$scripts.memory.keep_freed_memory()" in config["initialize"]
