"""MONAI Label app serving the MoME bundle: auto-segmentation, fine-tuning on saved labels, active learning.

    monailabel start_server --app monailabel_app --studies DIR --conf models mome [--conf key value ...]

One model, ``mome``, label ``lesion`` (1). One image per case of any single MR sequence, which is what MONAI
Label's datastores and viewers hand over. Nothing is downloaded: the bundle and the weights are local files.
Requests the app cannot serve get a 4xx with a message (MONAI Label would answer a bare 500). Options: README.md.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from monailabel_app.lib.bundle import bundle_module
from monailabel_app.lib.datastore import CheckedDatastore
from monailabel_app.lib.errors import conflict, not_found, unprocessable
from monailabel_app.lib.infer import MoMEInferTask, how_to_get_weights
from monailabel_app.lib.options import LABELS, MODEL_NAME, AppOptions
from monailabel_app.lib.scoring import ExpertDisagreementScoring
from monailabel_app.lib.strategy import Uncertainty
from monailabel_app.lib.train import MoMETrainTask, NoLabelsError

logger = logging.getLogger(__name__)

SCORING_NAME = "expert_disagreement"


class MoMEApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.options = AppOptions.from_conf(app_dir, conf)
        self.infer_task = MoMEInferTask(self.options)
        self.scoring_method = ExpertDisagreementScoring(self.infer_task, self.options.scoring_max_images)
        logger.info(f"MoME app: bundle {self.options.bundle}; model folder {self.options.model_dir}")
        try:
            weights = self.infer_task.weights()
            logger.info(
                f"serving {weights.path} (preset {weights.preset})" if weights else how_to_get_weights(self.options)
            )
        except ValueError as e:  # start anyway: /info reports it, and training can replace the file
            logger.warning(f"the served weights are unusable: {e}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MoME brain lesion segmentation",
            description="Lesion segmentation on one MR image of any sequence (T1, T1c, T2, FLAIR, DWI)",
            version=self.infer_task.version or "0",
            labels=LABELS,
        )

    # --- tasks ------------------------------------------------------------------------------------------------
    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()  # DICOMweb / XNAT / DSA: MONAI Label's own datastores
        return CheckedDatastore(
            self.studies,
            bundle=self.options.bundle,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> dict[str, InferTask]:
        return {MODEL_NAME: self.infer_task}

    def init_trainers(self) -> dict[str, TrainTask]:
        return {MODEL_NAME: MoMETrainTask(self.options)}

    def init_strategies(self) -> dict[str, Strategy]:
        return {"random": Random(), "first": First(), "uncertainty": Uncertainty(self.scoring_method)}

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return {SCORING_NAME: self.scoring_method}

    # --- requests: the app's checks before MONAI Label's handling ----------------------------------------------
    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        model = request.get("model")
        if model not in self._infers:
            raise not_found(f"unknown model {model!r}; this server serves {', '.join(self._infers)}")
        image = request.get("image")
        if isinstance(image, str):
            path = image if Path(image).exists() else (datastore or self.datastore()).get_image_uri(image)
            if not path:
                raise not_found(f"image {image!r} is not in the datastore")
            if Path(path).is_file():
                io = bundle_module(self.options.bundle, "scripts.io")
                try:  # the header only: the voxels are checked where the pipeline loads them (LoadVolumed)
                    io.check_header(io.read_header(path))
                except io.VolumeError as e:
                    raise unprocessable(f"cannot segment this image: {e}") from e
        try:
            if self.infer_task.weights() is None:
                raise conflict(how_to_get_weights(self.options))
        except ValueError as e:  # the weights file exists but is not a MoME checkpoint
            raise conflict(f"the served weights are unusable: {e}") from e
        io = bundle_module(self.options.bundle, "scripts.io")
        try:
            return super().infer(request, datastore)
        except io.VolumeError as e:  # raised by LoadVolumed where the pipeline reads the voxels
            raise unprocessable(f"cannot segment this image: {e}") from e

    def train(self, request: dict[str, Any]) -> dict[str, Any]:
        model = request.get("model")
        if model not in self._trainers:
            raise not_found(f"unknown model {model!r}; this server trains {', '.join(self._trainers)}")
        try:
            return super().train(request)
        except NoLabelsError as e:
            raise conflict(str(e)) from e

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise not_found(f"unknown strategy {strategy!r}; available: {', '.join(self._strategies)}")
        return super().next_sample(request)

    def scoring(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        method = request.get("method")
        if method not in self._scoring_methods:
            raise not_found(f"unknown scoring method {method!r}; available: {', '.join(self._scoring_methods)}")
        return super().scoring(request, datastore)

    def bundle_path(self, model: str | None) -> str | None:
        # MONAI Label asks this before starting any background task: an unknown model is refused here, with a
        # 404, instead of failing later in a subprocess
        if model is not None and model not in self._trainers and model not in self._infers:
            raise not_found(f"unknown model {model!r}; this server serves {MODEL_NAME}")
        return super().bundle_path(model)
