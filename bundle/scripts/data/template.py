"""The MNI152 2009a template that ships inside the nilearn wheel, cropped as the MoME reference crops it.

The reference crops template voxels ``[20:180, 20:216, 0:160]`` (160x196x160 at 1 mm) but keeps the uncropped
affine; here the cropped grid gets its own, correctly shifted affine, and other spacings cover the same box.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from importlib import resources

import nibabel as nib
import numpy as np

from scripts.data.geometry import resample

__all__ = ["CROP", "Template", "mni_template"]

_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
#: Crop of the 1 mm template grid (197x233x189), start/stop voxel per axis.
CROP = ((20, 180), (20, 216), (0, 160))


@dataclass(frozen=True)
class Template:
    image: np.ndarray  # float32 in [0, 1], skull-stripped T1
    mask: np.ndarray  # bool brain mask
    affine: np.ndarray  # RAS voxel-to-world


@functools.lru_cache(maxsize=4)
def _full() -> tuple[np.ndarray, np.ndarray]:
    path = resources.files("nilearn.datasets") / "data" / _FILE
    with resources.as_file(path) as p:
        img = nib.load(p)
        data = np.asarray(img.dataobj, dtype=np.float32)
        return data / data.max(), img.affine


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
