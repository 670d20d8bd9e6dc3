"""MONAI Label app serving the MoME bundle: auto-segmentation, fine-tuning on saved labels, active learning.

    monailabel start_server --app monailabel_app --studies DIR --conf models mome [--conf key value ...]

One model, ``mome``, label ``lesion`` (1). One image per case of any single MR sequence, which is what MONAI
Label's datastores and viewers hand over. Nothing is downloaded: the bundle and the weights are local files.
Requests the app cannot serve get a 4xx with a message (MONAI Label would answer a bare 500). Options: README.md.
The stock switches ``preload``, ``skip_trainers``, ``skip_strategies`` and ``skip_scoring`` work as in MONAI Label's
sample apps.
"""

from __future__ import annotations

import json
import logging
import tempfile
from pathlib import Path
from typing import Any

from fastapi import HTTPException
from monailabel.config import settings
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.datastore import Datastore
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.scoring import ScoringMethod
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First

from monailabel_app.lib.bundle import bundle_module
from monailabel_app.lib.cases import resolve_case
from monailabel_app.lib.datastore import CheckedDatastore
from monailabel_app.lib.dicomweb import MRDICOMwebDatastore, dicomweb_datastore
from monailabel_app.lib.errors import conflict, not_found, unprocessable
from monailabel_app.lib.infer import MoMEInferTask, MoMEPlusInferTask, how_to_get_weights
from monailabel_app.lib.options import LABELS, MODEL_NAME, PLUS_MODEL_NAME, AppOptions
from monailabel_app.lib.scoring import ExpertDisagreementScoring
from monailabel_app.lib.server import check_id, remove_upload
from monailabel_app.lib.server import install as install_server_hooks
from monailabel_app.lib.strategy import Uncertainty, WeightedRandom
from monailabel_app.lib.train import MoMETrainTask, NoLabelsError

logger = logging.getLogger(__name__)

#: unreadable PACS series passed over within one next-sample request before its 422 is answered
MAX_REFUSED_PER_SAMPLE = 5

SCORING_NAME = "expert_disagreement"


def _is_upload(image: Any) -> bool:
    """MONAI Label hands an uploaded image to the app as a temporary file it created."""
    return isinstance(image, str) and Path(image).parent == Path(tempfile.gettempdir()) and Path(image).is_file()


def _wanted(flag: Any) -> bool:
    """A request switch that is on unless given as false (JSON ``false`` or the text of a form field)."""
    return flag is None or str(flag).strip().lower() not in ("false", "0", "no")


class _CurrentTask:
    """The app's inference task as it is now (it is built again once weights first exist), for the scoring."""

    def __init__(self, app: MoMEApp) -> None:
        self.app = app

    def weights(self):
        return self.app._infer_task().weights()

    def aux_outputs(self, image: str, device: str):
        return self.app._infer_task().aux_outputs(image, device)


