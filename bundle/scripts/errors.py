"""Bad input is the user's to fix, so it gets one line, not a traceback.

Every check on what a user gives the bundle (files, datalists, knobs) raises :class:`InputError` (or a subclass such
as :class:`scripts.io.VolumeError`), with a message that names the file or key and says what was expected. MONAI's
config parser wraps it in several layers of ``Failed to evaluate ConfigExpression``; the hook installed by
:func:`one_line_errors` (the first step of every workflow's ``initialize``) finds it in the chain and prints it alone,
with exit status 2. Any other error keeps its full traceback, and ``--debug True`` (or ``MOME_DEBUG=1``) keeps
tracebacks for input errors too.
"""

from __future__ import annotations

import os
import sys
from types import TracebackType

__all__ = ["InputError", "input_error_in", "one_line_errors"]


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
        last = text.splitlines()[-1]
        text = last.split(": ", 1)[1] if ": " in last else last
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
            previous(kind, error, tb)
            return
        sys.stderr.write(f"error: {_message(found)}\n")
        sys.stderr.flush()
        os._exit(2)  # no interpreter teardown: data-loader threads must not turn this into an abort

    hook.one_line_errors = True  # type: ignore[attr-defined]
    sys.excepthook = hook
    return True
