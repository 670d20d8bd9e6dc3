"""Auto-segmentation with the MoME bundle: MONAI Label's ``BundleInferTask`` with the app's weights and knobs.

``BundleInferTask.__init__`` is not called: it ignores a bundle without ``models/model.pt`` (so the server could
not even say that weights are missing), reads weights only from inside the bundle, builds the network once with
the config's preset, and loads weights non-strictly. Everything else (pre/post-processing from ``inference.json``,
the ``Restored`` step back to the image grid, device handling) is the stock bundle task.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import torch
from monai.bundle import ConfigParser
from monai.transforms import SaveImaged
from monailabel.interfaces.tasks.infer_v2 import InferType
from monailabel.tasks.infer.basic_infer import BasicInferTask
from monailabel.tasks.infer.bundle import BundleConstants, BundleInferTask

from monailabel_app.lib.bundle import ServedWeights, bundle_module, load_state_dict, served_weights
from monailabel_app.lib.options import AppOptions

__all__ = ["MoMEInferTask", "NoWeightsError", "how_to_get_weights"]

logger = logging.getLogger(__name__)


class NoWeightsError(RuntimeError):
    """There is no trained model to serve yet."""


def how_to_get_weights(options: AppOptions) -> str:
    return (
        f"no trained MoME weights yet (looked for {options.served_file}"
        + (f" and {options.weights}" if options.weights else "")
        + "). Save final labels for a few images and start training (POST /train/mome, or 'Train' in 3D Slicer), "
        "or copy a bundle model.pt into that folder, or start the server with --conf weights /path/to/model.pt"
    )


class MoMEInferTask(BundleInferTask):
    """Segments one 3D image of any MR sequence; the label comes back on the image's own grid.

    The served weights are ``<model_dir>/model.pt`` if present, else the bundle's ``models/model.pt``. They are
    reloaded when the file changes (fine-tuning replaces it atomically), and the network's preset is read from
    them, so a ``small`` demo model and a ``paper`` model both serve without flags. Loading is strict.
    """

    def __init__(self, options: AppOptions) -> None:
        self.options = options
        self.valid = False
        self.const = BundleConstants()
        self.pre_filter = None
        self.post_filter = [SaveImaged]
        self.extend_load_image = True
        self.add_post_restore = True
        self.dropout = 0.0
        self._build_lock = threading.Lock()

        self.bundle_path = str(options.bundle)
        self.bundle_config_path = str(options.bundle / "configs" / "inference.json")
        self.bundle_config = self._load_bundle_config(self.bundle_path, self.bundle_config_path)
        for key, value in self.config_overrides().items():
            self.bundle_config[key] = value

        metadata = json.loads((options.bundle / "configs" / "metadata.json").read_text())
        self.key_image, image = next(iter(metadata["network_data_format"]["inputs"].items()))
        self.key_pred, pred = next(iter(metadata["network_data_format"]["outputs"].items()))
        labels = {v.lower(): int(k) for k, v in pred.get("channel_def", {}).items() if v.lower() != "background"}
        BasicInferTask.__init__(
            self,
            path=[str(p) for p in reversed(options.weight_candidates) if p is not None],
            network=None,
            type=InferType.SEGMENTATION,
            labels=labels,
            dimension=len(image.get("spatial_shape") or (0, 0, 0)),
            description=metadata.get("description", "MoME"),
            input_key=self.key_image,
            output_label_key=self.key_pred,
            load_strict=True,
        )
        self.version = metadata.get("version")
        self.valid = True

    def config_overrides(self) -> dict[str, Any]:
        """Bundle knobs set by the app: its own folders (never the bundle's) and the ``--conf`` knobs."""
        return {
            "ckpt_dir": str(self.options.model_dir),
            "ckpt_path": str(self.options.served_file),
            "output_dir": str(self.options.model_dir / "predictions"),
            **self.options.infer_overrides,
        }

    def weights(self) -> ServedWeights | None:
        return served_weights(self.options.weight_candidates, self.options.bundle)

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

    def is_valid(self) -> bool:
        return self.valid

    def run_pre_transforms(self, data: dict[str, Any], transforms: Any) -> dict[str, Any]:
        # MONAI >= 1.5 ``Spacingd`` updates every ``image_*`` key as if it were a meta dict, and MONAI Label adds
        # the string ``image_path``: keep it out of the way while the bundle's preprocessing runs.
        path = data.pop("image_path", None)
        data = super().run_pre_transforms(data, transforms)
        if path is not None:
            data["image_path"] = path
        return data

    def _get_network(self, device: str, data: Any) -> torch.nn.Module:
        weights = self.weights()
        if weights is None:
            raise NoWeightsError(how_to_get_weights(self.options))
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

    def build_network(self, preset: str) -> torch.nn.Module:
        """``network_def`` of ``inference.json`` with the weights' preset, parsed apart from the transforms' config
        (re-parsing that one would create new transform objects, which ``Invertd`` refuses to invert)."""
        parser = ConfigParser()
        parser.read_config(self.bundle_config_path)
        parser["bundle_root"] = self.bundle_path
        for key, value in self.config_overrides().items():
            parser[key] = value
        parser["preset"] = preset
        bundle_module(self.options.bundle, "scripts.mome")  # the network's class lives in the bundle's code
        return parser.get_parsed_content("network_def", instantiate=True)

    def aux_outputs(self, image: str, device: str) -> dict[str, torch.Tensor]:
        """Preprocessed image, fused logits and every expert's logits (``K*C`` channels) in one forward.

        Used by the disagreement scoring; the same preprocessing, weights and sliding window as ``/infer``.
        """
        data: dict[str, Any] = {self.key_image: image, "device": device, "image_path": image}
        data = self.run_pre_transforms(data, self.pre_transforms(data))
        network = self._get_network(device, data)
        inputs = torch.as_tensor(data[self.key_image])[None].to(torch.device(device))
        with torch.no_grad():
            out = self.inferer(data)(inputs, network, with_aux=True)
        if not isinstance(out, dict) or "experts" not in out:
            raise TypeError("the bundle's network did not return expert outputs for with_aux=True")
        fused = out.get("logits", out.get("pred"))
        return {"image": torch.as_tensor(data[self.key_image]), "fused": fused[0], "experts": out["experts"][0]}
