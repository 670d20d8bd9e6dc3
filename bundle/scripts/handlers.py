"""Ignite handlers for MoME training: the curriculum and the reference's gate-only gradient clipping."""

from __future__ import annotations

import logging

import torch
from ignite.engine import Engine, Events
from monai.engines import IterationEvents
from torch import nn

__all__ = ["CurriculumHandler", "GateGradientClipHandler", "curriculum_weight"]

logger = logging.getLogger(__name__)


def curriculum_weight(epoch: int, max_epochs: int, power: float = 2.0) -> float:
    """Expert-loss weight ``(1 - e/E)^p`` at 0-based epoch ``e``: 1 at the start, 0 at the end."""
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
    return max(0.0, 1.0 - epoch / max_epochs) ** power


class CurriculumHandler:
    """Sets ``loss.expert_weight`` at every epoch start, from expert specialisation to collaborative fusion.

    The weight depends only on the trainer's epoch, so a resumed run continues the schedule where it stopped.
    It is published as ``engine.state.metrics["curriculum_expert_weight"]`` (picked up by the stats, TensorBoard
    and MLflow handlers) and logged.

    Args:
        loss: object with a settable ``expert_weight`` (a :class:`scripts.losses.MoMELoss`).
        max_epochs: E in the schedule; defaults to the trainer's ``max_epochs``.
        power: p in ``(1 - e/E)^p`` (2 in the current reference code, 3 in its first release).
    """

    def __init__(self, loss: nn.Module, max_epochs: int | None = None, power: float = 2.0) -> None:
        if power < 0:
            raise ValueError(f"curriculum power must be >= 0, got {power}")
        self.loss = loss
        self.max_epochs = max_epochs
        self.power = power

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        max_epochs = self.max_epochs or engine.state.max_epochs
        w = curriculum_weight(engine.state.epoch - 1, max_epochs, self.power)
        self.loss.expert_weight = w
        engine.state.metrics["curriculum_expert_weight"] = w
        logger.info(f"epoch {engine.state.epoch}: curriculum expert weight {w:.4f}")


class GateGradientClipHandler:
    """Clips the gating network's gradient norm after backward, as the reference does (experts are not clipped).

    Works with AMP: the gradients are unscaled first, which ``GradScaler.step`` then skips.
    """

    def __init__(self, network: nn.Module, max_norm: float = 12.0) -> None:
        self.network = network
        self.max_norm = max_norm

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        gate = getattr(self.network, "module", self.network).gate
        torch.nn.utils.clip_grad_norm_(gate.parameters(), self.max_norm)
