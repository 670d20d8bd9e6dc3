"""Expert-disagreement scoring (the number, the cost cap) and the uncertainty strategy that consumes it."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from monailabel.datastore.local import LocalDatastore

from monailabel_app.lib.scoring import KEY_MODEL, KEY_SCORE, ExpertDisagreementScoring, expert_disagreement
from monailabel_app.lib.strategy import Uncertainty, WeightedRandom


def test_agreeing_experts_score_zero_and_opposed_experts_score_ln2() -> None:
    same = torch.randn(2, 4, 4, 4).repeat(3, 1, 1, 1)  # 3 experts, 2 classes, identical logits
    assert expert_disagreement(same, num_classes=2) == pytest.approx(0.0, abs=1e-6)
    sure_bg = torch.tensor([20.0, -20.0])[:, None, None, None].expand(2, 4, 4, 4)
    opposed = torch.cat([sure_bg, sure_bg.flip(0)])  # expert 0 says background, expert 1 says lesion
    assert expert_disagreement(opposed, num_classes=2) == pytest.approx(math.log(2), abs=1e-4)


def test_disagreement_is_averaged_over_the_mask_only() -> None:
    sure_bg = torch.tensor([20.0, -20.0])[:, None, None, None].expand(2, 4, 4, 4).clone()
    lesion = sure_bg.flip(0)
    expert1 = sure_bg.clone()
    expert1[:, :2] = lesion[:, :2]  # the experts disagree on half of the volume
    experts = torch.cat([sure_bg, expert1])
    mask = torch.zeros(4, 4, 4, dtype=torch.bool)
    mask[:2] = True
    assert expert_disagreement(experts, 2, mask) == pytest.approx(math.log(2), abs=1e-4)
    assert expert_disagreement(experts, 2) == pytest.approx(math.log(2) / 2, abs=1e-4)
    with pytest.raises(ValueError, match="K >= 2"):
        expert_disagreement(sure_bg, 2)


@dataclass
class _Weights:
    version: str


class _FakeInferTask:
    """Stands in for the MoME infer task: per-image expert logits, counting forwards."""

    def __init__(self, version: str | None, spread: dict[str, float]) -> None:
        self.version, self.spread, self.calls = version, spread, []

    def weights(self) -> _Weights | None:
        return _Weights(self.version) if self.version else None

    def aux_outputs(self, image: str, device: str) -> dict[str, torch.Tensor]:
        name = Path(image).name.split(".")[0]
        self.calls.append(name)
        if name not in self.spread:
            raise ValueError("unreadable")
        bg = torch.tensor([1.0, -1.0])[:, None, None, None].expand(2, 3, 3, 3)
        experts = torch.cat([bg, bg * (1 - self.spread[name])])
        return {"image": torch.ones(1, 3, 3, 3), "fused": bg, "experts": experts}


@pytest.fixture
def datastore(tmp_path: Path) -> LocalDatastore:
    for name in ("a", "b", "c", "d"):
        (tmp_path / f"{name}.nii.gz").write_bytes(b"")  # the datastore only lists files; scoring is faked
    return LocalDatastore(str(tmp_path), extensions=["*.nii.gz"], auto_reload=False)


def test_scoring_is_capped_and_skips_images_scored_for_the_current_weights(datastore: LocalDatastore) -> None:
    task = _FakeInferTask("v1", {"a": 0.1, "b": 3.0, "c": 1.0})  # "d" fails to load
    scoring = ExpertDisagreementScoring(task, max_images=2)
    assert scoring({}, datastore)["executed"] == 2
    assert task.calls == ["a", "b"]
    summary = scoring({}, datastore)
    assert summary["executed"] == 2 and summary["failed"] == 1 and task.calls[2:] == ["c", "d"]
    assert datastore.get_image_info("d")["mome_disagreement_error"] == "unreadable"
    assert scoring({}, datastore)["executed"] == 0  # everything scored for v1, the failure included
    assert len(task.calls) == 4
    task.version = "v2"  # training replaced the weights: scores are stale
    assert scoring({"max_images": 10}, datastore)["executed"] == 4
    assert datastore.get_image_info("b")[KEY_MODEL] == "v2"
    assert datastore.get_image_info("b")[KEY_SCORE] > datastore.get_image_info("a")[KEY_SCORE]


def test_scoring_without_weights_does_nothing(datastore: LocalDatastore) -> None:
    task = _FakeInferTask(None, {})
    assert ExpertDisagreementScoring(task)({}, datastore)["executed"] == 0 and task.calls == []


def test_uncertainty_picks_the_most_disputed_unlabelled_image(datastore: LocalDatastore, tmp_path: Path) -> None:
    task = _FakeInferTask("v1", {"a": 0.1, "b": 3.0, "c": 1.0, "d": 0.5})
    strategy = Uncertainty(ExpertDisagreementScoring(task, max_images=8))
    # nothing scored yet: the strategy scores (capped) on demand, then chooses
    assert strategy({"strategy": "uncertainty"}, datastore)["id"] == "b"
    assert len(task.calls) == 4
    # a label on "b" removes it from the candidates; no new forwards are needed
    label = tmp_path / "label.nii.gz"
    label.write_bytes(b"")
    datastore.save_label("b", str(label), "final", {})
    assert strategy({"strategy": "uncertainty"}, datastore)["id"] == "c"
    assert len(task.calls) == 4


def test_uncertainty_passes_over_images_just_handed_out(datastore: LocalDatastore) -> None:
    task = _FakeInferTask("v1", {"a": 0.1, "b": 3.0, "c": 1.0, "d": 0.5})
    strategy = Uncertainty(ExpertDisagreementScoring(task), reserve_seconds=600)
    datastore.update_image_info("b", {"strategy": {"uncertainty": {"ts": int(time.time())}}})
    assert strategy({"strategy": "uncertainty"}, datastore)["id"] == "c"


def test_uncertainty_without_weights_falls_back_to_least_recently_served(datastore: LocalDatastore) -> None:
    datastore.update_image_info("a", {"strategy": {"uncertainty": {"ts": 100}}})
    result = Uncertainty(ExpertDisagreementScoring(_FakeInferTask(None, {})))({"strategy": "uncertainty"}, datastore)
    assert result["id"] == "b" and "no trained weights" in result["fallback"]


def test_random_keeps_serving_when_every_image_was_just_served(datastore: LocalDatastore) -> None:
    now = int(time.time()) + 5  # served "in the future" too (a clock step back): weights would be zero or below
    for name in ("a", "b", "c", "d"):
        datastore.update_image_info(name, {"strategy": {"random": {"ts": now}}})
    picks = {WeightedRandom()({"strategy": "random"}, datastore)["id"] for _ in range(40)}
    assert picks <= {"a", "b", "c", "d"} and len(picks) > 1
    datastore.update_image_info("a", {"strategy": {"random": {"ts": 0}}})  # never served: nearly always chosen
    assert WeightedRandom()({"strategy": "random"}, datastore)["id"] == "a"
