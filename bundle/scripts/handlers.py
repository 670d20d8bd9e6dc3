"""Ignite handlers for MoME training: the curriculum, the reference's gate-only gradient clipping, and atomic
checkpoints."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from pathlib import Path

import torch
from ignite.engine import Engine, Events
from ignite.handlers.checkpoint import BaseSaveHandler, Checkpoint
from monai.engines import IterationEvents
from monai.handlers import CheckpointSaver
from torch import nn

from scripts.atomic import save_torch

__all__ = [
    "AtomicCheckpointSaver",
    "CurriculumHandler",
    "GateGradientClipHandler",
    "TrainingStateHandler",
    "curriculum_weight",
    "load_expert_weights",
]

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


class _AtomicDiskSaver(BaseSaveHandler):
    """Write each checkpoint to a temporary file and rename it into place."""

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, key: str | None = None) -> None:
        self.dirname = Path(dirname)
        self.filename = filename
        self.key = key

    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if self.key is not None:  # Ignite stores a lone object's state dict bare; keep the bundle's {"model": ...}
            checkpoint = {self.key: checkpoint}
        save_torch(checkpoint, self.dirname / (self.filename or filename))

    def remove(self, filename: str) -> None:
        # a fixed name is replaced by the next save; removing it first would leave a window with no model at all
        if self.filename is None:
            (self.dirname / filename).unlink(missing_ok=True)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` whose files are written atomically.

    MONAI's own saver writes in place, so a crash or a concurrent reader (MONAI Label reloads ``model.pt`` when its
    mtime changes) can see a truncated file, and with a fixed file name the old file is deleted before the new one
    exists. Here a fixed name (``key_metric_filename``, ``final_filename``) is always replaced in one rename. And
    a single saved object keeps its name (``{"model": state_dict}``, the bundle convention) where Ignite would
    store the bare state dict.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        key = next(iter(self.save_dict)) if len(self.save_dict) == 1 else None
        for checkpoint, name in (
            (self._final_checkpoint, kwargs.get("final_filename")),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
            (self._interval_checkpoint, None),
        ):
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, name, key)


class TrainingStateHandler:
    """The resumable training state in one file: weights, optimizer, LR schedule, AMP scaler and the trainer's
    epoch and iteration. Saved atomically after every epoch (by rank 0 only); restored at start when ``resume``.

    It is a trainer handler that learns its trainer at ``attach``, so the config needs no reference from the
    trainer's own handler list back to the trainer. The curriculum weight is a function of the epoch, so it
    continues where it stopped too.
    """

    def __init__(
        self,
        path: str | os.PathLike,
        network: nn.Module,
        optimizer: torch.optim.Optimizer,
        lr_scheduler: object | None = None,
        resume: bool = False,
        map_location: str | torch.device | None = "cpu",
    ) -> None:
        self.path = Path(path)
        self.objects: dict = {"model": network, "optimizer": optimizer}
        if lr_scheduler is not None:
            self.objects["lr_scheduler"] = lr_scheduler
        self.resume = resume
        self.map_location = map_location

    def attach(self, engine: Engine) -> None:
        self.objects["trainer"] = engine
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            self.objects["scaler"] = engine.scaler
        if self.resume:
            engine.add_event_handler(Events.STARTED, self.load)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self.save)

    def load(self, engine: Engine) -> None:
        if not self.path.is_file():
            raise FileNotFoundError(f"resume requested but there is no training checkpoint at {self.path}")
        max_epochs = engine.state.max_epochs
        checkpoint = torch.load(self.path, map_location=self.map_location, weights_only=False)
        missing = sorted(set(self.objects) - set(checkpoint))
        if missing:
            raise KeyError(f"{self.path} lacks {missing}: not a training checkpoint of this bundle")
        Checkpoint.load_objects(self.objects, checkpoint)
        if engine.state.epoch >= max_epochs:
            raise ValueError(f"{self.path} is at epoch {engine.state.epoch}; raise `epochs` above it to continue")
        engine.state.max_epochs = max_epochs
        logger.info(f"resumed from {self.path} at epoch {engine.state.epoch}")

    def save(self, engine: Engine) -> None:
        if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank():
            return
        state = {}
        for name, obj in self.objects.items():
            obj = getattr(obj, "module", obj)  # no DDP "module." prefix on disk
            state[name] = obj.state_dict()
        save_torch(state, self.path)


def load_expert_weights(network: nn.Module, folder: str | os.PathLike) -> list[str]:
    """Stage 1 -> stage 2 hand-over: load ``expert_<modality>.pt`` (from ``train_experts.json``) into each expert.

    Unlike the reference, the 1x1x1 segmentation heads are loaded too (faster convergence; the reference starts
    them from random). Experts without a file keep their initialisation, and say so; finding none is an error.
    """
    folder = Path(folder)
    model = getattr(network, "module", network)
    loaded = []
    for k, modality in enumerate(model.modalities):
        path = folder / f"expert_{modality}.pt"
        if not path.is_file():
            logger.warning(f"no stage-1 weights for the {modality} expert at {path}; it starts from scratch")
            continue
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            model.experts[k].load_state_dict(state.get("model", state), strict=True)
        except RuntimeError as e:
            raise ValueError(f"{path} does not fit the {modality} expert of this network: {e}") from e
        loaded.append(modality)
    if not loaded:
        raise FileNotFoundError(f"experts_from={folder}: no expert_<modality>.pt files for {model.modalities}")
    logger.info(f"experts initialised from stage 1: {', '.join(loaded)}")
    return loaded
