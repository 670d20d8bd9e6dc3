"""Fine-tuning MoME on the datastore's final labels: MONAI Label's ``BundleTrainTask`` run on ``train.json``.

The stock task is built by its own ``__init__``; only narrow hooks change what this app needs:

* weights, training state, logs and the merged multi-GPU config go to the app's model folder, never the bundle
  (``_update_overrides``; ``run_multi_gpu`` moves the config the stock task writes into ``<bundle>/configs``);
* the served weights are loaded strictly, and ``pretrained=False`` does not crash (``_load_checkpoint``; the stock
  one calls ``os.path.exists(None)``);
* each datalist item carries the image's modality when it is known, so its expert is trained too (unknown
  modality: fused loss only, as in the bundle) (``_fetch_datalist``);
* a failed ``torchrun`` fails the request (the stock task ignores its exit code), forcing multi-GPU needs two CUDA
  devices, and a run that saves no model fails (``run_multi_gpu``, ``__call__``);
* the training config is re-read for every request, so one request's handlers never leak into the next.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
from monai.data import partition_dataset
from monai.handlers import CheckpointLoader
from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.tasks.train.bundle import BundleConstants, BundleTrainTask

from monailabel_app.lib.bundle import ServedWeights, bundle_module, served_weights
from monailabel_app.lib.options import AppOptions, parse_bool

__all__ = ["MoMETrainTask", "NoLabelsError", "modality_of", "multi_gpu_options"]

logger = logging.getLogger(__name__)

#: ``None`` as a config expression: ``monai.bundle.run`` drops overrides whose value is ``None``.
_NONE = "$None"


class NoLabelsError(RuntimeError):
    """The datastore has no image with a final label to train on."""


def modality_of(image_path: str, info: dict[str, Any], bundle: Path) -> str | None:
    """The image's MR sequence: the datastore image info ``modality`` if set, else the file-name convention
    ``<anything>_<sequence>.<ext>`` or ``<sequence>.<ext>`` (``case7_flair.nii.gz``, ``sub-01_T1w.nii.gz``,
    ``FLAIR.nii.gz``), else ``None`` (unknown: the image trains the fused output only).

    An explicit ``modality`` that is not a known name is an error (a typo would silently turn off routing); a file
    name whose last part is not a sequence name is simply unknown.
    """
    canonical = bundle_module(bundle, "scripts.data.modality").canonical_modality
    if info.get("modality") not in (None, ""):
        return canonical(info["modality"], where=f"the datastore info of {Path(image_path).name}")
    name = Path(image_path).name
    for ext in (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"):
        if name.lower().endswith(ext):
            name = name[: -len(ext)]
            break
    token = name.rsplit("_", 1)[-1]
    try:
        return canonical(token)
    except ValueError:
        return None


def multi_gpu_options(request: dict[str, Any]) -> dict[str, bool]:
    """``multi_gpu`` (off unless asked: the stock default is on) and ``force_multi_gpu``, which the stock task
    honours even without GPUs; here forcing needs two or more CUDA devices, and says so otherwise."""
    multi = parse_bool(request.get("multi_gpu", False))
    force = parse_bool(request.get("force_multi_gpu", False))
    if (multi or force) and torch.cuda.device_count() < 2:
        logger.warning(
            f"multi-GPU training needs two or more CUDA devices ({torch.cuda.device_count()} visible): "
            "training in a single process instead"
        )
        multi = force = False
    return {"multi_gpu": multi, "force_multi_gpu": force}


class MoMETrainTask(BundleTrainTask):
    """Fine-tunes the served MoME (or trains from scratch when none exists) and writes ``<model_dir>/model.pt``.

    Defaults suit a few newly labelled images: ``epochs`` epochs (5) of one pass over the data, validation every
    epoch on ``val_split`` of the labelled images (at least one; with a single labelled image it is also the
    validation image), no curriculum but a fixed mix ``expert_weight * L_expert + (1 - expert_weight) * L_fused``,
    no workers, no caching. The best-by-validation weights are written atomically by the bundle's own handler, and
    the inference task serves them from the next request on.
    """

    def __init__(self, options: AppOptions, conf: dict[str, Any] | None = None) -> None:
        self.options = options
        self._pretrained: ServedWeights | None = None
        super().__init__(str(options.bundle), conf=dict(conf or {}), const=BundleConstants(), load_strict=True)
        self.description = f"Fine-tune MoME on the datastore's final labels ({self.description})"

    # --- what clients see -------------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        config = super().config()
        config.update(
            max_epochs=self.options.epochs, val_split=self.options.val_split, pretrained=True, multi_gpu=False
        )
        config.pop("model_filename", None)  # the stock choice among <bundle>/models/*.pt; the app serves one file
        return config

    def info(self) -> dict[str, Any]:
        info = super().info()
        info["output"] = str(self.options.served_file)
        return info

    # --- one training request -------------------------------------------------------------------------------
    def __call__(self, request: dict[str, Any], datastore: Datastore) -> dict[str, Any]:
        self.bundle_config = self._load_bundle_config(self.bundle_path, self.bundle_config_path)
        request = dict(request)
        # a client that sends no options gets the app's defaults, not the stock task's 50 epochs
        request["max_epochs"] = int(request.get("max_epochs") or self.options.epochs)
        request["val_split"] = float(request.get("val_split", self.options.val_split))
        request.update(multi_gpu_options(request))
        self._pretrained = self._pretrained_weights(request)
        self.options.model_dir.mkdir(parents=True, exist_ok=True)
        before = _stamp(self.options.served_file)
        result = super().__call__(request, datastore)
        if _stamp(self.options.served_file) == before:
            raise RuntimeError(
                f"training finished without writing {self.options.served_file}: no validation round completed "
                "(see the training log above)"
            )
        weights = served_weights([self.options.served_file], self.options.bundle)
        return {
            **(result or {}),
            "model": str(self.options.served_file),
            "version": weights.version if weights else None,
        }

    def _pretrained_weights(self, request: dict[str, Any]) -> ServedWeights | None:
        if not parse_bool(request.get("pretrained", True)):
            logger.info("pretrained=false: training MoME from scratch")
            return None
        weights = served_weights(self.options.weight_candidates, self.options.bundle)
        if weights is None:
            logger.info("no served weights yet: training MoME from scratch")
        return weights

    def _fetch_datalist(self, request: dict[str, Any], datastore: Datastore) -> list[dict[str, Any]]:
        items = []
        for image_id in sorted(datastore.get_labeled_images()):
            image = datastore.get_image_uri(image_id)
            label_id = datastore.get_label_by_image_id(image_id, DefaultLabelTag.FINAL)
            label = datastore.get_label_uri(label_id, DefaultLabelTag.FINAL) if label_id else ""
            if not image or not label:
                continue
            item = {"image": image, "label": label}
            modality = modality_of(image, datastore.get_image_info(image_id), self.options.bundle)
            if modality:
                item["modality"] = modality
            items.append(item)
        if not items:
            raise NoLabelsError("no image in the datastore has a final label yet: save labels, then train")
        known = sum("modality" in i for i in items)
        logger.info(f"training on {len(items)} labelled images ({known} of known modality)")
        return items

    def _partition_datalist(
        self, datalist: list[dict[str, Any]], request: dict[str, Any], shuffle: bool = False
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        val_split = float(request.get("val_split", self.options.val_split))
        if len(datalist) < 2:
            logger.warning("one labelled image: it is used for training and for validation")
            return datalist, list(datalist)
        n_val = max(1, round(len(datalist) * val_split)) if val_split > 0 else 0
        if n_val == 0:
            logger.warning("val_split 0: validating on the training images")
            return datalist, list(datalist)
        n_val = min(n_val, len(datalist) - 1)
        train, val = partition_dataset(datalist, ratios=[len(datalist) - n_val, n_val], shuffle=True, seed=0)
        return train, val

    def _load_checkpoint(self, model_pytorch: str, pretrained: bool, train_handlers: list) -> None:
        weights = self._pretrained
        if weights is None:
            return
        logger.info(f"fine-tuning from {weights.path} (preset {weights.preset})")
        train_handlers.insert(
            0,
            {
                "_target_": CheckpointLoader.__name__,
                "load_path": str(weights.path),
                "load_dict": {self.model_dict_key: f"$@{self.const.key_network()}"},
                "strict": True,
                "map_location": "cpu",
            },
        )

    def _update_overrides(self, overrides: dict[str, Any]) -> dict[str, Any]:
        epochs = int(overrides[self.const.key_train_trainer_max_epochs()])
        preset = self._pretrained.preset if self._pretrained else self.options.preset
        if preset is None:  # preset auto and training from scratch: keep the served network's shape if any
            served = served_weights(self.options.weight_candidates, self.options.bundle)
            preset = served.preset if served else None
        if self._pretrained and self.options.preset and self.options.preset != self._pretrained.preset:
            logger.warning(f"--conf preset {self.options.preset} ignored: the weights are {self._pretrained.preset}")
        model_dir = self.options.model_dir
        overrides.update(
            {
                "ckpt_dir": str(model_dir),
                "output_dir": str(model_dir / "train"),
                "model_file": self.options.served_file.name,
                "state_file": "train_state.pt",
                "epochs": epochs,
                "iterations_per_epoch": _NONE,
                "val_interval": 1,
                "curriculum_power": _NONE,
                "loss#expert_weight": self.options.expert_weight,
                "resume": False,
                "experts_from": _NONE,
                "progress_bar": False,
                "num_workers": 0,
                "cache_rate": 0.0,
                **self.options.train_overrides,
            }
        )
        if preset:
            overrides["preset"] = preset
        # fine-tuning keeps the preprocessing the weights were made with (their record), unless --conf says otherwise
        record = self._pretrained.record if self._pretrained else {}
        for key in ("spacing", "register", "normalization", "patch_size", "gate_activation", "modalities"):
            if key in record and key not in self.options.train_overrides:
                overrides[key] = record[key]
        return overrides

    # --- running it -----------------------------------------------------------------------------------------
    def run_multi_gpu(self, request: dict[str, Any], cmd: list[str], env: dict[str, str]) -> None:
        """The stock ``torchrun`` command, with the merged config moved out of the bundle into the model folder,
        the venv's Python instead of whatever ``torchrun`` is on ``PATH``, and its exit code checked."""
        stock = Path(self.bundle_path) / "configs" / "monailabel_train.json"
        merged = self.options.model_dir / "train" / "monailabel_train.json"
        merged.parent.mkdir(parents=True, exist_ok=True)
        if stock.is_file():
            os.replace(stock, merged)
        cmd = [c.replace(str(stock), str(merged)) for c in cmd]
        if cmd and Path(cmd[0]).name == "torchrun":
            cmd = [sys.executable, "-m", "torch.distributed.run", *cmd[1:]]
        logger.info(f"multi-GPU training: {' '.join(cmd)}")
        code = subprocess.run(cmd, env=env, check=False).returncode
        if code != 0:
            raise RuntimeError(f"multi-GPU training failed (torchrun exit code {code})")


def _stamp(path: Path) -> tuple[int, int] | None:
    return (path.stat().st_mtime_ns, path.stat().st_size) if path.is_file() else None
