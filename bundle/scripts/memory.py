"""Keep freed host memory inside the process during CPU training.

glibc serves every allocation above 32 MiB (most 3D activations) with a fresh ``mmap`` and unmaps it on free, so
each training step faults in and zeroes all its activation memory again. On this project's 2-core VM that kernel
work was 15-36 % of the CPU time of a paper-preset training step (64^3, batch 2) and grew with the step's peak
memory, which penalises MoME (it holds six networks' activations at once). Serving big blocks from the heap and
never trimming it removes almost all the faults after the first few steps (small objects placed between big blocks
can still make the heap grow now and then); the price is that the process keeps its peak resident
size until it exits, which is fine for a training run and why this is not done for inference or the MONAI Label
server.
"""

from __future__ import annotations

import ctypes
import sys

__all__ = ["keep_freed_memory"]

# mallopt(3) parameter numbers from glibc's malloc.h
_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4


def keep_freed_memory() -> bool:
    """Switch glibc malloc to heap-only, never-trimmed allocation; ``False`` where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:  # the C library already loaded into this process; no library search
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # mallopt returns 1 on success; -1 as trim threshold turns trimming off entirely (mallopt(3))
    return bool(mallopt(_M_MMAP_MAX, 0)) and bool(mallopt(_M_TRIM_THRESHOLD, -1))
