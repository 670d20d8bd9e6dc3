"""bf16 only where the CPU has native bfloat16: elsewhere one warning and float32; 'force' for experiments."""

from __future__ import annotations

import logging

import pytest
import torch

from scripts import precision
from scripts.inference import MirroredSlidingWindowInferer


def test_capability_names_the_kernels_in_use() -> None:
    assert precision.cpu_capability().split("+")[0] == torch.backends.cpu.get_cpu_capability()


def test_without_native_bf16_the_knob_falls_back_to_float32(monkeypatch, caplog) -> None:
    monkeypatch.setattr(precision, "cpu_capability", lambda: "AVX2")
    precision._warn_once.cache_clear()
    with caplog.at_level(logging.WARNING):
        assert precision.bf16_autocast(True, "cpu") is False
        assert precision.bf16_autocast(True, "cpu") is False
    assert sum("no native bfloat16" in r.message for r in caplog.records) == 1  # said once, not per call
    assert precision.bf16_autocast("force", "cpu") is True
    assert precision.bf16_autocast(False, "cpu") is False
    monkeypatch.setattr(precision, "cpu_capability", lambda: "AVX512+AVX512_BF16")
    assert precision.bf16_autocast(True, "cpu") is True
    with pytest.raises(ValueError, match="force"):
        precision.bf16_autocast("yes", "cpu")


def test_the_inferer_runs_float32_where_bf16_is_not_native(monkeypatch) -> None:
    monkeypatch.setattr(precision, "cpu_capability", lambda: "AVX2")
    seen = []

    def net(x):
        seen.append(torch.get_autocast_dtype("cpu") if torch.is_autocast_enabled("cpu") else torch.float32)
        return x * 2

    out = MirroredSlidingWindowInferer(None, bf16=True, divisor=16)(torch.ones(1, 1, 16, 16, 16), net)
    assert seen == [torch.float32] and out.dtype == torch.float32
    with pytest.raises(ValueError, match="bf16"):
        MirroredSlidingWindowInferer(None, bf16="yes")
