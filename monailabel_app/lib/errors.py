"""HTTP errors the app raises from inside MONAI Label's request path.

MONAI Label registers no handler for its own exceptions, so anything raised by an app, task or datastore becomes a
bare 500. A ``fastapi.HTTPException`` raised there instead reaches the client with its status and message.
"""

from __future__ import annotations

from fastapi import HTTPException

__all__ = ["conflict", "not_found", "unprocessable"]


def not_found(message: str) -> HTTPException:
    """404: an image, model or strategy that does not exist."""
    return HTTPException(status_code=404, detail=message)


def conflict(message: str) -> HTTPException:
    """409: the request is fine but the server's state does not allow it yet (no weights, no labels)."""
    return HTTPException(status_code=409, detail=message)


def unprocessable(message: str) -> HTTPException:
    """422: the uploaded content is unusable (corrupt, wrong shape, 4D, unknown modality name)."""
    return HTTPException(status_code=422, detail=message)
