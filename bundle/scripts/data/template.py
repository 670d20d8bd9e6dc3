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

__all__ = ["CROP", "MAPS", "Template", "head_template", "mni_template", "template_file", "template_map"]

#: The FSL MNI152 (6th generation, nonlinear asymmetric) whole-head T1 and its brain mask, 1 mm, as data files of the
#: nimare wheel: the registration target for images that still have a skull.
HEAD_FILES = {
    "t1": "tpl-MNI152NLin6Asym_res-01_T1w.nii.gz",
    "mask": "tpl-MNI152NLin6Asym_res-01_desc-brain_mask.nii.gz",
}

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
    return _package_file("nilearn", "datasets", "data", MAPS[kind])


def _package_file(package: str, *parts: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(f"{package} is not installed; the template ships inside its wheel")
    path = Path(next(iter(spec.submodule_search_locations)), *parts)
    if not path.is_file():
        raise FileNotFoundError(f"template file missing from the {package} package: {path}")
    return path


@functools.lru_cache(maxsize=4)
def head_template(spacing: float = 2.0) -> Template:
    """The whole-head MNI152 T1 (scaled to [0, 1]) and brain mask on its own grid, resampled to ``spacing`` mm."""
    t1 = nib.load(_package_file("nimare", "resources", "templates", HEAD_FILES["t1"]))
    mask = nib.load(_package_file("nimare", "resources", "templates", HEAD_FILES["mask"]))
    data = np.asarray(t1.dataobj, dtype=np.float32)
    data /= data.max()
    affine = np.asarray(t1.affine, float)
    scale = spacing / float(np.linalg.norm(affine[:3, 0]))
    shape = tuple(int(np.ceil(s / scale)) for s in data.shape)
    dst = affine.copy()
    dst[:3, :3] = affine[:3, :3] * scale
    dst[:3, 3] = affine[:3, :3] @ (np.full(3, (scale - 1) / 2)) + affine[:3, 3]
    image = resample(data, affine, dst, shape, order=1)
    brain = resample(np.asarray(mask.dataobj, np.float32), np.asarray(mask.affine, float), dst, shape, order=1) > 0.5
    for array in (image, brain, dst):
        array.setflags(write=False)
    return Template(image=image, mask=brain, affine=dst)


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