class MoMEApp(MONAILabelApp):
    def __init__(self, app_dir: str, studies: str, conf: dict[str, str]) -> None:
        self.options = AppOptions.from_conf(app_dir, conf)
        install_server_hooks()
        for key, why in self.options.ignored.items():
            logger.info(f"--conf {key} ignored: {why}")
        self.scoring_method = ExpertDisagreementScoring(
            _CurrentTask(self), self.options.scoring_max_images, bundle=self.options.bundle
        )
        logger.info(f"MoME app: bundle {self.options.bundle}; model folder {self.options.model_dir}")
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name="MoME brain lesion segmentation",
            description="Lesion segmentation on one MR image of any sequence (T1, T1c, T2, FLAIR, DWI)",
            labels=sorted(LABELS, key=LABELS.get),  # app level: names, a list (OHIF's panel appends to it)
        )
        self.version = json.loads((self.options.bundle / "configs" / "metadata.json").read_text())["version"]

    # --- tasks ------------------------------------------------------------------------------------------------
    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            if settings.MONAI_LABEL_DATASTORE.lower() in ("xnat", "dsa"):
                return super().init_datastore()  # MONAI Label's own
            return dicomweb_datastore(self.studies)
        return CheckedDatastore(
            self.studies,
            bundle=self.options.bundle,
            extensions=settings.MONAI_LABEL_DATASTORE_FILE_EXT,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def _new_infer_task(self, model: str) -> MoMEInferTask:
        options = self.options.for_model(model)
        return (MoMEPlusInferTask if model == PLUS_MODEL_NAME else MoMEInferTask)(options, self.conf)

    def init_infers(self) -> dict[str, InferTask]:
        tasks: dict[str, InferTask] = {}
        for model in self.options.models:
            task = tasks[model] = self._new_infer_task(model)
            options = self.options.for_model(model)
            try:
                weights = task.weights()
                served = f"serving {weights.path} ({weights.preset})" if weights else how_to_get_weights(options)
                logger.info(f"{model}: {served}")
            except ValueError as e:  # start anyway: /info reports it, and training can replace the file
                logger.warning(f"{model}: the served weights are unusable: {e}")
        return tasks

    def init_trainers(self) -> dict[str, TrainTask]:
        if self.options.switches["skip_trainers"]:
            return {}
        return {MODEL_NAME: MoMETrainTask(self.options, self.conf)}

    def init_strategies(self) -> dict[str, Strategy]:
        strategies: dict[str, Strategy] = {"random": WeightedRandom()}
        if not self.options.switches["skip_strategies"]:
            strategies.update(first=First(), uncertainty=Uncertainty(self.scoring_method))
        return strategies

    def init_scoring_methods(self) -> dict[str, ScoringMethod]:
        return {} if self.options.switches["skip_scoring"] else {SCORING_NAME: self.scoring_method}

    def _infer_task(self, model: str = MODEL_NAME) -> MoMEInferTask:
        """A model's inference task; built again once weights exist when the server started without any (the
        stock task is only valid with a weights file)."""
        task = self._infers[model]
        candidates = self.options.for_model(model).weight_candidates
        if not task.is_valid() and any(p is not None and p.is_file() for p in candidates):
            task = self._infers[model] = self._new_infer_task(model)
        return task

    def info(self) -> dict[str, Any]:
        info = super().info()
        for model in self.options.models:
            if not self._infer_task(model).is_valid():  # no weights: listed, not ready, with what to do
                info["models"][model] = {
                    "type": "segmentation",
                    "labels": LABELS,
                    "dimension": 3,
                    "description": ("MoME+" if model == PLUS_MODEL_NAME else "MoME") + " (no weights yet)",
                    "ready": False,
                    "message": how_to_get_weights(self.options.for_model(model)),
                }
        return info

    # --- requests: the app's checks before MONAI Label's handling ----------------------------------------------
    def infer(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        upload = request.get("image") if _is_upload(request.get("image")) else None
        try:
            return self._infer(request, datastore, upload)
        except Exception:
            remove_upload(upload)  # MONAI Label deletes the uploaded copy only after a successful request
            raise

    def _infer(self, request: dict[str, Any], datastore: Datastore | None, upload: str | None) -> dict[str, Any]:
        model = request.get("model")
        if model not in self._infers:
            raise not_found(f"unknown model {model!r}; this server serves {', '.join(self._infers)}")
        image, path = request.get("image"), None
        if isinstance(image, str):
            # an uploaded file arrives as MONAI Label's temporary copy; anything else must be a datastore id
            path = image if upload else (datastore or self.datastore()).get_image_uri(check_id(image))
            if not path:
                raise not_found(f"image {image!r} is not in the datastore")
            if Path(path).is_file():
                io = bundle_module(self.options.bundle, "scripts.io")
                try:  # the header only: the voxels are checked where the pipeline reads them (LoadVolumed)
                    io.check_header(io.read_header(path))
                except io.VolumeError as e:
                    raise unprocessable(f"cannot segment this image: {e}") from e
        task = self._infer_task(model)
        try:
            if not task.is_valid() or task.weights() is None:
                raise conflict(how_to_get_weights(self.options.for_model(model)))
        except ValueError as e:  # the weights file exists but is not a MoME checkpoint
            raise conflict(f"the served weights are unusable: {e}") from e
        if model == PLUS_MODEL_NAME:  # the requested image and its siblings: one case, any sequences missing
            store = datastore or self.datastore()
            modalities = task.options_modalities()
            request = {**request, "case": resolve_case(store, image, path, upload, request, modalities, self.options)}
        try:
            result = super().infer(request, datastore)
        except Exception as e:
            # bad input (scripts.io's VolumeError, scripts.errors' InputError), raised where the voxels are read or
            # a case is stacked; found by class name, as MONAI Label re-imports the bundle's modules
            if (bad := bundle_module(self.options.bundle, "scripts.errors").input_error_in(e)) is not None:
                raise unprocessable(f"cannot segment this image: {bad}") from e
            raise
        if model == PLUS_MODEL_NAME:  # which of the datastore's images made the label
            result.setdefault("params", {})["case"] = {"name": request["case"]["name"], **request["case"]["images"]}
        store = datastore or self.datastore()
        from_pacs = isinstance(store, MRDICOMwebDatastore) and isinstance(image, str) and not upload
        if from_pacs and _wanted(request.get("store_seg")):
            # a series from the PACS: its prediction goes back to the PACS as a DICOM SEG referencing it
            result["params"]["dicom_seg"] = store.store_prediction(image, result["file"])
        return result

    def train(self, request: dict[str, Any]) -> dict[str, Any]:
        model = request.get("model")
        if model not in self._trainers:
            raise not_found(f"unknown model {model!r}; this server trains {', '.join(self._trainers) or 'nothing'}")
        try:
            return super().train(request)
        except NoLabelsError as e:
            raise conflict(str(e)) from e

    def next_sample(self, request: dict[str, Any]) -> dict[str, Any]:
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise not_found(f"unknown strategy {strategy!r}; available: {', '.join(self._strategies)}")
        refused = getattr(self._datastore, "refused", None)  # the PACS datastore: series it could not read
        for attempt in range(MAX_REFUSED_PER_SAMPLE + 1):
            before = len(refused) if refused is not None else 0
            try:
                return super().next_sample(request)
            except HTTPException as e:
                # each try downloads a whole series: after a few refusals the client hears the last one (and the
                # next request goes on past the series refused so far)
                if (
                    e.status_code != 422
                    or refused is None
                    or len(refused) == before
                    or attempt == MAX_REFUSED_PER_SAMPLE
                ):
                    raise
                logger.warning(f"next sample: skipped, {e.detail}")  # the strategy no longer sees that series
        raise AssertionError("unreachable")

    def scoring(self, request: dict[str, Any], datastore: Datastore | None = None) -> dict[str, Any]:
        method = request.get("method")
        if method not in self._scoring_methods:
            raise not_found(f"unknown scoring method {method!r}; available: {', '.join(self._scoring_methods)}")
        return super().scoring(request, datastore)

    def bundle_path(self, model: str | None) -> str | None:
        # MONAI Label asks this before starting any background task: an unknown model is refused here, with a
        # 404, instead of failing later in a subprocess
        if model is not None and model not in self._trainers and model not in self._infers:
            raise not_found(f"unknown model {model!r}; this server serves {', '.join(self.options.models)}")
        return super().bundle_path(model)
