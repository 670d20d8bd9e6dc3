"""Expert disagreement: an uncertainty score for active learning that costs one forward pass per image.

MoME's experts each segment the image; in eval mode ``model(x, with_aux=True)`` returns their logits from the same
forward as the fused prediction. Where the experts agree, the image looks like what they were trained on; where
they disagree, a label teaches the model most. The score is the generalised Jensen-Shannon divergence of the K
experts' voxel-wise class distributions, ``H(mean_k p_k) - mean_k H(p_k)`` (nats, between 0 and ln K), averaged
over the brain (non-zero voxels of the preprocessed image). The number is computed by the bundle's own code
(``scripts.metrics``), where every segmentation metric lives.

MONAI Label's own epistemic scoring cannot be used: it puts the network in ``train()`` mode for dropout, where
MoME returns a dict of deep-supervision outputs, and it needs several passes per image.

Cost cap: at most ``max_images`` images per run, and an image already scored for the current weights (the file's
mtime and size) is skipped, so repeated runs after ``next_sample`` calls are free until the model changes.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import torch
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.utils.others.generic import name_to_device

from monailabel_app.lib.bundle import bundle_module
from monailabel_app.lib.infer import MoMEInferTask

__all__ = ["KEY_MODEL", "KEY_SCORE", "ExpertDisagreementScoring", "expert_disagreement"]

logger = logging.getLogger(__name__)

KEY_SCORE = "mome_disagreement"
KEY_MODEL = "mome_disagreement_model"
KEY_ERROR = "mome_disagreement_error"


#: Where the app looks for the bundle without ``--conf bundle`` (``AppOptions``: the app folder's sibling).
DEFAULT_BUNDLE = Path(__file__).resolve().parents[2] / "bundle"


def _metrics(bundle: Path | None) -> ModuleType:
    return bundle_module(bundle or DEFAULT_BUNDLE, "scripts.metrics")


def expert_disagreement(
    experts: torch.Tensor, num_classes: int, mask: torch.Tensor | None = None, bundle: Path | None = None
) -> float:
    """Mean generalised Jensen-Shannon divergence between experts over ``mask`` (all voxels if empty/None): the
    bundle's ``scripts.metrics.expert_disagreement``.

    Args:
        experts: logits ``(K * num_classes, *spatial)``, expert-major as MoME returns them.
        num_classes: classes per expert (background included).
        mask: boolean ``(*spatial)`` region to average over.
        bundle: the bundle folder whose code computes it (default: :data:`DEFAULT_BUNDLE`).
    """
    return _metrics(bundle).expert_disagreement(experts, num_classes, mask)


class ExpertDisagreementScoring(ScoringMethod):
    """Writes ``mome_disagreement`` (and the weights version it was computed with) into each unlabelled image's
    datastore info. Request options: ``max_images`` (default ``--conf scoring_max_images``), ``device``. The score is
    computed by the code of ``bundle`` (default: :data:`DEFAULT_BUNDLE`)."""

    def __init__(self, infer_task: MoMEInferTask, max_images: int = 8, bundle: Path | None = None) -> None:
        super().__init__("Disagreement between MoME's modality experts (one forward per image)")
        self.infer_task = infer_task
        self.max_images = max_images
        self.bundle = bundle
        self._lock = threading.Lock()

    def info(self) -> dict[str, Any]:
        return {**super().info(), "key": KEY_SCORE, "max_images": self.max_images}

    def model_version(self) -> str | None:
        weights = self.infer_task.weights()
        return weights.version if weights else None

    def pending(self, datastore: Datastore, version: str) -> list[str]:
        """Unlabelled images without a score for ``version``: never scored first, then stale, each by id."""
        stale, never = [], []
        for image_id in sorted(datastore.get_unlabeled_images()):
            info = datastore.get_image_info(image_id)
            if info.get(KEY_MODEL) == version:
                continue
            (never if KEY_MODEL not in info else stale).append(image_id)
        return never + stale

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        start = time.time()
        version = self.model_version()
        if version is None:
            return {"executed": 0, "skipped": "no trained weights to score with"}
        limit = int(request.get("max_images", self.max_images))
        todo = self.pending(datastore, version)
        done = self.score(todo[:limit], datastore, version, request.get("device"))
        summary = {
            "executed": len(done),
            "failed": sum(1 for v in done.values() if v is None),
            "left": max(0, len(todo) - limit),
            "model": version,
            "latency": round(time.time() - start, 3),
        }
        logger.info(f"expert disagreement scoring: {summary}")
        return summary

    def score(
        self, image_ids: list[str], datastore: Datastore, version: str, device: str | None = None
    ) -> dict[str, float | None]:
        """Score ``image_ids`` now; an image that fails is recorded with its error and ``None``."""
        device = name_to_device(device)
        metrics = _metrics(self.bundle)
        scores: dict[str, float | None] = {}
        with self._lock:
            for image_id in image_ids:
                path = datastore.get_image_uri(image_id)
                try:
                    out = self.infer_task.aux_outputs(path, device)
                    mask = out["image"][0] != 0
                    value = metrics.expert_disagreement(out["experts"], out["fused"].shape[0], mask)
                    info: dict[str, Any] = {KEY_SCORE: value, KEY_MODEL: version, KEY_ERROR: None}
                except Exception as e:  # one unreadable image must not stop the others
                    logger.warning(f"expert disagreement failed for {image_id}: {e}")
                    value, info = None, {KEY_SCORE: None, KEY_MODEL: version, KEY_ERROR: str(e)}
                datastore.update_image_info(image_id, info)
                scores[image_id] = value
        return scores
