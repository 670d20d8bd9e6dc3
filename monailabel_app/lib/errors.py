"""HTTP errors the app raises from inside MONAI Label's request path.

MONAI Label registers no handler for its own exceptions, so anything raised by an app, task or datastore becomes a
bare 500. A ``fastapi.HTTPException`` raised there instead reaches the client with its status and message.
"""

from __future__ import annotations

from fastapi import HTTPException

__all__ = ["conflict", "input_error", "is_volume_error", "not_found", "unprocessable"]


def not_found(message: str) -> HTTPException:
    """404: an image, model or strategy that does not exist."""
    return HTTPException(status_code=404, detail=message)


def conflict(message: str) -> HTTPException:
    """409: the request is fine but the server's state does not allow it yet (no weights, no labels)."""
    return HTTPException(status_code=409, detail=message)


def unprocessable(message: str) -> HTTPException:
    """422: the uploaded content is unusable (corrupt, wrong shape, 4D, unknown modality name)."""
    return HTTPException(status_code=422, detail=message)


def is_volume_error(error: BaseException) -> bool:
    """A ``scripts.io.VolumeError`` or ``scripts.errors.InputError`` (bad input, a 422) in ``error`` or its cause
    chain, recognised by name: MONAI Label unloads and re-imports the bundle's ``scripts`` around its calls, so the
    class raised may be a newer copy than one imported earlier."""
    return input_error(error) is not None


def input_error(error: BaseException | None) -> BaseException | None:
    """The bad-input error in ``error``'s cause/context chain (see :func:`is_volume_error`), or ``None``."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if any(cls.__name__ in ("VolumeError", "InputError") for cls in type(error).__mro__):
            return error
        error = error.__cause__ or error.__context__
    return None
