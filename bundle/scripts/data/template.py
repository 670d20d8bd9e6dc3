"""The MNI152 2009a template that ships inside the nilearn wheel, cropped as the MoME reference crops it.

The reference crops template voxels ``[20:180, 20:216, 0:160]`` (160x196x160 at 1 mm) but keeps the uncropped
affine; here the cropped grid gets its own, correctly shifted affine, and other spacings cover the same box.
The files are found inside the installed package without importing ``nilearn.datasets`` (and its download
machinery): nothing here can reach a network. :func:`template_map` is also what the phantom generator reads.
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from scripts.data.geometry import resample

__all__ = ["CROP", "MAPS", "Template", "mni_template", "template_file", "template_map"]

#: The ICBM152 2009a maps in the nilearn wheel: T1, grey and white matter probability.
MAPS = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
#: Crop of the 1 mm template grid (197x233x189), start/stop voxel per axis.
CROP = ((20, 180), (20, 216), (0, 160))


@dataclass(frozen=True)
class Template:
    image: np.ndarray  # float32 in [0, 1], skull-stripped T1
    mask: np.ndarray  # bool brain mask
    affine: np.ndarray  # RAS voxel-to-world


def template_file(kind: str = "t1") -> Path:
    """Path of one ICBM152 2009a map (``t1``, ``gm``, ``wm``) inside the installed nilearn package."""
    if kind not in MAPS:
        raise ValueError(f"unknown template map {kind!r}; expected one of {sorted(MAPS)}")
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError("nilearn is not installed; the MNI template ships inside its wheel")
    path = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data" / MAPS[kind]
    if not path.is_file():
        raise FileNotFoundError(f"ICBM152 template map missing from the nilearn package: {path}")
    return path


@functools.lru_cache(maxsize=4)
def template_map(kind: str = "t1") -> tuple[np.ndarray, np.ndarray]:
    """One map's voxels (float32, as stored) and its RAS affine on the full 197x233x189 1 mm grid; cached."""
    img = nib.load(template_file(kind))
    data = np.asarray(img.dataobj, dtype=np.float32)
    data.setflags(write=False)  # shared by every caller through the cache
    return data, np.asarray(img.affine, float)


def _full() -> tuple[np.ndarray, np.ndarray]:
    data, affine = template_map("t1")
    return data / data.max(), affine


@functools.lru_cache(maxsize=8)
def mni_template(spacing: float = 1.0) -> Template:
    """Template, brain mask (nilearn's rule: intensity > 0.2 of max) and affine on the crop box at ``spacing`` mm."""
    if spacing <= 0:
        raise ValueError(f"spacing must be > 0 mm, got {spacing}")
    data, affine = _full()
    start = np.array([c[0] for c in CROP], dtype=float)
    extent = np.array([c[1] - c[0] for c in CROP], dtype=float)  # in 1 mm voxels
    shape = tuple(int(round(e / spacing)) for e in extent)
    dst = affine.copy()
    dst[:3, :3] = affine[:3, :3] * spacing
    # same physical box: the first voxel's outer edge stays where the 1 mm crop's outer edge is
    dst[:3, 3] = affine[:3, :3] @ (start - 0.5 + spacing / 2) + affine[:3, 3]
    if spacing == 1.0:
        sl = tuple(slice(a, b) for a, b in CROP)
        image = data[sl]
    else:
        image = resample(data, affine, dst, shape, order=1)
    mask = (resample(data > 0.2, affine, dst, shape, order=1) > 0.5) if spacing != 1.0 else data[sl] > 0.2
    image = np.ascontiguousarray(image, dtype=np.float32)
    for array in (image, mask, dst):
        array.setflags(write=False)  # shared by every caller through the cache
    return Template(image=image, mask=mask, affine=dst)
