"""Lesion shape and placement models (§2.7): each lesion type paints soft compartment fractions L(x) in [0, 1].

A lesion type returns a :class:`LesionGroup`: its compartments (e.g. necrosis, enhancing rim, oedema), the normal
tissues it takes over, whether the dataset annotates it, and what was drawn (for the sidecar). Borders are soft
(logistic, about 0.5-1 mm) so partial volume looks like an acquisition, and perturbed by smooth noise so shapes are
irregular. All shapes are drawn in a small box around each lesion, so a 1 mm subject costs no more than necessary.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage
from scipy.special import expit

from phantoms import fields
from phantoms.anatomy import SubjectAnatomy
from phantoms.params import GEOMETRY, TERRITORIES

__all__ = ["Context", "LesionGroup", "glioma", "metastases", "ms", "paint", "stroke", "territory_mask", "wmh"]


@dataclass(eq=False)
class LesionGroup:
    """One pathology in one subject: compartment fractions plus what the dataset's annotators would label."""

    kind: str
    lesion_type: str
    compartments: dict[str, np.ndarray]
    replaces: tuple[str, ...] = ("gm", "wm")
    labelled: bool = True
    info: dict = field(default_factory=dict)
    t2_modifier: np.ndarray | None = None  # multiplicative T2 of surrounding GM/WM (WMH penumbra)


@dataclass(eq=False)
class Context:
    """The subject being painted, with lazily computed distance maps."""

    anat: SubjectAnatomy
    spacing: float
    rng: np.random.Generator
    _cache: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.anat.gm.shape  # type: ignore[return-value]

    @property
    def tissue(self) -> np.ndarray:
        return self.anat.gm + self.anat.wm

    def brain_dist(self) -> np.ndarray:
        """mm from the outside of the brain."""
        if "brain_dist" not in self._cache:
            self._cache["brain_dist"] = ndimage.distance_transform_edt(self.anat.brain, sampling=self.spacing).astype(
                np.float32
            )
        return self._cache["brain_dist"]

    def vent_dist(self) -> tuple[np.ndarray, np.ndarray]:
        """mm from the subject's ventricles and the index of the nearest ventricle voxel."""
        if "vent" not in self._cache:
            vent = self.anat.vent > 0.5
            if not vent.any():
                vent = self.anat.csf > 0.9
            dist, idx = ndimage.distance_transform_edt(~vent, sampling=self.spacing, return_indices=True)
            self._cache["vent"] = (dist.astype(np.float32), idx.astype(np.int32))
        return self._cache["vent"]

    def invalidate(self) -> None:
        self._cache.clear()


# ----------------------------------------------------------------------------------------------------------------
# Geometry helpers
# ----------------------------------------------------------------------------------------------------------------
def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    q, r = np.linalg.qr(rng.standard_normal((3, 3)))
    q *= np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    return q


