from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine

from scripts.handlers import CurriculumHandler, GateGradientClipHandler, curriculum_weight
from scripts.mome import MoME


def test_curriculum_weight_schedule() -> None:
    assert curriculum_weight(0, 800) == 1.0
    assert curriculum_weight(400, 800) == pytest.approx(0.25)
    assert curriculum_weight(100, 800) == pytest.approx(0.765625)
    assert curriculum_weight(400, 800, power=3) == pytest.approx(0.125)
    assert curriculum_weight(800, 800) == 0.0
    with pytest.raises(ValueError):
        curriculum_weight(0, 0)


def test_handler_sets_weight_at_each_epoch_start() -> None:
    class Loss:
        expert_weight = -1.0

    loss, seen = Loss(), []
    engine = Engine(lambda e, b: seen.append((e.state.epoch, loss.expert_weight)))
    CurriculumHandler(loss, power=2).attach(engine)
    engine.run([0], max_epochs=4)
    assert seen == [(1, 1.0), (2, 0.5625), (3, 0.25), (4, 0.0625)]
    assert engine.state.metrics["curriculum_expert_weight"] == 0.0625


def test_gate_gradient_is_clipped_and_experts_are_not() -> None:
    model = MoME("small")
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)
    engine = Engine(lambda e, b: None)
    GateGradientClipHandler(model, max_norm=12.0)(engine)
    gate_norm = torch.norm(torch.stack([p.grad.norm() for p in model.gate.parameters()]))
    assert float(gate_norm) == pytest.approx(12.0, rel=1e-4)
    assert all(torch.all(p.grad == 10.0) for p in model.experts.parameters())
