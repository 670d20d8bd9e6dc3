from __future__ import annotations

import pytest
import torch
from ignite.engine import Engine, Events

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


def test_resume_keeps_the_best_model_and_its_score(tmp_path) -> None:
    """The best validation score is part of the resumable state: a worse first validation after a resume does not
    replace model.pt (Ignite's key-metric checkpoint keeps that score only in memory)."""
    from scripts.handlers import AtomicCheckpointSaver, BestModel

    def session(scores: list[float], state: dict | None = None) -> tuple[dict, BestModel]:
        net = torch.nn.Linear(1, 1)
        evaluator = Engine(lambda e, b: None)  # a validator whose score comes from the list
        evaluator.state.best_metric, evaluator.state.best_metric_epoch = -1.0, -1
        metric = iter(scores)
        evaluator.add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.state.metrics.update(dice=next(metric)))
        saver = AtomicCheckpointSaver(
            str(tmp_path), {"model": net}, save_key_metric=True, key_metric_name="dice",
            key_metric_filename="model.pt",
        )  # fmt: skip
        saver.attach(evaluator)
        best = BestModel(evaluator, saver)
        if state is not None:
            best.load_state_dict(state)
        for _ in scores:
            net.weight.data.fill_(float(len(list(tmp_path.iterdir()))) + torch.rand(()).item())
            evaluator.run([0])
        return best.state_dict(), best

    state, _ = session([0.8])
    saved = (tmp_path / "model.pt").read_bytes()
    assert state["saved"]["_saved"][0][0] == pytest.approx(0.8)
    state_after, _ = session([0.5], state)  # resumed: worse than the model on disk
    assert (tmp_path / "model.pt").read_bytes() == saved
    session([0.9], state_after)  # better: replaces it
    assert (tmp_path / "model.pt").read_bytes() != saved
