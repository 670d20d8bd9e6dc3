"""Ignite handlers for MoME training: the curriculum, the reference's gate-only gradient clipping, atomic
checkpoints and the resumable training state (MONAI's saver and loader, with the best score kept)."""

from __future__ import annotations

import logging
import os
import zipfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import ignite.distributed as idist
import torch
from ignite.engine import Engine, Events
from ignite.handlers.checkpoint import BaseSaveHandler
from monai.engines import IterationEvents
from monai.handlers import CheckpointLoader, CheckpointSaver
from torch import nn

from scripts.atomic import save_torch
from scripts.errors import InputError

logger = logging.getLogger(__name__)


def curriculum_weight(epoch: int, max_epochs: int, power: float = 2.0) -> float:
    """Expert-loss weight ``(1 - e/E)^p`` at 0-based epoch ``e``: 1 at the start, 0 at the end."""
    if max_epochs < 1:
        raise ValueError(f"max_epochs must be >= 1, got {max_epochs}")
    return max(0.0, 1.0 - epoch / max_epochs) ** power


class CurriculumHandler:
    """Sets ``loss.expert_weight`` (of a :class:`scripts.losses.MoMELoss`) to :func:`curriculum_weight` at every
    epoch start, from expert specialisation to collaborative fusion. ``max_epochs`` defaults to the trainer's;
    ``power`` is 2 in the current reference code, 3 in its first release. The weight depends only on the trainer's
    epoch (a resumed run continues the schedule); it is logged and published as
    ``engine.state.metrics["curriculum_expert_weight"]`` for the stats, TensorBoard and MLflow handlers."""

    def __init__(self, loss: nn.Module, max_epochs: int | None = None, power: float = 2.0) -> None:
        if power < 0:
            raise ValueError(f"curriculum power must be >= 0, got {power}")
        self.loss, self.max_epochs, self.power = loss, max_epochs, power

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(Events.EPOCH_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        w = curriculum_weight(engine.state.epoch - 1, self.max_epochs or engine.state.max_epochs, self.power)
        self.loss.expert_weight = engine.state.metrics["curriculum_expert_weight"] = w
        logger.info(f"epoch {engine.state.epoch}: curriculum expert weight {w:.4f}")


class GateGradientClipHandler:
    """Clips the gating network's gradient norm after backward, as the reference does (experts are not clipped).
    With AMP the gradients are unscaled first, which ``GradScaler.step`` then skips."""

    def __init__(self, network: nn.Module, max_norm: float = 12.0) -> None:
        self.network, self.max_norm = network, max_norm

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        if getattr(engine, "amp", False) and getattr(engine, "scaler", None) is not None:
            engine.scaler.unscale_(engine.optimizer)
        gate = getattr(self.network, "module", self.network).gate
        torch.nn.utils.clip_grad_norm_(gate.parameters(), self.max_norm)


class SkipNonFiniteSteps:
    """Skips a training step whose loss or gradients are NaN/inf (as fp16 AMP's GradScaler does), and stops with a
    clear error after ``patience`` such steps in a row (the stock trainer steps on, writing NaN weights). Seen on CPU:
    an occasional NaN gradient in an expert's bottleneck conv (2^3 voxels at 32^3), more so with bf16/channels-last."""

    def __init__(self, patience: int = 5) -> None:
        self.patience, self.in_a_row, self.skipped = int(patience), 0, 0

    def attach(self, engine: Engine) -> None:
        engine.add_event_handler(IterationEvents.BACKWARD_COMPLETED, self)

    def __call__(self, engine: Engine) -> None:
        finite = loss_finite = bool(torch.isfinite(engine.state.output["loss"]).all())
        # with fp16 AMP an inf gradient is the GradScaler's business: it skips that step and lowers its scale
        if finite and getattr(engine, "scaler", None) is None:
            grads = [p.grad for group in engine.optimizer.param_groups for p in group["params"] if p.grad is not None]
            finite = not grads or bool(torch.stack([torch.isfinite(g).all() for g in grads]).all())
        if finite:
            self.in_a_row = 0
            return
        self.in_a_row += 1
        self.skipped += 1
        what = "gradient" if loss_finite else "loss"
        if self.in_a_row >= self.patience:
            raise FloatingPointError(
                f"non-finite {what} in {self.in_a_row} steps in a row (iteration {engine.state.iteration}, epoch "
                f"{engine.state.epoch}); training stopped, the weights and the last checkpoint are intact. Lower "
                "--learning_rate, or run with --bf16 False / --channels_last False if they were on"
            )
        engine.optimizer.zero_grad(set_to_none=True)  # the optimiser's step then leaves every weight as it is
        logger.warning(f"iteration {engine.state.iteration}: non-finite {what}, step skipped ({self.skipped} so far)")


class _AtomicDiskSaver(BaseSaveHandler):
    """Writes each checkpoint to a temporary file renamed into place, on rank 0 only (all ranks run the handlers)."""

    def __init__(self, dirname: str | os.PathLike, filename: str | None = None, key: str | None = None) -> None:
        self.dirname, self.filename, self.key = Path(dirname), filename, key

    @idist.one_rank_only()
    def __call__(self, checkpoint: Mapping, filename: str, metadata: Mapping | None = None) -> None:
        if self.key is not None:  # Ignite stores a lone object's state dict bare; keep the bundle's {"model": ...}
            checkpoint = {self.key: checkpoint}
        save_torch(checkpoint, self.dirname / (self.filename or filename))

    @idist.one_rank_only()
    def remove(self, filename: str) -> None:
        # a fixed name is replaced by the next save; removing it first would leave a window with no model at all
        if self.filename is None:
            (self.dirname / filename).unlink(missing_ok=True)


class AtomicCheckpointSaver(CheckpointSaver):
    """MONAI's ``CheckpointSaver`` writing atomically: MONAI's writes in place, so a crash or a concurrent reader
    (MONAI Label reloads ``model.pt`` when its mtime changes) can see a truncated file, and a fixed file name is
    deleted before the new file exists. Here a fixed name (``key_metric_filename``, ``final_filename``,
    ``interval_filename`` for the epoch-interval checkpoint) is replaced in one rename, and a single saved object
    keeps its name (``{"model": state_dict}``, the bundle convention)."""

    def __init__(self, *args, interval_filename: str | None = None, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        key = next(iter(self.save_dict)) if len(self.save_dict) == 1 else None
        for checkpoint, name in (
            (self._final_checkpoint, kwargs.get("final_filename")),
            (self._key_metric_checkpoint, kwargs.get("key_metric_filename")),
            (self._interval_checkpoint, interval_filename),
        ):
            if checkpoint is not None:
                checkpoint.save_handler = _AtomicDiskSaver(self.save_dir, name, key)


class BestModel:
    """The best validation score so far, as part of the resumable training state: Ignite's key-metric checkpoint
    keeps it only in memory, so after a resume the first validation would replace ``model.pt`` even when worse."""

    def __init__(self, evaluator: Engine, saver: CheckpointSaver) -> None:
        self.evaluator = evaluator
        self.checkpoint = saver._key_metric_checkpoint  # MONAI's saver holds Ignite's Checkpoint here

    def state_dict(self) -> dict:
        state = self.evaluator.state
        return {
            "best_metric": float(state.best_metric),
            "best_metric_epoch": int(state.best_metric_epoch),
            "saved": self.checkpoint.state_dict() if self.checkpoint is not None else {"_saved": []},
        }

    def load_state_dict(self, state: Mapping) -> None:
        self.evaluator.state.best_metric = float(state["best_metric"])
        self.evaluator.state.best_metric_epoch = int(state["best_metric_epoch"])
        if self.checkpoint is not None:
            self.checkpoint.load_state_dict(state["saved"])


def training_state(trainer: Engine, network: nn.Module, optimizer: torch.optim.Optimizer, **extra: object) -> dict:
    """What ``checkpoint.pt`` holds: weights, optimizer, trainer (epoch, iteration), AMP scaler and ``extra``
    (LR schedule, best model) -- the ``save_dict`` of the state saver and the ``load_dict`` of a resume."""
    state: dict = {"model": network, "optimizer": optimizer, "trainer": trainer}
    state.update({k: v for k, v in extra.items() if v is not None})
    if getattr(trainer, "amp", False) and getattr(trainer, "scaler", None) is not None:
        state["scaler"] = trainer.scaler
    return state


def check_resume(path: str | os.PathLike, needed: tuple[str, ...] = ("model", "optimizer", "trainer")) -> set[str]:
    """The keys of a training checkpoint, or an :class:`InputError` naming it. Run in ``initialize`` too, so a missing
    or damaged ``checkpoint.pt`` is reported before any data is cached, and not from inside Ignite's run."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"resume requested but there is no training checkpoint at {path}")
    try:
        # mmap: the keys without reading the tensors (a paper-preset state with its optimizer is gigabytes)
        keys = set(torch.load(path, map_location="cpu", weights_only=True, mmap=True))
    except Exception as e:
        why = "not in PyTorch's file format: truncated, overwritten or another kind of file"
        if zipfile.is_zipfile(path):  # torch.save's format, but unreadable as tensors
            why = f"{type(e).__name__}: {' '.join(str(e).split())[:200]}"
        raise InputError(f"{path}: not a readable training checkpoint ({why})") from e
    if missing := sorted(set(needed) - keys):
        raise InputError(f"{path} lacks {missing}: not a training checkpoint of this bundle")
    return keys


class ResumeLoader(CheckpointLoader):
    """MONAI's ``CheckpointLoader`` for ``checkpoint.pt`` with errors that name the file and say what to do."""

    def __call__(self, engine: Engine) -> None:
        path = Path(self.load_path)
        check_resume(path, tuple(self.load_dict))
        max_epochs = engine.state.max_epochs
        super().__call__(engine)
        if engine.state.epoch >= max_epochs:
            raise InputError(f"{path} is at epoch {engine.state.epoch}; raise `epochs` above it to continue")
        logger.info(f"resumed from {path} at epoch {engine.state.epoch}")


def load_model_weights(network: nn.Module, path: str | os.PathLike, **knobs: Any) -> nn.Module:
    """Fine-tuning: start from the weights of a ``model.pt`` (e.g. the released model), loaded strictly into float32
    (a half-precision release too). Its record must agree with this training's ``knobs`` (preset, spacing, ...):
    a network trained for another grid or normalisation would silently learn from the wrong images."""
    from scripts import record

    path = Path(path)
    if not path.is_file():
        raise InputError(f"init_from={path}: no such weights file")
    found = record.read(path)
    record.check(path, found, **knobs)
    state = torch.load(path, map_location="cpu", weights_only=True)
    state = state.get("model", state)
    model = getattr(network, "module", network)
    try:
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in state.items()}, strict=True)
    except RuntimeError as e:
        raise InputError(f"{path} does not fit this network ({' '.join(str(e).split())[:300]})") from e
    logger.info(f"initialised from {path} ({found})")
    return network


def load_expert_weights(network: nn.Module, folder: str | os.PathLike) -> list[str]:
    """Stage 1 -> 2 hand-over: load ``expert_<modality>.pt`` (from ``train_experts.json``) into each expert, with its
    1x1x1 head (the reference starts those from random; loading them converges faster). Experts without a file keep
    their initialisation, and say so; finding none is an error."""
    folder = Path(folder)
    model = getattr(network, "module", network)
    loaded = []
    for modality, expert in zip(model.modalities, model.experts, strict=True):
        path = folder / f"expert_{modality}.pt"
        if not path.is_file():
            logger.warning(f"no stage-1 weights for the {modality} expert at {path}; it starts from scratch")
            continue
        state = torch.load(path, map_location="cpu", weights_only=True)
        try:
            expert.load_state_dict(state.get("model", state), strict=True)
        except RuntimeError as e:
            why = " ".join(str(e).split())[:300]
            raise InputError(f"{path} does not fit the {modality} expert of this network ({why})") from e
        loaded.append(modality)
    if not loaded:
        raise InputError(f"experts_from={folder}: no expert_<modality>.pt files for {model.modalities}")
    logger.info(f"experts initialised from stage 1: {', '.join(loaded)}")
    return loaded
