"""The modality vocabulary. One place maps the names datasets use to our five modalities and to expert indices."""

from __future__ import annotations

import re
from collections.abc import Sequence

from scripts.errors import InputError
from scripts.io import strip_suffix
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


def modality_in_name(name: str) -> str | None:
    """The sequence a file name states (``case7_t1ce.nii.gz``, ``BraTS-GLI-0001-000-t2f.nii.gz``,
    ``FLAIR_preprocessed.nii.gz``): the whole stem or one of its ``_``/``-``/``.``-separated words; ``None`` when no
    word is a sequence (``seg.nii.gz``). Words naming two sequences (``t1_to_flair.nii.gz``) are an error: guessing
    would feed one sequence to another's expert."""
    stem = strip_suffix(name).lower()
    if stem in _LOOKUP:
        return _LOOKUP[stem]
    words = [w for w in stem.replace("-", "_").replace(".", "_").split("_") if w]
    pairs = {f"{a}{sep}{b}" for a, b in zip(words, words[1:], strict=False) for sep in ("-", "")}  # t2-flair, t1gd
    found = {_LOOKUP[p] for p in pairs if p in _LOOKUP} or {_LOOKUP[w] for w in words if w in _LOOKUP}
    if len(found) > 1:
        raise InputError(f"{name}: its name names {' and '.join(sorted(found))}; rename it to state one sequence")
    return found.pop() if found else None


def subject_in_name(name: str) -> str:
    """A file's name without its sequence word: what names the subject when a folder holds several subjects'
    sequences side by side (``BraTS2021_00001_flair.nii.gz`` -> ``BraTS2021_00001``, ``sub-01_T1w.nii`` ->
    ``sub-01``); ``""`` when the name is the sequence alone (``FLAIR.nii.gz``)."""
    stem = strip_suffix(name)
    sequence = modality_in_name(name)
    if sequence is None:
        return stem
    words = [w for w in re.split(r"[_\-.]", stem.lower()) if w]
    pairs = [
        (a, b)
        for a, b in zip(words, words[1:], strict=False)
        if sequence in (_LOOKUP.get(f"{a}-{b}"), _LOOKUP.get(a + b))
    ]
    spelled = [re.escape(a) + r"[_\-.]?" + re.escape(b) for a, b in pairs] or [
        re.escape(w) for w in words if _LOOKUP.get(w) == sequence
    ]
    stem = re.sub(r"(^|[_\-.])(" + spelled[0] + r")(?=$|[_\-.])", "", stem, count=1, flags=re.IGNORECASE)
    return stem.strip("_-. ")
