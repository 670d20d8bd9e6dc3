"""The MoME+ availability benchmark's harness (smoke: one BraTS phantom, two of the 15 combinations) on an untrained
small MoME+ and zero-filled U-Net: every combination is evaluated from its own sequences alone and lands in the
table and the heatmap."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.bench_plus import combinations, main
from scripts.mome_plus import PLUS_MODALITIES, MoMEPlus, ZeroFillUNet
from scripts.record import KEY


def test_combinations_are_the_15_non_empty_subsets() -> None:
    combos = combinations(PLUS_MODALITIES)
    assert len(combos) == 15 and len({tuple(c) for c in combos}) == 15 and all(combos)
    assert ["T1", "T1c", "T2", "FLAIR"] in combos and ["FLAIR"] in combos


@pytest.mark.slow
def test_smoke_run_fills_the_table_and_the_heatmap(tmp_path: Path) -> None:
    torch.manual_seed(0)
    record = {"network": "MoMEPlus", "preset": "small", "modalities": list(PLUS_MODALITIES), "num_classes": 2,
              "gate_activation": None, "spacing": 2.0, "register": False, "normalization": "brain",
              "patch_size": [32, 32, 32]}  # fmt: skip
    weights = tmp_path / "model_plus.pt"
    torch.save({"model": MoMEPlus("small").state_dict(), KEY: record}, weights)
    baseline = tmp_path / "zero_fill_unet.pt"
    torch.save({"model": ZeroFillUNet("small").state_dict(), KEY: {**record, "network": "ZeroFillUNet"}}, baseline)
    out = tmp_path / "bench" / "plus.json"
    result = main(["--weights", str(weights), "--baseline", str(baseline), "--smoke", "--json", str(out)])
    assert set(result["baseline"]["case_level_dice"]) == set(result["case_level_dice"])
    assert set(result["dice_by_lesion_type"]) == {"T1c+T2+FLAIR", "T1+T1c+T2+FLAIR"}
    assert all(0 <= d <= 1 for r in result["dice_by_lesion_type"].values() for d in r.values())
    assert result["n_cases"] == {"T1c+T2+FLAIR": 1, "T1+T1c+T2+FLAIR": 1}
    assert json.loads(out.read_text())["all_sequences"] == result["case_level_dice"]["T1+T1c+T2+FLAIR"]
    assert out.with_name("plus_heatmap.png").stat().st_size > 1000
