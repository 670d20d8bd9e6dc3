"""Checks on the configs' top-level knobs, run in ``initialize`` before anything is built.

On the command line ``--register false`` arrives as the *string* ``"false"`` (Python Fire only knows ``False``),
which is truthy; without this check it would silently switch both preprocessing branches on.
"""

from __future__ import annotations

__all__ = ["check_bools"]


def check_bools(**knobs: object) -> bool:
    bad = {name: value for name, value in knobs.items() if not isinstance(value, bool)}
    if bad:
        listed = ", ".join(f"--{name} {value!r}" for name, value in bad.items())
        raise ValueError(f"these options must be True or False (Python spelling, capitalised): {listed}")
    return True
