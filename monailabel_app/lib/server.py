"""What the app changes on MONAI Label's HTTP server, installed once when the server creates the app.

* ``POST /infer/{model}`` is served by a plain function, which FastAPI runs in its thread pool; the stock route is
  an ``async`` function that runs the whole inference on the event loop, so nothing else (``/info/``, a health
  check) is answered until it ends. The new route is put in front of the stock one and calls the same
  ``run_inference``.
* With authentication on, an identity provider that cannot be reached is a 503 with a message; the stock server
  lets the connection error through as a bare 500.
* Image and label ids (:func:`check_id`) are datastore ids, never paths.

In a task subprocess (training, scoring) there is no HTTP server and nothing is installed. (No ``from __future__
import annotations`` here: FastAPI reads the route's parameter annotations as objects.)
"""

import logging
import os
import sys
import tempfile
from pathlib import Path
from typing import Any, Optional

from monailabel_app.lib.errors import unprocessable

__all__ = ["MAX_ID_LENGTH", "check_id", "install", "remove_upload"]

logger = logging.getLogger(__name__)

#: Longest datastore id accepted (file names are at most 255 bytes on common file systems).
MAX_ID_LENGTH = 200


def check_id(image_id: Any, what: str = "image") -> str:
    """A datastore id: text without path separators, NUL or control characters, not ``.``/``..`` or hidden,
    at most :data:`MAX_ID_LENGTH` characters. Refused with 422 before anything touches the file system."""
    if not isinstance(image_id, str) or not image_id:
        raise unprocessable(f"{what} id missing: give the id of an image in the datastore")
    shown = image_id if len(image_id) <= 60 else image_id[:60] + "..."
    if len(image_id) > MAX_ID_LENGTH:
        raise unprocessable(f"{what} id {shown!r} is {len(image_id)} characters long; at most {MAX_ID_LENGTH}")
    if any(c in image_id for c in "/\\") or any(ord(c) < 32 for c in image_id) or image_id.startswith("."):
        raise unprocessable(
            f"{what} id {shown!r} is not a datastore id: ids are names, not paths (no '/', '\\', control "
            "characters or leading '.')"
        )
    return image_id


def remove_upload(path: Any) -> None:
    """Delete a refused upload's temporary copy (MONAI Label removes it only after a successful request)."""
    if not isinstance(path, str) or not path:
        return
    upload = Path(path)
    if upload.parent.resolve() == Path(tempfile.gettempdir()).resolve() and upload.name.startswith("tmp"):
        upload.unlink(missing_ok=True)


def install() -> bool:
    """Install the server changes above; ``False`` where MONAI Label's server is not running in this process."""
    server = sys.modules.get("monailabel.app")
    if server is None or getattr(server.app.state, "mome_server_hooks", False):
        return False
    import requests
    from fastapi import BackgroundTasks, Depends, File, Form, UploadFile
    from fastapi.responses import JSONResponse, Response
    from fastapi.routing import APIRoute
    from monailabel.config import RBAC_USER, settings
    from monailabel.endpoints import infer as stock
    from monailabel.endpoints.user.auth import RBAC, User

    def run_inference_off_the_event_loop(
        background_tasks: BackgroundTasks,
        model: str,
        image: str = "",
        session_id: str = "",
        params: str = Form("{}"),
        file: UploadFile = File(None),
        label: UploadFile = File(None),
        output: Optional[stock.ResultType] = None,  # noqa: UP045 - FastAPI evaluates it
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
    ):
        if output == stock.ResultType.dicom_seg:
            answer = stock.run_inference(
                background_tasks, model, image, session_id, params, file, label, stock.ResultType.json
            )
            return _stored_seg(answer)
        return stock.run_inference(background_tasks, model, image, session_id, params, file, label, output)

    def _stored_seg(answer: Any) -> Response:
        """``output=dicom_seg``: the SEG the app stored in the PACS for this prediction, as the PACS returns it
        (the stock branch writes a second, unstored SEG and needs the caller to describe the segment)."""
        from monailabel.interfaces.utils.app import app_instance

        from monailabel_app.lib.dicomweb import MRDICOMwebDatastore

        datastore = app_instance().datastore()
        if not isinstance(datastore, MRDICOMwebDatastore):
            raise unprocessable("output=dicom_seg needs a DICOMweb datastore (--studies http://.../dicom-web)")
        params = answer if isinstance(answer, dict) else {}
        seg = params.get("dicom_seg")
        if not seg:
            raise unprocessable("the prediction is empty: no DICOM SEG was written (a SEG needs a segment)")
        body = datastore.retrieve_seg(seg["StudyInstanceUID"], seg["SeriesInstanceUID"])
        name = f"{seg['SeriesInstanceUID']}.dcm"
        return Response(
            body, media_type="application/dicom", headers={"Content-Disposition": f"attachment; filename={name}"}
        )

    app = server.app
    route = APIRoute(
        f"{settings.MONAI_LABEL_API_STR}/infer/{{model}}",
        run_inference_off_the_event_loop,
        methods=["POST"],
        summary=f"{RBAC_USER}Run Inference for supported model",
        tags=["Infer"],
    )
    app.router.routes.insert(0, route)

    async def identity_provider_unreachable(request, error: Exception) -> JSONResponse:
        logger.error(f"identity provider {settings.MONAI_LABEL_AUTH_REALM_URI} unreachable: {error}")
        realm = settings.MONAI_LABEL_AUTH_REALM_URI
        detail = f"authentication is on but the identity provider cannot be reached ({realm})"
        return JSONResponse(status_code=503, content={"detail": detail})

    for error in (requests.exceptions.ConnectionError, requests.exceptions.Timeout):
        app.add_exception_handler(error, identity_provider_unreachable)
    app.middleware_stack = None  # rebuilt on the next request, with the handlers above
    app.state.mome_server_hooks = True
    logger.info(f"/infer served off the event loop; pid {os.getpid()}")
    return True
