"""Subject anatomy: the ICBM152 2009a tissue maps shipped inside the nilearn wheel, then a per-subject warp.

Only files inside the installed ``nilearn`` package are read, through the bundle's template loader
(``scripts.data.template``), which locates them without importing ``nilearn.datasets`` (and its HTTP machinery):
the phantoms must build on machines without a network. CSF is derived as brain mask - GM - WM (the wheel has no CSF
map), the brain mask as nilearn's own (template / max > 0.2). The anatomy is loaded once per process and spacing.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from scipy import ndimage

from phantoms import fields
from phantoms.params import ANATOMY, ATROPHY, DEFORMATION, VENTRICLE_BOX
from scripts.data.template import MAPS, template_file, template_map

__all__ = ["Anatomy", "SubjectAnatomy", "deform", "load_anatomy", "template_files"]

def template_files() -> dict[str, Path]:
    """Paths of the ICBM152 2009a T1, GM and WM maps inside the installed nilearn package (no import, no I/O)."""
    return {kind: template_file(kind) for kind in MAPS}


@dataclass(frozen=True, eq=False)
class Anatomy:
    """Template anatomy on one grid.

    ``full_shape``/``full_affine`` describe the MNI152NLin2009aSym grid written to disk (197x233x189 at 1 mm, RAS,
    origin -98, -134, -72); every array lives on ``crop``, the brain bounding box plus a margin, where all the
    simulation happens.
    """

    spacing: float
    full_shape: tuple[int, int, int]
    full_affine: np.ndarray
    crop: tuple[slice, slice, slice]
    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    vent: np.ndarray
    vent_dist: np.ndarray  # mm from the ventricles (0 inside)
    vent_dir: np.ndarray  # (3, X, Y, Z) unit vector pointing away from the nearest ventricle voxel

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.gm.shape  # type: ignore[return-value]

    @property
    def affine(self) -> np.ndarray:
        """Affine of the working (cropped) grid."""
        aff = self.full_affine.copy()
        aff[:3, 3] += aff[:3, :3] @ np.array([s.start for s in self.crop], dtype=float)
        return aff

    def axes_mm(self) -> list[np.ndarray]:
        """MNI coordinate of every index along x, y, z of the working grid."""
        aff = self.affine
        return [aff[i, 3] + aff[i, i] * np.arange(n, dtype=np.float32) for i, n in enumerate(self.shape)]

    def to_full(self, volume: np.ndarray, fill: float = 0.0) -> np.ndarray:
        """Embed a working-grid array into the full template grid."""
        out = np.full(self.full_shape, fill, dtype=volume.dtype)
        out[self.crop] = volume
        return out


def _block_mean(volume: np.ndarray, k: int) -> np.ndarray:
    """Average k^3 blocks: partial-volume fractions at k mm from the 1 mm maps."""
    if k == 1:
        return volume
    pad = [(0, (-s) % k) for s in volume.shape]
    v = np.pad(volume, pad)
    sx, sy, sz = (s // k for s in v.shape)
    return v.reshape(sx, k, sy, k, sz, k).mean(axis=(1, 3, 5), dtype=np.float32)


@functools.lru_cache(maxsize=2)
def load_anatomy(spacing: float = 2.0) -> Anatomy:
    """The template anatomy at ``spacing`` mm (1 or 2), read from the nilearn wheel and cached per process."""
    k = int(round(spacing))
    if k not in (1, 2) or abs(spacing - k) > 1e-6:
        raise ValueError(f"spacing must be 1 or 2 mm, got {spacing!r}")
    maps = {name: template_map(name)[0] / 255.0 for name in MAPS}
    affine1 = template_map("t1")[1].copy()
    brain = maps["t1"] / maps["t1"].max() > ANATOMY["brain_threshold"]
    gm = np.where(brain, maps["gm"], 0.0).astype(np.float32)
    wm = np.where(brain, maps["wm"], 0.0).astype(np.float32)
    tissue = gm + wm
    over = tissue > 1.0
    gm[over] /= tissue[over]
    wm[over] /= tissue[over]
    csf = np.clip(brain.astype(np.float32) - gm - wm, 0.0, 1.0)

    gm, wm, csf = (_block_mean(a, k) for a in (gm, wm, csf))
    full_affine = affine1.copy()
    full_affine[:3, :3] *= k
    full_affine[:3, 3] += (k - 1) / 2.0  # centre of the first k^3 block
    full_shape = gm.shape

    # Ventricles: CSF-rich components inside a central MNI box (lateral + third ventricles), > 2 ml each.
    axes = [full_affine[i, 3] + k * np.arange(n) for i, n in enumerate(full_shape)]
    inbox = np.ones(full_shape, dtype=bool)
    for i, (lo, hi) in enumerate(VENTRICLE_BOX):
        sel = (axes[i] > lo) & (axes[i] < hi)
        inbox &= sel.reshape([-1 if j == i else 1 for j in range(3)])
    cand = (csf > ANATOMY["ventricle_csf"]) & inbox
    lab, n = ndimage.label(cand)
    sizes = ndimage.sum_labels(cand, lab, index=np.arange(1, n + 1)) * k**3 / 1000.0
    keep = np.flatnonzero(sizes > 2.0) + 1
    vent = np.isin(lab, keep).astype(np.float32)

    # Working grid: brain bounding box + margin.
    margin = int(math.ceil(ANATOMY["crop_margin_mm"] / k))
    idx = np.argwhere(gm + wm + csf > 0.01)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + margin + 1, full_shape)
    crop = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
    vent_c = np.ascontiguousarray(vent[crop])
    dist, nearest = ndimage.distance_transform_edt(vent_c < 0.5, return_indices=True)
    direction = np.indices(vent_c.shape, dtype=np.float32) - nearest.astype(np.float32)
    direction /= np.maximum(np.sqrt((direction**2).sum(0)), 1e-3)
    return Anatomy(
        spacing=float(k),
        full_shape=tuple(int(s) for s in full_shape),  # type: ignore[arg-type]
        full_affine=full_affine,
        crop=crop,  # type: ignore[arg-type]
        gm=np.ascontiguousarray(gm[crop]),
        wm=np.ascontiguousarray(wm[crop]),
        csf=np.ascontiguousarray(csf[crop]),
        vent=vent_c,
        vent_dist=(dist * k).astype(np.float32),
        vent_dir=direction,
    )


@dataclass(eq=False)
class SubjectAnatomy:
    """Tissue fractions of one subject after warp and atrophy, with the template (MNI) position of every voxel."""

    gm: np.ndarray
    wm: np.ndarray
    csf: np.ndarray
    vent: np.ndarray
    mni: np.ndarray  # (3, X, Y, Z) template coordinates in mm
    info: dict = field(default_factory=dict)

    @property
    def brain(self) -> np.ndarray:
        return (self.gm + self.wm + self.csf) > 0.5


def _u(rng: np.random.Generator, lo_hi: tuple[float, float]) -> float:
    return float(rng.uniform(*lo_hi))


def deform(
    anat: Anatomy,
    rng: np.random.Generator,
    atrophy: bool = False,
    atrophy_side: int = 0,
    ex_vacuo: float = 0.0,
) -> SubjectAnatomy:
    """Warp the template into a new subject: small residual affine, smooth diffeomorphic field, atrophy.

    Atrophy enlarges the ventricles by pulling their content outward along the ventricle distance gradient and
    widens sulci by turning boundary GM into CSF (§2.6). ``atrophy_side`` (+1 right, -1 left) with ``ex_vacuo`` > 0
    dilates the ventricle on one side more (chronic infarct).
    """
    sp = anat.spacing
    shape = anat.shape
    centre = np.array([(n - 1) / 2.0 for n in shape], dtype=np.float32)
    grid = np.indices(shape, dtype=np.float32)

    # Residual affine about the grid centre (voxel units: the grid is isotropic).
    ang = np.deg2rad([_u(rng, DEFORMATION["rotation_deg"]) for _ in range(3)])
    cx, cy, cz = np.cos(ang)
    sx, sy, sz = np.sin(ang)
    rot = (
        np.array([[1, 0, 0], [0, cx, -sx], [0, sx, cx]])
        @ np.array([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        @ np.array([[cz, -sz, 0], [sz, cz, 0], [0, 0, 1]])
    )
    mat = (rot @ np.diag([_u(rng, DEFORMATION["scale"]) for _ in range(3)])).astype(np.float32)
    shift = np.array([_u(rng, DEFORMATION["translation_mm"]) for _ in range(3)], dtype=np.float32) / sp
    rel = grid - centre[:, None, None, None]
    coords = np.einsum("ij,j...->i...", mat, rel) + (centre + shift)[:, None, None, None]
    del rel

    # Stationary velocity field on a coarse control grid, integrated, upsampled.
    control = _u(rng, DEFORMATION["control_mm"])
    max_disp = _u(rng, DEFORMATION["max_disp_mm"])
    cshape = [max(4, math.ceil(n * sp / control) + 1) for n in shape]
    vel = rng.standard_normal((3, *cshape), dtype=np.float32)
    vel = np.stack([ndimage.gaussian_filter(v, 1.0, mode="nearest") for v in vel])
    vel *= max_disp / max(float(np.sqrt((vel**2).sum(0)).max()), 1e-6)  # mm
    scale = np.array([(c - 1) / (n - 1) for c, n in zip(cshape, shape, strict=True)], dtype=np.float32)
    vel_c = vel / (sp / scale)[:, None, None, None]  # mm -> control-grid voxels
    disp_c = fields.integrate_velocity(vel_c)
    for i in range(3):
        coords[i] += fields.resize(disp_c[i] / scale[i], shape, order=1)
    del grid

    # Atrophy: push ventricle content outward (sample closer to the ventricles), decaying away from them.
    lim = ATROPHY["ventricle_mm"] if atrophy else ATROPHY["young_ventricle_mm"]
    vent_mm = _u(rng, lim)
    dist = anat.vent_dist
    amp = (vent_mm / sp) * np.exp(-dist / 12.0) * (dist > 0)  # voxels
    if atrophy_side and ex_vacuo > 0:
        x_mm = anat.axes_mm()[0][:, None, None]
        amp = amp * (1.0 + ex_vacuo / (1.0 + np.exp(-atrophy_side * x_mm / 5.0)))
    # The pull is defined in template space; evaluating it at the output grid is accurate to a few mm.
    coords -= anat.vent_dir * amp.astype(np.float32)
    del amp

    gm = fields.warp(anat.gm, coords)
    wm = fields.warp(anat.wm, coords)
    csf = fields.warp(anat.csf, coords)
    vent = fields.warp(anat.vent, coords)

    # Sulcal widening: GM on the CSF boundary turns partly into CSF.
    sul_lim = ATROPHY["sulcal"] if atrophy else ATROPHY["young_sulcal"]
    sulcal = _u(rng, sul_lim)
    if sulcal > 0:
        boundary = ndimage.binary_dilation(csf > 0.3, iterations=max(1, int(round(1.5 / sp)))) & (vent < 0.5)
        moved = np.where(boundary, sulcal * gm, 0.0).astype(np.float32)
        gm -= moved
        csf += moved

    origin = anat.affine[:3, 3].astype(np.float32)
    mni = coords * sp + origin[:, None, None, None]
    info = {
        "affine_rotation_deg": [round(float(a), 3) for a in np.rad2deg(ang)],
        "affine_matrix": [[round(float(v), 5) for v in row] for row in mat],
        "affine_translation_mm": [round(float(v) * sp, 3) for v in shift],
        "elastic_control_mm": round(control, 2),
        "elastic_max_velocity_mm": round(max_disp, 2),
        "atrophy": bool(atrophy),
        "ventricle_enlargement_mm": round(vent_mm, 2),
        "sulcal_widening": round(sulcal, 3),
        "ex_vacuo": {"side": int(atrophy_side), "factor": round(float(ex_vacuo), 3)} if ex_vacuo else None,
        "ventricle_volume_ml": round(float(vent.sum()) * sp**3 / 1000.0, 2),
    }
    return SubjectAnatomy(gm=gm, wm=wm, csf=csf, vent=vent, mni=mni.astype(np.float32), info=info)