def _frame(direction: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Rotation whose first column is ``direction`` (the lesion's long axis)."""
    d = direction / max(float(np.linalg.norm(direction)), 1e-6)
    other = rng.standard_normal(3)
    other -= other.dot(d) * d
    other /= max(float(np.linalg.norm(other)), 1e-6)
    return np.stack([d, other, np.cross(d, other)], axis=1)


def _loguniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def _pick(mask: np.ndarray, rng: np.random.Generator, weights: np.ndarray | None = None) -> np.ndarray | None:
    """A random voxel index inside ``mask`` (optionally weighted), or None if the mask is empty."""
    flat = np.flatnonzero(mask)
    if flat.size == 0:
        return None
    if weights is None:
        k = int(rng.integers(flat.size))
    else:
        w = weights.ravel()[flat].astype(np.float64)
        k = int(rng.choice(flat.size, p=w / w.sum()))
    return np.array(np.unravel_index(flat[k], mask.shape))


class _Box:
    """A box of voxels around a lesion centre with the mm offsets of its voxels from the centre."""

    def __init__(self, centre: np.ndarray, half_mm: float, spacing: float, shape: tuple[int, int, int]):
        half = int(math.ceil(half_mm / spacing)) + 1
        lo = np.maximum(centre - half, 0)
        hi = np.minimum(centre + half + 1, shape)
        self.slices = tuple(slice(int(a), int(b)) for a, b in zip(lo, hi, strict=True))
        self.shape = tuple(int(b - a) for a, b in zip(lo, hi, strict=True))
        self.spacing = spacing
        self.offset = [
            (np.arange(a, b, dtype=np.float32) - c) * spacing for a, b, c in zip(lo, hi, centre, strict=True)
        ]

    def rho(self, radii: np.ndarray, rot: np.ndarray) -> np.ndarray:
        """Ellipsoidal radius (1 on the surface) of an ellipsoid with semi-axes ``radii`` (mm) and rotation ``rot``."""
        x, y, z = np.meshgrid(*self.offset, indexing="ij", sparse=True)
        out = np.zeros(self.shape, dtype=np.float32)
        for i in range(3):
            q = rot[0, i] * x + rot[1, i] * y + rot[2, i] * z
            out += (q / radii[i]) ** 2
        return np.sqrt(out)

    def noise(self, corr_mm: float, rng: np.random.Generator) -> np.ndarray:
        return fields.smooth_noise(self.shape, self.spacing, corr_mm, rng)


def _edge(level_minus_rho: np.ndarray, radius: float, width_mm: float) -> np.ndarray:
    """Soft inside-indicator: logistic of the signed distance (mm, approx.) from the surface."""
    return expit(level_minus_rho * (radius / width_mm)).astype(np.float32)


def _put(target: np.ndarray, box: _Box, values: np.ndarray) -> None:
    """Union of overlapping lesions of one compartment: voxel-wise maximum."""
    np.maximum(target[box.slices], values, out=target[box.slices])


def _wm_preference(wm: np.ndarray, spacing: float) -> np.ndarray:
    """Where oedema spreads: white matter (smoothed), sparing cortex (§2.7 "finger-like")."""
    smooth = ndimage.gaussian_filter(wm, sigma=max(1.5 / spacing, 0.5))
    return np.clip((smooth - 0.15) / 0.5, 0.0, 1.0).astype(np.float32)


def _volume_ml(fraction: np.ndarray, spacing: float) -> float:
    return round(float(fraction.sum(dtype=np.float64)) * spacing**3 / 1000.0, 3)


def _mass_effect(ctx: Context, centre: np.ndarray, radius_mm: float, amplitude_mm: float) -> None:
    """Push anatomy away from a tumour: u = A (x-c)/|x-c| min(1, (R/|x-c|)^2), tapered at the brain surface."""
    sp = ctx.spacing
    box = _Box(centre, 4.0 * radius_mm, sp, ctx.shape)
    x, y, z = np.meshgrid(*box.offset, indexing="ij")
    r = np.sqrt(x**2 + y**2 + z**2) + 1e-3
    taper = np.clip(ctx.brain_dist()[box.slices] / 10.0, 0.0, 1.0)
    mag = amplitude_mm * np.minimum(1.0, (radius_mm / r) ** 2) * taper / r / sp  # voxels per mm of offset
    grid = np.indices(box.shape, dtype=np.float32)
    coords = grid - np.stack([x * mag, y * mag, z * mag])
    a = ctx.anat
    for name in ("gm", "wm", "csf", "vent"):
        arr = getattr(a, name)
        arr[box.slices] = ndimage.map_coordinates(arr[box.slices], coords, order=1, mode="nearest")
    for i in range(3):
        a.mni[i][box.slices] = ndimage.map_coordinates(a.mni[i][box.slices], coords, order=1, mode="nearest")
    ctx.invalidate()


# ----------------------------------------------------------------------------------------------------------------
# Lesion types
# ----------------------------------------------------------------------------------------------------------------
def glioma(ctx: Context) -> LesionGroup:
    """One glioma in WM (frontal/temporal favoured): necrosis, enhancing rim, WM-following oedema, mass effect."""
    g, rng, sp, a = GEOMETRY["glioma"], ctx.rng, ctx.spacing, ctx.anat
    radius = float(rng.uniform(*g["core_radius_mm"]))
    x, y, z = a.mni
    weights = np.where((y > 0) | ((z < -5) & (np.abs(x) > 28)), 3.0, 1.0).astype(np.float32)
    cand = (a.wm > 0.6) & (ctx.brain_dist() > 0.6 * radius) & (np.abs(x) > 8)
    centre = _pick(cand, rng, weights)
    if centre is None:
        centre = _pick(a.wm > 0.3, rng)
    mass = float(rng.uniform(*g["mass_effect_mm"])) * radius / g["core_radius_mm"][1]
    _mass_effect(ctx, centre, radius, mass)

    rim = float(rng.uniform(*g["rim_mm"]))
    reach = float(rng.uniform(*g["oedema_mm"]))
    irr = float(rng.uniform(*g["irregularity"]))
    width = 0.5
    radii = radius * rng.uniform(0.85, 1.15, 3)
    rot = _random_rotation(rng)
    box = _Box(centre, 1.2 * radius + 1.4 * reach + 8.0, sp, ctx.shape)
    rho = box.rho(radii, rot)
    n_core = box.noise(float(rng.uniform(6, 12)), rng)
    n_rim = box.noise(6.0, rng)
    n_oed = box.noise(float(rng.uniform(10, 20)), rng)
    rho_core = rho - irr * n_core
    outer = _edge(1.0 - rho_core, radius, width)
    necrotic = bool(rng.random() < g["p_necrosis"][0])
    inner_level = (radius - rim) / radius
    inner = _edge(inner_level - (rho_core + 0.06 * n_rim), radius, width)
    comps = {k: np.zeros(ctx.shape, np.float32) for k in ("glioma_necrosis", "glioma_nonenh", "glioma_et")}
    if necrotic:
        comps["glioma_necrosis"][box.slices] = inner
        comps["glioma_et"][box.slices] = np.clip(outer - inner, 0.0, 1.0)
    else:  # low-grade-like: non-enhancing core with a patchy enhancing margin
        patch = expit((n_rim - 0.2) * 4.0).astype(np.float32)
        et = np.clip(outer - inner, 0.0, 1.0) * patch
        comps["glioma_et"][box.slices] = et
        comps["glioma_nonenh"][box.slices] = outer - et
        del comps["glioma_necrosis"]
    oed_raw = _edge((radius + reach) / radius - (rho - 0.45 * n_oed), radius, 2.5)
    oedema = np.zeros(ctx.shape, np.float32)
    oedema[box.slices] = oed_raw * _wm_preference(a.wm[box.slices], sp) * (1.0 - outer)
    comps["glioma_oedema"] = oedema
    info = {
        "count": 1,
        "centre_mni_mm": [round(float(v[tuple(centre)]), 1) for v in a.mni],
        "core_radius_mm": round(radius, 2),
        "rim_mm": round(rim, 2),
        "oedema_reach_mm": round(reach, 2),
        "necrotic": necrotic,
        "mass_effect_mm": round(mass, 2),
        "irregularity": round(irr, 3),
    }
    return LesionGroup("glioma", "glioma", comps, replaces=("gm", "wm", "csf"), info=info)


def metastases(ctx: Context) -> LesionGroup:
    """1-8 metastases at the GM/WM junction (15 % cerebellar): small solid, larger ring-enhancing; WM oedema."""
    g, rng, sp, a = GEOMETRY["metastasis"], ctx.rng, ctx.spacing, ctx.anat
    lo, hi = (int(v) for v in g["count"])
    counts = np.arange(lo, hi + 1)
    p = 1.0 / counts
    n = int(rng.choice(counts, p=p / p.sum()))
    x, y, z = a.mni
    junction = (a.gm * a.wm > 0.12) & (ctx.brain_dist() > 4.0)
    cerebellum = (z < -25) & (y < -45) & (ctx.tissue > 0.8)
    pref = _wm_preference(a.wm, sp)
    comps = {k: np.zeros(ctx.shape, np.float32) for k in ("met_necrosis", "met_et", "met_oedema")}
    centres: list[tuple[np.ndarray, float]] = []
    lesions = []
    for _ in range(n):
        radius = _loguniform(rng, *g["radius_mm"])
        site = "cerebellum" if rng.random() < g["p_cerebellum"][0] else "junction"
        for _try in range(25):
            c = _pick(cerebellum if site == "cerebellum" else junction, rng)
            if c is None:
                c = _pick(junction, rng)
            if all(np.linalg.norm((c - c2) * sp) > radius + r2 + 4.0 for c2, r2 in centres):
                break
        centres.append((c, radius))
        ratio = float(rng.uniform(*g["oedema_volume_ratio"]))
        reach = radius * ((1.0 + ratio) ** (1.0 / 3.0))
        box = _Box(c, 1.3 * reach + 8.0, sp, ctx.shape)
        rho = box.rho(radius * rng.uniform(0.85, 1.15, 3), _random_rotation(rng))
        rho_c = rho - 0.12 * box.noise(4.0, rng)
        outer = _edge(1.0 - rho_c, radius, 0.5)
        solid = radius < g["solid_below_mm"][0]
        if solid:
            _put(comps["met_et"], box, outer)
            rim = None
        else:
            rim = float(rng.uniform(*g["rim_mm"]))
            inner = _edge((radius - rim) / radius - rho_c, radius, 0.5)
            _put(comps["met_necrosis"], box, inner)
            _put(comps["met_et"], box, np.clip(outer - inner, 0.0, 1.0))
        oed = _edge(reach / radius - (rho - 0.4 * box.noise(10.0, rng)), radius, 2.0) * pref[box.slices]
        _put(comps["met_oedema"], box, oed * (1.0 - outer))
        lesions.append(
            {
                "centre_mni_mm": [round(float(v[tuple(c)]), 1) for v in a.mni],
                "radius_mm": round(radius, 2),
                "site": site,
                "solid": bool(solid),
                "rim_mm": None if rim is None else round(rim, 2),
                "oedema_volume_ratio": round(ratio, 2),
            }
        )
    core = comps["met_necrosis"] + comps["met_et"]
    comps["met_oedema"] *= np.clip(1.0 - core, 0.0, 1.0)
    return LesionGroup(
        "metastasis", "metastasis", comps, replaces=("gm", "wm", "csf"), info={"count": n, "lesions": lesions}
    )


def ms(ctx: Context) -> LesionGroup:
    """5-40 ovoid MS lesions: periventricular (radial, "Dawson's fingers"), juxtacortical, deep, infratentorial."""
    g, rng, sp, a = GEOMETRY["ms"], ctx.rng, ctx.spacing, ctx.anat
    n = int(rng.integers(int(g["count"][0]), int(g["count"][1]) + 1))
    p_active = float(rng.uniform(*g["p_active"]))
    p_bh = float(rng.uniform(*g["p_blackhole"]))
    vdist, vidx = ctx.vent_dist()
    x, y, z = a.mni
    masks = {
        "periventricular": (vdist > 1.5) & (vdist < 10.0) & (a.wm > 0.5),
        "juxtacortical": (a.gm > 0.25) & (a.gm < 0.6) & (a.wm > 0.35) & (z > -15),
        "deep": (a.wm > 0.85) & (vdist > 10.0),
        "infratentorial": (z < -18) & (y > -55) & (y < -15) & (np.abs(x) < 25) & (a.wm > 0.5),
    }
    probs = {"periventricular": 0.4, "juxtacortical": 0.2, "deep": 0.3, "infratentorial": 0.1}
    comps = {k: np.zeros(ctx.shape, np.float32) for k in ("ms_chronic", "ms_active", "ms_blackhole")}
    lesions = []
    names = list(probs)
    for _ in range(n):
        where = names[int(rng.choice(len(names), p=list(probs.values())))]
        c = _pick(masks[where], rng)
        if c is None:
            where, c = "deep", _pick(a.wm > 0.7, rng)
        length = float(rng.uniform(*g["long_axis_mm"]))
        if where == "periventricular":
            length *= 1.3  # periventricular plaques are the large, confluent ones
        aspect = float(rng.uniform(*g["aspect"]))
        if where == "periventricular":
            axis = (c - vidx[:, c[0], c[1], c[2]]).astype(float)
            rot = _frame(axis if np.linalg.norm(axis) > 0 else rng.standard_normal(3), rng)
        else:
            rot = _random_rotation(rng)
        radii = np.array([length / 2.0, length / 2.0 / aspect, length / 2.0 / aspect])
        radii = np.maximum(radii, 0.6)
        box = _Box(c, radii.max() * 1.6 + 3.0, sp, ctx.shape)
        rho = box.rho(radii, rot) - 0.08 * box.noise(3.0, rng)
        frac = _edge(1.0 - rho, float(radii.mean()), 0.5)
        u = rng.random()
        kind = (
            "ms_active" if u < p_active else ("ms_blackhole" if u < p_active + p_bh and length > 5.0 else "ms_chronic")
        )
        _put(comps[kind], box, frac)
        lesions.append(
            {
                "site": where,
                "kind": kind,
                "long_axis_mm": round(length, 2),
                "aspect": round(aspect, 2),
                "centre_mni_mm": [round(float(v[tuple(c)]), 1) for v in a.mni],
            }
        )
    info = {"count": n, "p_active": round(p_active, 3), "p_blackhole": round(p_bh, 3), "lesions": lesions}
    return LesionGroup("ms", "ms", comps, info=info)


def wmh(ctx: Context, grade: int | None = None, labelled: bool = True) -> LesionGroup:
    """Periventricular caps/bands by Fazekas grade plus punctate deep foci, with a +3-5 % T2 penumbra."""
    g, rng, sp, a = GEOMETRY["wmh"], ctx.rng, ctx.spacing, ctx.anat
    if grade is None:
        grade = int(rng.choice([1, 2, 3], p=[0.35, 0.4, 0.25]))
    tau = float(rng.uniform(*g[f"tau_grade{grade}_mm"]))
    vdist, _ = ctx.vent_dist()
    y = a.mni[1]
    vent = a.vent > 0.5
    y_c = float(y[vent].mean()) if vent.any() else -10.0
    caps = np.clip((np.abs(y - y_c) - 12.0) / 15.0, 0.0, 1.0)  # frontal and occipital horns
    tau_x = tau * (0.3 + 0.9 * caps)  # thick caps, a thin lining along the ventricle bodies
    irr = 0.5 if grade < 3 else 1.2
    noise = fields.smooth_noise(ctx.shape, sp, float(rng.uniform(6.0, 10.0)), rng)
    wm_pref = np.clip((a.wm - 0.25) / 0.35, 0.0, 1.0)
    band = expit((tau_x - vdist) / 1.5 + irr * noise).astype(np.float32) * wm_pref * (vdist > 0)
    n_punct = int(rng.integers(0, {1: 8, 2: 18, 3: 30}[grade] + 1))
    deep = (a.wm > 0.85) & (vdist > tau + 6.0)
    punct = []
    for _ in range(n_punct):
        c = _pick(deep, rng)
        if c is None:
            break
        r = float(rng.uniform(*g["punctate_radius_mm"]))
        box = _Box(c, 2.5 * r + 2.0, sp, ctx.shape)
        rho = box.rho(r * rng.uniform(0.8, 1.25, 3), _random_rotation(rng)) - 0.08 * box.noise(3.0, rng)
        _put(band, box, _edge(1.0 - rho, r, 0.5))
        punct.append(round(r, 2))
    band = band.astype(np.float32)
    pen_mm = float(rng.uniform(*g["penumbra_mm"]))
    pen_t2 = float(rng.uniform(*g["penumbra_t2"]))
    halo = ndimage.gaussian_filter(band, sigma=pen_mm / 2.0 / sp)
    t2mod = (1.0 + pen_t2 * np.clip(halo * 3.0, 0.0, 1.0) * (1.0 - band)).astype(np.float32)
    info = {
        "fazekas": grade,
        "tau_mm": round(tau, 2),
        "punctate_count": len(punct),
        "punctate_radius_mm": punct,
        "penumbra_mm": round(pen_mm, 2),
        "penumbra_t2_increase": round(pen_t2, 3),
        "count": 1 + len(punct),
    }
    return LesionGroup("wmh", "wmh", {"wmh": band}, labelled=labelled, info=info, t2_modifier=t2mod)


def _soft_box(v: np.ndarray, lo: float, hi: float, width: float = 4.0) -> np.ndarray:
    return (expit((v - lo) / width) * expit((hi - v) / width)).astype(np.float32)


def territory_mask(name: str, mni: np.ndarray, side: int) -> np.ndarray:
    """Soft vascular territory from MNI coordinates (a coarse stand-in for an arterial atlas, §2.7)."""
    x, y, z = mni
    sx = side * x
    hemi = expit((sx - 2.0) / 2.0)
    if name == "MCA":
        lateral = _soft_box(sx, 22, 75) * _soft_box(y, -75, 45) * _soft_box(z, -35, 65)
        deep = _soft_box(sx, 12, 32) * _soft_box(y, -15, 25) * _soft_box(z, -8, 22)
        m = np.maximum(lateral, deep)
    elif name == "ACA":
        m = _soft_box(sx, 1, 22) * _soft_box(y, -55, 60) * _soft_box(z, 5, 80)
    elif name == "PCA":
        occipital = _soft_box(y, -110, -62) * _soft_box(z, -20, 45)
        temporal = _soft_box(sx, 20, 45) * _soft_box(y, -45, -5) * _soft_box(z, -35, -2)
        thalamus = _soft_box(sx, 4, 20) * _soft_box(y, -32, -6) * _soft_box(z, -2, 16)
        m = np.maximum(np.maximum(occipital, temporal), thalamus)
    elif name == "cerebellar":
        m = _soft_box(y, -95, -40) * _soft_box(z, -70, -22)
    elif name == "lacunar":
        ganglia = _soft_box(sx, 8, 30, 2) * _soft_box(y, -30, 22, 2) * _soft_box(z, -6, 20, 2)
        pons = _soft_box(x, -10, 10, 2) * _soft_box(y, -38, -18, 2) * _soft_box(z, -42, -20, 2)
        return np.maximum(ganglia * hemi, pons)
    else:
        raise ValueError(f"unknown territory {name!r}")
    return (m * hemi).astype(np.float32)


def stroke(
    ctx: Context,
    stage: str,
    side: int | None = None,
    territory: str | None = None,
    labelled: bool = True,
    max_volume_ml: float | None = None,
) -> LesionGroup:
    """Ischaemic infarct in a vascular territory (2-300 ml, or a lacune), staged hyperacute ... chronic."""
    g, rng, sp, a = GEOMETRY["stroke"], ctx.rng, ctx.spacing, ctx.anat
    if stage not in ("hyperacute", "acute", "subacute", "chronic"):
        raise ValueError(f"unknown stroke stage {stage!r}")
    side = side if side is not None else int(rng.choice([-1, 1]))
    if territory is None:
        names = list(TERRITORIES)
        w = np.array(list(TERRITORIES.values()))
        territory = names[int(rng.choice(len(names), p=w / w.sum()))]
    terr = territory_mask(territory, a.mni, side)
    tissue = ctx.tissue
    lacune = territory == "lacunar"
    if lacune:
        lo, hi = g["lacune_mm"]
        length = float(rng.uniform(max(lo, 3.0 * sp), hi))  # a lacune below 3 voxels would vanish from the grid
        radius = length / 2.0
        volume = 4.0 / 3.0 * math.pi * radius**3 / 1000.0
    else:
        volume = _loguniform(rng, *g["volume_ml"])
        if territory == "cerebellar":
            volume = min(volume, 40.0)
        if max_volume_ml is not None:
            volume = min(volume, max_volume_ml)
        radius = (3.0 * volume * 1000.0 / (4.0 * math.pi)) ** (1.0 / 3.0)
    cand = (terr > 0.8) & (tissue > 0.7) & (ctx.brain_dist() > min(radius * 0.5, 12.0))
    c = _pick(cand, rng)
    if c is None:
        c = _pick((terr > 0.5) & (tissue > 0.5), rng)
    if c is None:
        c = _pick(tissue > 0.7, rng)
    irr = 0.1 if lacune else float(rng.uniform(*g["irregularity"]))
    box = _Box(c, 1.6 * radius + 6.0, sp, ctx.shape)
    rho = box.rho(radius * rng.uniform(0.8, 1.2, 3), _random_rotation(rng))
    rho = rho - irr * box.noise(float(rng.uniform(8.0, 15.0)), rng)
    t_box = 1.0 if lacune else terr[box.slices]
    blob = _edge(1.0 - rho, radius, 0.6) * t_box
    lesion = np.zeros(ctx.shape, np.float32)
    lesion[box.slices] = blob
    dots = 0
    if not lacune and rng.random() < g["p_embolic"][0]:
        spots = (terr > 0.7) & (tissue > 0.6)
        for _ in range(int(rng.integers(3, 9))):
            cd = _pick(spots, rng)
            if cd is None:
                break
            r = float(rng.uniform(2.0, 5.0))
            b2 = _Box(cd, 2.5 * r + 2.0, sp, ctx.shape)
            _put(lesion, b2, _edge(1.0 - b2.rho(np.full(3, r), np.eye(3)), r, 0.5))
            dots += 1
    info = {
        "stage": stage,
        "territory": territory,
        "side": "right" if side > 0 else "left",
        "planned_volume_ml": round(volume, 2),
        "radius_mm": round(radius, 2),
        "centre_mni_mm": [round(float(v[tuple(c)]), 1) for v in a.mni],
        "embolic_dots": dots,
        "count": 1 + dots,
    }
    if stage == "chronic":
        cf = float(rng.uniform(*g["core_fraction"]))
        core = np.zeros(ctx.shape, np.float32)
        core[box.slices] = _edge(cf - rho, radius, 0.6) * t_box
        core = np.minimum(core, lesion)
        comps = {"stroke_chronic_core": core, "stroke_chronic_rim": lesion - core}
        info["core_fraction"] = round(cf, 3)
    else:
        comps = {f"stroke_{stage}": lesion}
    return LesionGroup("stroke", f"stroke_{stage}", comps, labelled=labelled, info=info)


# ----------------------------------------------------------------------------------------------------------------
def paint(anat: SubjectAnatomy, groups: list[LesionGroup], spacing: float) -> dict[str, np.ndarray]:
    """Insert lesion groups into the tissue fractions, in order; returns every compartment's final fraction.

    A group's compartments are fractions *of the tissue it replaces*: with R the replaced tissues and G the group's
    summed shape, compartment_eff = compartment * sum_R(f), and each tissue in R keeps (1 - G) of itself. So the
    fractions of a voxel always sum to its brain fraction and CSF survives inside a WM lesion's blurred border.
    """
    tissues = {"gm": anat.gm, "wm": anat.wm, "csf": anat.csf}
    out: dict[str, np.ndarray] = {}
    for grp in groups:
        total = np.zeros_like(anat.gm)
        for frac in grp.compartments.values():
            total += frac
        scale = np.where(total > 1.0, 1.0 / np.maximum(total, 1e-6), 1.0).astype(np.float32)
        g_tot = np.minimum(total, 1.0)
        avail = sum(tissues[t] for t in grp.replaces)
        for name, frac in grp.compartments.items():
            eff = (frac * scale * avail).astype(np.float32)
            out[name] = out[name] + eff if name in out else eff
        keep = (1.0 - g_tot).astype(np.float32)
        for t in grp.replaces:
            tissues[t] *= keep
        vols = {name: _volume_ml(out[name], spacing) for name in grp.compartments}
        grp.info["volumes_ml"] = vols
        grp.info["total_volume_ml"] = round(sum(vols.values()), 3)
    out["GM"], out["WM"], out["CSF"] = tissues["gm"], tissues["wm"], tissues["csf"]
    return out
