"""The local datastore, refusing uploads the app could not use before anything is written.

MONAI Label's ``LocalDatastore`` copies whatever arrives: a truncated image, a label drawn on another grid, a
label for an image that does not exist (a 500). Training would then fail much later, or learn from garbage.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from monailabel.datastore.local import LocalDatastore

from monailabel_app.lib.bundle import bundle_module
from monailabel_app.lib.errors import not_found, unprocessable
from monailabel_app.lib.options import LABELS
from monailabel_app.lib.server import check_id, remove_upload

__all__ = ["CheckedDatastore"]

logger = logging.getLogger(__name__)


@contextlib.contextmanager
def _refused_upload_removed(path: str) -> Iterator[None]:
    try:
        yield
    except Exception:
        remove_upload(path)
        raise


class CheckedDatastore(LocalDatastore):
    """``LocalDatastore`` whose writes check their input first (HTTP 404/422 with a message on refusal).

    * ids: datastore ids, never paths (no separators, ``..``, NUL; bounded length);
    * images: one readable 3D volume; an optional ``modality`` in the upload params must be a known sequence
      name and is stored canonically (``t1ce`` -> ``T1c``);
    * labels: the image exists; the label is a readable 3D volume of the app's label values on the image's grid
      (shape and position);
    * image info: a ``modality`` must be a known sequence name.

    A refused upload's temporary copy is deleted (MONAI Label deletes it only after a successful request).
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
        with _refused_upload_removed(image_filename):
            check_id(image_id)
            io = bundle_module(self.bundle, "scripts.io")
            try:
                io.check_image(image_filename)
            except io.VolumeError as e:
                raise unprocessable(f"image {image_id or Path(image_filename).name} refused: {e}") from e
            info = self._canonical_modality(dict(image_info or {}), where=f"the upload of {image_id}")
            return super().add_image(image_id, image_filename, info)

    def save_label(self, image_id: str, label_filename: str, label_tag: str, label_info: dict[str, Any]) -> str:
        with _refused_upload_removed(label_filename):
            image = self.get_image_uri(check_id(image_id))
            if not image:
                raise not_found(f"image {image_id!r} is not in the datastore; upload it before its label")
            check_id(label_tag, "label tag")
            io = bundle_module(self.bundle, "scripts.io")
            try:
                io.check_label(label_filename, image, values=LABELS.values())
            except io.VolumeError as e:
                raise unprocessable(f"label for {image_id} refused, nothing was stored: {e}") from e
            return super().save_label(image_id, label_filename, label_tag, label_info)

    def update_image_info(self, image_id: str, info: dict[str, Any]) -> None:
        if not self.get_image_uri(check_id(image_id)):
            raise not_found(f"image {image_id!r} is not in the datastore")
        super().update_image_info(image_id, self._canonical_modality(dict(info), where=f"the info of {image_id}"))
