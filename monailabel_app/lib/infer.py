"""Auto-segmentation with the MoME bundle: MONAI Label's ``BundleInferTask``, built by its own ``__init__``.

Only narrow hooks are overridden:

* :class:`MoMEConstants` names the weights file the app serves (its own model folder first, then ``--conf
  weights`` or the bundle's ``models/model.pt``), so the stock constructor finds it;
* ``_load_bundle_config`` applies the app's folders and ``--conf`` knobs to ``inference.json`` as it is read;
* ``_get_network`` builds the network with the preset of the file being served and loads it strictly, again when
  fine-tuning replaces the file (the stock one deep-copies a network built once and loads non-strictly).

Everything else (pre/post-processing from ``inference.json``, ``Restored`` back to the image grid, devices,
``preload``) is the stock bundle task.
"""

from __future__ import annotations

import functools
import logging
import threading
from pathlib import Path
from typing import Any

import torch
from monai.bundle import ConfigParser
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.bundle import BundleConstants, BundleInferTask

from monailabel_app.lib.bundle import ServedWeights, bundle_module, load_state_dict, served_weights
from monailabel_app.lib.options import PLUS_MODEL_NAME, AppOptions

__all__ = ["MoMEConstants", "MoMEInferTask", "MoMEPlusInferTask", "NoWeightsError", "how_to_get_weights"]

logger = logging.getLogger(__name__)


class NoWeightsError(RuntimeError):
    """There is no trained model to serve yet."""


def how_to_get_weights(options: AppOptions) -> str:
    if options.model == PLUS_MODEL_NAME:
        return (
            f"no trained MoME+ weights yet (looked for {options.served_file}"
            + (f" and {options.weights}" if options.weights else "")
            + "). Train them with the bundle (configs/train_plus.json) and copy the model.pt into that folder, or "
            "start the server with --conf weights_plus /path/to/model.pt"
        )
    return (
        f"no trained MoME weights yet (looked for {options.served_file}"
        + (f" and {options.weights}" if options.weights else "")
        + "). Save final labels for a few images and start training (POST /train/mome, or 'Train' in 3D Slicer), "
        "or copy a bundle model.pt into that folder, or start the server with --conf weights /path/to/model.pt"
    )


class MoMEConstants(BundleConstants):
    """The stock constants, but ``model.pt`` is the app's served file (an absolute path: ``os.path.join`` of the
    bundle's ``models`` folder with it is the path itself)."""

    def __init__(self, options: AppOptions) -> None:
        self.options = options

    def model_pytorch(self) -> str:
        existing = [p for p in self.options.weight_candidates if p is not None and p.is_file()]
        return str(existing[0] if existing else self.options.served_file)


