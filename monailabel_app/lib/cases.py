"""A MoME+ case in the datastore: the requested image and the other sequences of its subject.

MONAI Label's datastores hold single images. An image's sequence is its datastore info ``modality`` if set, else
what its file name states (``BraTS2021_00001_flair.nii.gz``); its subject is the info ``subject`` if set, else its
name without the sequence word (``BraTS2021_00001``). The case is every image of the requested image's subject with
one of the model's sequences; the requested image is the reference, so the label comes back on its grid.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from monailabel.interfaces.datastore import Datastore

from monailabel_app.lib.bundle import bundle_module
from monailabel_app.lib.dicomweb import MRDICOMwebDatastore
from monailabel_app.lib.errors import conflict, unprocessable
from monailabel_app.lib.options import AppOptions

__all__ = ["identity", "resolve_case"]

logger = logging.getLogger(__name__)


def identity(name: str, info: dict[str, Any], options: AppOptions) -> tuple[str, str | None]:
    """(subject, sequence) of an image from its datastore info or, failing that, its file name."""
    modality = bundle_module(options.bundle, "scripts.data.modality")
    sequence = modality.canonical_modality(info.get("modality"), where=f"the datastore info of {name}")
    if sequence is None:
        sequence = modality.modality_in_name(name)
    subject = str(info.get("subject") or modality.subject_in_name(name))
    return subject, sequence


def resolve_case(
    store: Datastore,
    image: Any,
    path: str | None,
    upload: str | None,
    request: dict[str, Any],
    modalities: list[str],
    options: AppOptions,
) -> dict[str, Any]:
    """``{"name", "sequences": {sequence: path}, "reference"}`` for a request on ``image`` (a datastore id, or an
    upload whose sequence the request's ``modality`` names); 422 with what to do when its sequence is unknown, is
    not one of the model's, or two images of the subject claim one sequence."""
    if not isinstance(image, str) or not path:
        raise unprocessable("MoME+ segments an image of the datastore (its id) or an uploaded image file")
    if isinstance(store, MRDICOMwebDatastore) and not upload:  # listing siblings would download every series
        raise conflict("MoME+ does not read cases from a PACS yet: segment the series with model mome")
    try:
        if upload:  # MONAI Label's temporary name says nothing: the request must
            modality = bundle_module(options.bundle, "scripts.data.modality")
            sequence = modality.canonical_modality(request.get("modality"), where="the upload's 'modality'")
            subject = ""
        else:
            subject, sequence = identity(Path(path).name, store.get_image_info(image) or {}, options)
    except ValueError as e:  # a name or an info that states two sequences, or an unknown modality name
        raise unprocessable(str(e)) from e
    if sequence is None:
        how = "give 'modality' with the upload" if upload else f"set it with PUT /datastore/image/info?image={image}"
        raise unprocessable(
            f"cannot tell which sequence image {image if not upload else 'upload'} is (its name states none and it "
            f'has no \'modality\' info); {how}, info {{"modality": "FLAIR"}} (one of {", ".join(modalities)})'
        )
    if sequence not in modalities:
        raise unprocessable(f"image {image} is {sequence}; MoME+ here segments cases of {', '.join(modalities)}")
    name, siblings = ("upload", {}) if upload else (subject or image, _siblings(store, image, subject, options))
    sequences = {sequence: path}
    owners = {sequence: image}
    for other, (other_sequence, other_path) in sorted(siblings.items()):
        if other_sequence not in modalities:
            continue
        if other_sequence in sequences:
            raise unprocessable(
                f"subject {subject!r} has two {other_sequence} images in the datastore, {owners[other_sequence]} and "
                f"{other}; set a distinct 'subject' in the datastore info of one of them"
            )
        sequences[other_sequence], owners[other_sequence] = other_path, other
    return {"name": name, "sequences": sequences, "reference": sequence, "images": owners}


def _siblings(store: Datastore, image: str, subject: str, options: AppOptions) -> dict[str, tuple[str | None, str]]:
    """The other images of ``subject``: ``{id: (sequence, path)}`` (none for an image whose name is its
    sequence alone and that has no ``subject`` info: nothing ties it to another image)."""
    if not subject:
        return {}
    found = {}
    for other in store.list_images():
        if other == image:
            continue
        uri = store.get_image_uri(other)
        if not uri:
            continue
        try:
            other_subject, other_sequence = identity(Path(uri).name, store.get_image_info(other) or {}, options)
        except ValueError as e:  # that image's own requests say so; it is just not part of this case
            logger.warning(f"case of {image}: {other} left out: {e}")
            continue
        if other_subject == subject:
            found[other] = (other_sequence, uri)
    return found
