"""Active learning by expert disagreement: serve the unlabelled image MoME's experts disagree on most.

The strategy reads the scores that :class:`lib.scoring.ExpertDisagreementScoring` writes into the datastore. When
no unlabelled image has a score for the current weights (scoring never ran, or training just replaced the model),
it scores a capped batch itself before choosing, so it works with MONAI Label's automatic scoring switched off.
Images handed out by this strategy in the last ``reserve_seconds`` are passed over while others remain, so two
annotators asking at once get different images. Without trained weights it falls back to the least recently
served image and says so.

:class:`WeightedRandom` is MONAI Label's ``random`` (images weighted by the seconds since each was last served),
without its failure: the stock one answers 500 once every unlabelled image was served within the same second (all
weights zero), which a few quick "next sample" clicks on a small datastore do.
"""

from __future__ import annotations

import logging
import random
import time
from typing import Any

from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.strategy import Strategy

from monailabel_app.lib.scoring import KEY_MODEL, KEY_SCORE, ExpertDisagreementScoring

__all__ = ["Uncertainty", "WeightedRandom"]

logger = logging.getLogger(__name__)


class Uncertainty(Strategy):
    def __init__(self, scoring: ExpertDisagreementScoring, reserve_seconds: int = 600) -> None:
        super().__init__("Unlabelled image with the highest disagreement between MoME's experts")
        self.scoring = scoring
        self.reserve_seconds = reserve_seconds

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = sorted(datastore.get_unlabeled_images())
        if not images:
            return None
        name = request.get("strategy", "uncertainty")
        now = time.time()
        served = {i: datastore.get_image_info(i).get("strategy", {}).get(name, {}).get("ts", 0) for i in images}
        fresh = [i for i in images if now - served[i] >= self.reserve_seconds] or images

        version = self.scoring.model_version()
        if version is None:
            image = min(fresh, key=lambda i: (served[i], i))
            return {"id": image, "fallback": "no trained weights yet: least recently served image"}

        scores = self._scores(fresh, datastore, version)
        if not scores:
            todo = [i for i in self.scoring.pending(datastore, version) if i in fresh]
            self.scoring.score(todo[: self.scoring.max_images], datastore, version, request.get("device"))
            scores = self._scores(fresh, datastore, version)
        if not scores:
            image = min(fresh, key=lambda i: (served[i], i))
            return {"id": image, "fallback": "no image could be scored: least recently served image"}
        image = max(scores, key=lambda i: (scores[i], -served[i]))
        logger.info(f"uncertainty: {image} (disagreement {scores[image]:.4f}; {len(scores)} scored candidates)")
        return {"id": image, KEY_SCORE: scores[image]}

    @staticmethod
    def _scores(images: list[str], datastore: Datastore, version: str) -> dict[str, float]:
        scores = {}
        for image in images:
            info = datastore.get_image_info(image)
            if info.get(KEY_MODEL) == version and info.get(KEY_SCORE) is not None:
                scores[image] = float(info[KEY_SCORE])
        return scores


class WeightedRandom(Strategy):
    def __init__(self) -> None:
        super().__init__("Random unlabelled image, favouring those not served for longest")

    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any] | None:
        images = sorted(datastore.get_unlabeled_images(request.get("label_tag"), request.get("labels")))
        if not images:
            return None
        name, now = request.get("strategy", "random"), int(time.time())
        served = [datastore.get_image_info(i).get("strategy", {}).get(name, {}).get("ts", 0) for i in images]
        weights = [max(now - ts, 0) + 1 for ts in served]  # + 1 s: never all zero
        image = random.choices(images, weights=weights)[0]
        return {"id": image, "weight": weights[images.index(image)]}
