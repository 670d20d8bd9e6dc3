"""Bad input is the user's to fix, so it gets one line, not a traceback.

Every check on user input raises :class:`InputError`, naming the file or key and what was expected. MONAI's config
parser wraps it in ``Failed to evaluate ConfigExpression`` layers; :func:`one_line_errors` (first in each workflow's
``initialize``) prints it alone, exit 2; other errors, and all with ``--debug True``/``MOME_DEBUG=1``, keep tracebacks.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType


class InputError(ValueError):
    """Something the user gave (a file, a datalist entry, a knob) cannot be used; the message says what and why."""


def input_error_in(error: BaseException | None) -> BaseException | None:
    """The first :class:`InputError` in an exception's cause/context chain (by class name: MONAI Label re-imports
    the bundle's modules, so the class may be a newer copy), or ``None``."""
    seen = set()
    while error is not None and id(error) not in seen:
        seen.add(id(error))
        if any(cls.__name__ in ("InputError", "VolumeError") for cls in type(error).__mro__):
            return error
        error = error.__cause__ or error.__context__
    return None


def _message(error: BaseException) -> str:
    text = str(error).strip()
    if "Original Traceback" in text:  # re-raised from a data-loader worker: the worker's own last line
        text = text.splitlines()[-1].split(": ", 1)[-1]
    return text


def one_line_errors(debug: bool = False) -> bool:
    """Install the hook that prints an :class:`InputError` as ``error: <message>`` and exits with status 2."""
    if debug or os.environ.get("MOME_DEBUG", "").lower() in ("1", "true", "yes"):
        return False
    if getattr(sys.excepthook, "one_line_errors", False):
        return True
    previous = sys.excepthook

    def hook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
        found = input_error_in(error)
        if found is None:
            return previous(kind, error, tb)
        print(f"error: {_message(found)}", file=sys.stderr, flush=True)
        os._exit(2)  # no interpreter teardown: data-loader threads must not turn this into an abort

    hook.one_line_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True
