"""Reduced precision only where the hardware has it.

bfloat16 autocast on a CPU without native bf16 (AVX-512 BF16 or AMX) is emulated and 30-90x slower than float32
(AVX2-only AMD EPYC: one Conv3d 8->16 on 48^3, 0.18 s in fp32, 5.4 s under bf16). So ``bf16: true`` means "bf16
where native": elsewhere one log line and float32. ``"force"`` turns it on anyway, for experiments."""

from __future__ import annotations

import functools
import logging

import torch

logger = logging.getLogger(__name__)

#: The values a ``bf16`` knob takes.
BF16_CHOICES = (False, True, "force")


@functools.cache
def cpu_capability() -> str:
    """What PyTorch's CPU kernels were dispatched to (``AVX2``, ``AVX512``, ...), plus native bf16 units if any."""
    probes = {"AVX512_BF16": "_is_avx512_bf16_supported", "AMX": "_is_amx_tile_supported"}
    extras = [name for name, probe in probes.items() if getattr(torch.cpu, probe, lambda: False)()]
    return "+".join([torch.backends.cpu.get_cpu_capability(), *extras])


def native_bf16(device: torch.device | str) -> bool:
    """Whether ``device`` computes in bfloat16 natively (CUDA: the GPU says; CPU: AVX-512 BF16 or AMX)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type == "cpu" and any(unit in cpu_capability() for unit in ("AVX512_BF16", "AMX"))


@functools.cache
def _warn_once(device_type: str) -> None:
    logger.warning(
        f"bf16 requested but this {device_type} has no native bfloat16 ({cpu_capability()}): running in float32 "
        "(bf16 would be emulated and many times slower; bf16='force' overrides)"
    )


def bf16_autocast(requested: bool | str, device: torch.device | str) -> bool:
    """Whether to run under bfloat16 autocast for a ``bf16`` knob value on ``device``."""
    if requested not in BF16_CHOICES:
        raise ValueError(f"bf16 must be True, False or 'force', got {requested!r}")
    if requested == "force" or not requested:
        return bool(requested)
    if native_bf16(device):
        return True
    _warn_once(torch.device(device).type)
    return False