class MoMEInferTask(BundleInferTask):
    """Segments one 3D image of any MR sequence; the label comes back on the image's own grid.

    The served weights are ``<model_dir>/model.pt`` if present, else ``--conf weights`` (default: the bundle's
    ``models/model.pt``). They are reloaded when the file changes (fine-tuning replaces it atomically), and the
    network's preset is read from them, so a ``small`` demo model and a ``paper`` model both serve without flags.
    Without any weights the task is not valid (the stock behaviour); the app says how to get weights.
    """

    #: configs read over inference.json (MoME+: its overlay)
    OVERLAYS: tuple[str, ...] = ()

    def __init__(self, options: AppOptions, conf: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.options = options
        self._build_lock = threading.Lock()
        conf = {**(conf or {}), "preload": str(options.switches.get("preload", False))}
        super().__init__(
            str(options.bundle),
            conf,
            const=MoMEConstants(options),
            type=InferType.SEGMENTATION,
            load_strict=True,
            **kwargs,
        )
        if not self.valid:
            return
        self.check_conf()
        # BasicInferTask serves the last existing path of this list: the app's own file wins over the fallback
        self.path = [str(p) for p in reversed(options.weight_candidates) if p is not None]
        self._config.pop("model_filename", None)  # the stock choice among <bundle>/models/*.pt; one file is served

    # --- hooks ------------------------------------------------------------------------------------------------
    def _config_files(self, config: str) -> list[str]:
        return [config, *(str(Path(config).with_name(name)) for name in self.OVERLAYS)]

    def _load_bundle_config(self, path: str, config: str) -> ConfigParser:
        parser = super()._load_bundle_config(path, config)
        if self.OVERLAYS:  # read again with the overlays merged over it
            parser.read_config(self._config_files(config))
            parser.config.update({self.const.key_bundle_root(): path})
        for key, value in self.config_overrides().items():
            parser[key] = value
        return parser

    def config_overrides(self) -> dict[str, Any]:
        """Bundle knobs set by the app: its own folders (never the bundle's), the ``--conf`` knobs, and the preset
        of the weights served (so the stock constructor builds the network that will serve, not the default)."""
        try:
            weights = self.weights()
        except ValueError:  # unusable weights: reported by info() and refused by infer()
            weights = None
        overrides = {
            "ckpt_dir": str(self.options.model_dir),
            # the file served: inference.json takes preset, spacing, registration, normalisation from its record
            "ckpt_path": str(weights.path if weights else self.options.served_file),
            "weights_record": weights.record if weights else None,  # read once per file version, not per parse
            "output_dir": str(self.options.model_dir / "predictions"),
            **self.options.infer_overrides,
        }
        preset = weights.preset if weights else self.options.preset
        if preset:
            overrides["preset"] = preset
        return overrides

    def check_conf(self) -> None:
        """``--conf`` knobs that contradict the served weights' record stop the server with both values."""
        try:
            weights = self.weights()
        except ValueError:  # unusable weights: reported by info() and refused by infer(), not fatal at start
            return
        if weights is None:
            return
        given = {k: v for k, v in self.options.infer_overrides.items() if k in ("spacing", "register")}
        if self.options.preset:
            given["preset"] = self.options.preset
        record = bundle_module(self.options.bundle, "scripts.record")
        try:
            record.check(weights.path, weights.record, **given)
        except ValueError as e:
            raise ValueError(str(e).replace("Drop these options", "Drop these --conf options")) from e

    def _get_network(self, device: str, data: Any) -> torch.nn.Module:
        weights = self.weights()
        if weights is None:
            raise NoWeightsError(how_to_get_weights(self.options))
        if isinstance(data, dict):  # the writer reports which weights made this label
            data["weights_version"] = weights.version
        cached = self._networks.get(device)
        if cached and cached[1] == weights.version:
            return cached[0]
        with self._build_lock:
            logger.info(f"loading MoME weights {weights.path} (preset {weights.preset}, version {weights.version})")
            network = self.build_network(weights.preset)
            state = load_state_dict(weights.path, map_location="cpu")
            try:
                network.load_state_dict(state, strict=True)
            except RuntimeError as e:
                raise ValueError(f"{weights.path} does not fit the bundle's MoME network: {e}") from e
            network.to(torch.device(device)).eval()
            self._networks[device] = (network, weights.version)
        return network

    def run_pre_transforms(self, data: dict[str, Any], transforms: Any) -> dict[str, Any]:
        # MONAI >= 1.5 ``Spacingd`` updates every ``image_*`` key as if it were a meta dict, and MONAI Label adds
        # the string ``image_path``: keep it out of the way while the bundle's preprocessing runs.
        path = data.pop("image_path", None)
        data = super().run_pre_transforms(data, transforms)
        if path is not None:
            data["image_path"] = path
        return data

    def post_transforms(self, data: Any = None) -> list:
        # the bundle's per-scan report goes into the answer (``writer``), not into a file in the model folder
        post = list(super().post_transforms(data))
        for t in post:
            if type(t).__name__ == "ScanReportd":
                t.output_dir = None
        return post

    def writer(self, data: dict[str, Any], extension: str | None = None, dtype: Any = None) -> tuple[Any, Any]:
        # provenance: a label made before and one made after a fine-tuning say which model each came from; the
        # per-scan report (lesion count, volumes, gate shares, uncertainty, QC flags) comes with the label
        result_file, result_json = super().writer(data, extension, dtype)
        if "weights_version" in data:
            result_json["weights_version"] = data["weights_version"]
        if "report" in data:
            result_json["report"] = data["report"]
        return result_file, result_json

    # --- the app's own queries ----------------------------------------------------------------------------------
    #: the ``network`` a served file's record must name (a file without one is taken by its tensor shapes)
    NETWORK = "MoME"

    def weights(self) -> ServedWeights | None:
        weights = served_weights(self.options.weight_candidates, self.options.bundle)
        network = weights.record.get("network") if weights else None
        if network not in (None, self.NETWORK):
            other = "weights_plus" if network == "MoMEPlus" else "weights"
            raise ValueError(
                f"{weights.path} holds {network} weights, not {self.NETWORK}: model {self.options.model} cannot serve "
                f"them" + (f" (give them as --conf {other})" if network in ("MoME", "MoMEPlus") else "")
            )
        return weights

    def info(self) -> dict[str, Any]:
        info = super().info()
        try:
            weights = self.weights()
        except ValueError as e:
            info.update(ready=False, message=f"the served weights are unusable: {e}")
            return info
        if weights is None:
            info.update(ready=False, message=how_to_get_weights(self.options))
        else:
            info.update(
                ready=True, weights={"path": str(weights.path), "version": weights.version, "preset": weights.preset}
            )
        return info

    def build_network(self, preset: str) -> torch.nn.Module:
        """``network_def`` of ``inference.json`` with the weights' preset, parsed apart from the transforms' config
        (re-parsing that one would create new transform objects, which ``Invertd`` refuses to invert)."""
        parser = ConfigParser()
        parser.read_config(self._config_files(self.bundle_config_path))
        parser["bundle_root"] = self.bundle_path
        for key, value in self.config_overrides().items():
            parser[key] = value
        parser["preset"] = preset
        bundle_module(self.options.bundle, "scripts.mome")  # the network's class lives in the bundle's code
        return parser.get_parsed_content("network_def", instantiate=True)

    def aux_outputs(self, image: str | Path, device: str) -> dict[str, torch.Tensor]:
        """Preprocessed image, fused logits and every expert's logits (``K*C`` channels) in one forward.

        Used by the disagreement scoring; the same preprocessing, weights and sliding window as ``/infer``.
        """
        data: dict[str, Any] = {self.key_image: str(image), "device": device, "image_path": str(image)}
        data = self.run_pre_transforms(data, self.pre_transforms(data))
        network = self._get_network(device, data)
        inputs = torch.as_tensor(data[self.key_image])[None].to(torch.device(device))
        with torch.no_grad():
            out = self.inferer(data)(inputs, network)  # inference.json's inferer asks for with_aux
        if not isinstance(out, dict) or "experts" not in out:
            raise TypeError("the bundle's network did not return expert outputs for with_aux=True")
        fused = out.get("logits", out.get("pred"))
        return {"image": torch.as_tensor(data[self.key_image]), "fused": fused[0], "experts": out["experts"][0]}


class MoMEPlusInferTask(MoMEInferTask):
    """MoME+ on a case: the requested image and its sibling sequences (``data["case"]``, set by the app from the
    datastore: ``{"name", "sequences": {sequence: path}, "reference": sequence}``). The label comes back on the
    requested image's grid; with no sibling the case is that one sequence.

    Narrow changes to the MoME task: ``inference_plus.json`` read over ``inference.json``; MONAI Label's image
    loader wrapper left out (it expects every key, and a case has missing sequences); the inferer told the case's
    sequences (``available``), so every sliding window of the case knows them."""

    OVERLAYS = ("inference_plus.json",)
    NETWORK = "MoMEPlus"

    def __init__(self, options: AppOptions, conf: dict[str, Any] | None = None) -> None:
        super().__init__(options, conf, extend_load_image=False)

    def run_pre_transforms(self, data: dict[str, Any], transforms: Any) -> dict[str, Any]:
        case = data.pop("case", None)
        if not isinstance(case, dict) or not case.get("sequences"):
            raise ValueError("a MoME+ request needs its case (the app resolves it from the datastore)")
        for sequence in self.options_modalities():
            data.pop(sequence, None)  # only the app's resolved paths are read
        data.update(case["sequences"])
        data |= {"reference": case["reference"], "case": case.get("name") or "case"}
        return super().run_pre_transforms(data, transforms)

    def options_modalities(self) -> list[str]:
        weights = self.weights()
        record = weights.record if weights else {}
        return list(record.get("modalities") or bundle_module(self.options.bundle, "scripts.mome_plus").PLUS_MODALITIES)

    def inferer(self, data: Any = None) -> Any:
        inferer = super().inferer(data)
        available = data.get("available") if isinstance(data, dict) else None
        if available is None:
            return inferer
        return functools.partial(inferer, available=torch.as_tensor(available).float()[None])
