"""The configs' dictionary transforms besides MONAI's own (which do the rest, inverted by ``Invertd``)."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import InvertibleTransform, MapTransform
from monai.utils import TraceKeys, ensure_tuple_rep

from scripts.data.geometry import resample
from scripts.data.modality import modality_index
from scripts.data.registration import has_skull, register_to_template, registration_overlap
from scripts.data.template import mni_template
from scripts.errors import InputError
from scripts.mome import MODALITIES

logger = logging.getLogger(__name__)


class LesionLabeld(MapTransform):
    """Binary lesion mask (float 0/1): label values in the item's ``label_values``, else all non-zero ones. The key
    is dropped (its values go to the label's meta data) so that items with and without it collate together."""

    def __init__(self, keys: KeysCollection = "label", values_key: str = "label_values", allow_missing_keys=True):
        super().__init__(keys, allow_missing_keys)
        self.values_key = values_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        values = d.pop(self.values_key, None)
        for key in self.key_iterator(d):
            label = d[key]
            d[key] = (torch.isin(label, torch.as_tensor(values, dtype=label.dtype)) if values else label > 0).float()
            if hasattr(d[key], "meta"):  # evaluation reads the label file again, on its own grid
                d[key].meta["lesion_values"] = ",".join(str(int(v)) for v in values or ())  # collates as text
        return d


class ModalityIndexd(MapTransform):
    """The item's modality name becomes its expert index (``-1``: missing or unknown); a misspelt name is an error."""

    def __init__(self, key: str = "modality", modalities: Sequence[str] = MODALITIES, image_key: str = "image"):
        super().__init__(key, allow_missing_keys=True)
        self.key, self.modalities, self.image_key = key, tuple(modalities), image_key

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        image = d.get(self.image_key)
        where = image if isinstance(image, str) else getattr(image, "meta", {}).get("filename_or_obj", "a data item")
        d[self.key] = modality_index(d.get(self.key), self.modalities, where=f"datalist item {where}")
        return d


class RegisterToTemplated(MapTransform, InvertibleTransform):
    """Affinely register the image to MNI152 and resample every key onto the template's crop box at ``spacing``.

    Registered from ``image_key`` alone; ``order`` defaults to trilinear for the first key, nearest for the rest.
    ``skull_stripped``: brain-only template (``True``), whole-head (``False``), or decided by :func:`has_skull`
    (``"auto"``, logged and kept in the meta data). Skull stripping itself is the template mask (``MaskIntensityd``)."""

    def __init__(
        self,
        keys: KeysCollection,
        image_key: str = "image",
        spacing: float = 1.0,
        order: Sequence[int] | int | None = None,
        skull_stripped: bool | str = "auto",
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if skull_stripped not in (True, False, "auto"):
            raise InputError(f"--skull_stripped {skull_stripped!r}: expected True, False or auto")
        self.skull_stripped, self.image_key, self.spacing = skull_stripped, image_key, float(spacing)
        self.order = ensure_tuple_rep((1,) + (0,) * (len(self.keys) - 1) if order is None else order, len(self.keys))

    def __call__(self, data: Mapping) -> dict:
        d = dict(data)
        image = d[self.image_key]
        array, native_affine = np.asarray(image[0], np.float32), np.asarray(image.affine, float)
        stripped, ml = self.skull_stripped, None
        if stripped == "auto":
            skull, ml = has_skull(array, native_affine)
            stripped = not skull
            name = Path(str(getattr(image, "meta", {}).get("filename_or_obj", "image"))).name
            logger.info(f"{name}: foreground {ml:.0f} ml, {'skull-stripped' if stripped else 'with skull'}")
        matrix = register_to_template(array, native_affine, whole_head=not stripped)
        template = mni_template(self.spacing)
        overlap = None
        for key, order in self.key_iterator(d, self.order):
            x = d[key]
            native = np.asarray(x.affine, float)
            y = _like(resample(np.asarray(x), native, template.affine, template.image.shape, order, world=matrix), x)
            if key == self.image_key:  # the per-scan report's QC reads it from the trace
                overlap = round(registration_overlap(np.asarray(y[0]), template.mask, bool(stripped)), 4)
            y.meta.update(skull_stripped=bool(stripped), foreground_ml=-1.0 if ml is None else ml)
            extra = {"matrix": matrix.tolist(), "native_affine": native.tolist(), "skull_stripped": bool(stripped)}
            extra["overlap"] = overlap
            to_native = np.linalg.inv(native) @ template.affine
            self.push_transform(y, orig_size=tuple(x.shape[1:]), affine=to_native, extra_info=extra)
            d[key] = y
        return d

    def inverse(self, data: Mapping) -> dict:
        d = dict(data)
        for key, order in self.key_iterator(d, self.order):
            x = d[key]
            info = self.pop_transform(x)
            matrix, native = (np.asarray(info[TraceKeys.EXTRA_INFO][k], float) for k in ("matrix", "native_affine"))
            size = [int(s) for s in info[TraceKeys.ORIG_SIZE]]
            source = np.asarray(x.affine, float)
            y = _like(resample(x.detach().cpu().numpy(), source, native, size, order, world=np.linalg.inv(matrix)), x)
            y.affine = torch.as_tensor(native, dtype=torch.float64)
            d[key] = y
        return d


def _like(array: np.ndarray, x: MetaTensor) -> MetaTensor:
    y = MetaTensor(torch.as_tensor(array, dtype=x.dtype))
    y.copy_meta_from(x)
    return y
