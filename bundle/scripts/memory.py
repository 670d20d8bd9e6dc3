"""Keep freed host memory inside the process during CPU training.

glibc serves every allocation above 32 MiB (most 3D activations) with a fresh ``mmap`` and unmaps it on free, so each
training step faults in and zeroes its activation memory again: 15-36 % of the CPU time of a paper-preset step
(64^3, batch 2, 2-core VM), growing with peak memory (MoME holds six networks' activations). Serving big blocks from
a never-trimmed heap removes almost all those faults after the first steps; the process then keeps its peak resident
size until it exits, fine for training but why this is not done for inference or the MONAI Label server."""

from __future__ import annotations

import ctypes
import sys


def keep_freed_memory() -> bool:
    """Switch glibc malloc to heap-only, never-trimmed allocation; ``False`` where the C library is not glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:  # the C library already loaded into this process; no library search
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # a C library without mallopt: nothing to tune
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # malloc.h's M_MMAP_MAX (-4) = 0: no mmap; M_TRIM_THRESHOLD (-1) = -1: never trim. mallopt returns 1 on success
    return bool(mallopt(-4, 0)) and bool(mallopt(-1, -1))
