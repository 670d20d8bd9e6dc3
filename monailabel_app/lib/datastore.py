"""The local datastore, refusing uploads the app could not use before anything is written.

MONAI Label's ``LocalDatastore`` copies whatever arrives: a truncated image, a label drawn on another grid, a
label for an image that does not exist (a 500). Training would then fail much later, or learn from garbage.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from monailabel.datastore.local import LocalDatastore

from monailabel_app.lib.bundle import bundle_module
from monailabel_app.lib.errors import not_found, unprocessable

__all__ = ["CheckedDatastore"]

logger = logging.getLogger(__name__)


class CheckedDatastore(LocalDatastore):
    """``LocalDatastore`` whose writes check their input first (HTTP 404/422 with a message on refusal).

    * images: one readable 3D volume; an optional ``modality`` in the upload params must be a known sequence
      name and is stored canonically (``t1ce`` -> ``T1c``);
    * labels: the image exists; the label is a readable 3D volume of non-negative integers with the image's shape;
    * image info: a ``modality`` must be a known sequence name.
    """

    def __init__(self, *args: Any, bundle: Path, **kwargs: Any) -> None:
        self.bundle = bundle
        super().__init__(*args, **kwargs)

    def _canonical_modality(self, info: dict[str, Any], where: str) -> dict[str, Any]:
        if info.get("modality") in (None, ""):
            return info
        canonical = bundle_module(self.bundle, "scripts.data.modality").canonical_modality
        try:
            return {**info, "modality": canonical(info["modality"], where=where)}
        except ValueError as e:
            raise unprocessable(str(e)) from e

    def add_image(self, image_id: str, image_filename: str, image_info: dict[str, Any]) -> str:
        io = bundle_module(self.bundle, "scripts.io")
        try:
            io.check_image(image_filename)
        except io.VolumeError as e:
            raise unprocessable(f"image {image_id or Path(image_filename).name} refused: {e}") from e
        info = self._canonical_modality(dict(image_info or {}), where=f"the upload of {image_id}")
        return super().add_image(image_id, image_filename, info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        image = self.get_image_uri(image_id)
        if not image:
            raise not_found(f"image {image_id!r} is not in the datastore; upload it before its label")
        io = bundle_module(self.bundle, "scripts.io")
        try:
            io.check_label(label_filename, image)
        except io.VolumeError as e:
            raise unprocessable(f"label for {image_id} refused, nothing was stored: {e}") from e
        return super().save_label(image_id, label_filename, label_tag, label_info)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        if not self.get_image_uri(image_id):
            raise not_found(f"image {image_id!r} is not in the datastore")
        super().update_image_info(image_id, self._canonical_modality(dict(info), where=f"the info of {image_id}"))
