"""The MNI152 2009a template in the nilearn wheel, cropped as the MoME reference crops it (:data:`CROP`).

The reference keeps the uncropped affine; here the crop gets its own, shifted affine, and other spacings cover the
same box. Files are found without importing ``nilearn.datasets`` (and its download machinery): no network."""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np

from scripts.data.geometry import resample

#: The FSL MNI152 (NLin6Asym) 1 mm whole-head T1 and brain mask in the nimare wheel: the target for skull-on images.
HEAD_FILES = {k: f"tpl-MNI152NLin6Asym_res-01_{v}.nii.gz" for k, v in (("t1", "T1w"), ("mask", "desc-brain_mask"))}
#: The ICBM152 2009a maps in the nilearn wheel: T1, grey and white matter probability.
MAPS = {k: f"mni_icbm152_{k}_tal_nlin_sym_09a_converted.nii.gz" for k in ("t1", "gm", "wm")}
#: Crop of the 1 mm template grid (197x233x189) to 160x196x160, start/stop voxel per axis.
CROP = ((20, 180), (20, 216), (0, 160))


@dataclass(frozen=True)
class Template:
    image: np.ndarray  # float32 in [0, 1], skull-stripped T1
    mask: np.ndarray  # bool brain mask
    affine: np.ndarray  # RAS voxel-to-world

    def __post_init__(self) -> None:
        for array in (self.image, self.mask, self.affine):
            array.setflags(write=False)  # shared by every caller through the cache


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


def _grid(affine: np.ndarray, scale: float, start: np.ndarray) -> np.ndarray:
    """The affine of voxels ``scale`` times larger from voxel ``start``, the first voxel's outer edge kept."""
    dst = affine.copy()
    dst[:3, :3] = affine[:3, :3] * scale
    dst[:3, 3] = affine[:3, :3] @ (start - 0.5 + scale / 2) + affine[:3, 3]
    return dst


@functools.lru_cache(maxsize=4)
def head_template(spacing: float = 2.0) -> Template:
    """The whole-head MNI152 T1 (scaled to [0, 1]) and brain mask on its own grid, resampled to ``spacing`` mm."""
    t1, mask = (nib.load(_package_file("nimare", "resources", "templates", HEAD_FILES[k])) for k in ("t1", "mask"))
    data = np.asarray(t1.dataobj, dtype=np.float32)
    data /= data.max()
    affine = np.asarray(t1.affine, float)
    scale = spacing / float(np.linalg.norm(affine[:3, 0]))
    shape = tuple(int(np.ceil(s / scale)) for s in data.shape)
    dst = _grid(affine, scale, np.zeros(3))
    brain = resample(np.asarray(mask.dataobj, np.float32), np.asarray(mask.affine, float), dst, shape, order=1) > 0.5
    return Template(image=resample(data, affine, dst, shape, order=1), mask=brain, affine=dst)


@functools.lru_cache(maxsize=4)
def template_map(kind: str = "t1") -> tuple[np.ndarray, np.ndarray]:
    """One map's voxels (float32, as stored) and its RAS affine on the full 197x233x189 1 mm grid; cached."""
    img = nib.load(template_file(kind))
    data = np.asarray(img.dataobj, dtype=np.float32)
    data.setflags(write=False)  # shared by every caller through the cache
    return data, np.asarray(img.affine, float)


@functools.lru_cache(maxsize=8)
def mni_template(spacing: float = 1.0) -> Template:
    """Template, brain mask (nilearn's rule: intensity > 0.2 of max) and affine on the crop box at ``spacing`` mm."""
    if spacing <= 0:
        raise ValueError(f"spacing must be > 0 mm, got {spacing}")
    data, affine = template_map("t1")
    data = data / data.max()
    dst = _grid(affine, spacing, np.array([c[0] for c in CROP], dtype=float))
    shape = tuple(int(round((b - a) / spacing)) for a, b in CROP)
    if spacing == 1.0:
        image = data[tuple(slice(a, b) for a, b in CROP)]
        mask = image > 0.2
    else:
        image = resample(data, affine, dst, shape, order=1)
        mask = resample(data > 0.2, affine, dst, shape, order=1) > 0.5
    return Template(image=np.ascontiguousarray(image, dtype=np.float32), mask=mask, affine=dst)
