"""Embedded default dataset: physics-based multi-modal brain-lesion phantoms (design: docs/PHANTOMS.md).

Anatomy from the ICBM152 2009a maps inside the nilearn wheel (no network), five contrasts from tissue parameters
through the MR signal equations, six lesion families, acquisition artefacts, and writers that reproduce the layout
of BraTS 2021, BraTS-METS 2023, ATLAS v2.0, ISLES 2022, MSSEG 2016 and MICCAI WMH 2017 (``docs/DATASETS.md``).

Modules: ``params`` (every number), ``anatomy``, ``contrasts``, ``lesions``, ``artefacts``, ``fields``,
``subject`` (one subject end to end), ``profiles`` (datasets + writers), ``build`` (trees on disk), ``qa``.

API::

    from phantoms import generate, synthesize
    manifest = generate("out", profiles=["brats2021"], subjects=3, spacing=2, seed=0)
    subject = synthesize("isles2022", index=0, spacing=2, seed=0)   # in memory, with fraction maps
"""

from __future__ import annotations

from phantoms.anatomy import load_anatomy
from phantoms.build import MANIFEST, generate, validate
from phantoms.profiles import MODALITIES, PROFILES, get_profile
from phantoms.subject import Subject, synthesize

__all__ = [
    "MANIFEST",
    "MODALITIES",
    "PROFILES",
    "Subject",
    "generate",
    "get_profile",
    "load_anatomy",
    "synthesize",
    "validate",
]
