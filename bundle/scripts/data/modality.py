"""The modality vocabulary. One place maps the names datasets use to our five modalities and to expert indices."""

from __future__ import annotations

from collections.abc import Sequence

from scripts.errors import InputError
from scripts.mome import MODALITIES

#: Index of a sample whose modality is not known: it trains the fused output only.
UNKNOWN = -1

_SYNONYMS = {
    "T1": ("t1", "t1w", "t1n", "3dt1", "mprage", "t1-native"),
    "T1c": ("t1c", "t1ce", "t1gd", "t1-gd", "t1+c", "t1post", "3dt1gado", "t1gado", "t1-ce"),
    "T2": ("t2", "t2w"),
    "FLAIR": ("flair", "t2f", "t2-flair", "3dflair", "t2flair"),
    "DWI": ("dwi", "trace", "b1000", "dwi_b1000"),
}
_LOOKUP = {alias: name for name, aliases in _SYNONYMS.items() for alias in (*aliases, name.lower())}


def canonical_modality(name: str | None, where: str = "") -> str | None:
    """Our name for ``name`` (case-insensitive synonyms such as ``t1ce``, ``t2f``, ``T1w``); ``None`` for empty or
    ``"unknown"``. Any other name is an error: a typo would silently turn off expert routing for that image."""
    key = "" if name is None else str(name).strip().lower()
    if key in ("", "unknown", "none", "null"):
        return None
    if key not in _LOOKUP:
        at = f" in {where}" if where else ""
        raise InputError(
            f"unknown modality {name!r}{at}; expected one of {', '.join(MODALITIES)} (or a synonym such as "
            f"t1ce, t2f, T1w), or 'unknown'"
        )
    return _LOOKUP[key]


def modality_index(name: str | None, modalities: Sequence[str] = MODALITIES, where: str = "") -> int:
    """Expert index of ``name`` in ``modalities``; :data:`UNKNOWN` for unknown or for a modality without expert."""
    canonical = canonical_modality(name, where)
    return modalities.index(canonical) if canonical in modalities else UNKNOWN
