"""One phantom subject, end to end: anatomy -> lesions -> tissue parameters -> signals -> acquisition -> labels.

Everything random comes from one ``numpy.random.Generator`` seeded by (seed, profile, subject index) and one per
(seed, profile, site) for protocols, consumed in a fixed order, so a subject is identical wherever and whenever it
is generated. The :class:`Subject` keeps the compartment fractions and the noiseless signals next to the final
images: the QA measures contrast on them (``phantoms.qa``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from phantoms import artefacts, fields, lesions
from phantoms.anatomy import Anatomy, deform, load_anatomy
from phantoms.contrasts import sequence_signal
from phantoms.params import FLUIDS, GLOBAL_JITTER, JITTER, JITTER_OVERRIDES, LESIONS, TEXTURE, TISSUES
from phantoms.profiles import Profile, dwi_grid, get_profile, profile_key
from scripts.data.geometry import resample

__all__ = ["GENERATOR_VERSION", "Subject", "synthesize"]

GENERATOR_VERSION = "1.0"

_LESION_FUNCS = {
    "glioma": lesions.glioma,
    "metastases": lesions.metastases,
    "ms": lesions.ms,
    "wmh": lesions.wmh,
    "stroke": lesions.stroke,
}
_TABLES = {"GM": TISSUES["GM"], "WM": TISSUES["WM"], "CSF": TISSUES["CSF"], **LESIONS}


@dataclass(eq=False)
class Subject:
    """A generated subject. Arrays are on the working grid (``anatomy.affine``) unless ``grids`` says otherwise."""

    profile: Profile
    index: int
    subject_id: str
    site: str
    spacing: float
    seed: int
    anatomy: Anatomy
    fractions: dict[str, np.ndarray]
    params: dict[str, dict[str, float]]
    protocols: dict[str, dict]
    clean: dict[str, np.ndarray]  # noiseless, bias-free, unblurred signal per modality (working grid)
    noiseless: dict[str, np.ndarray]  # blurred, biased, scaled: the image before noise (native grid)
    images: dict[str, np.ndarray]  # final images (native grid)
    grids: dict[str, tuple[tuple[int, int, int], np.ndarray]]  # modality/"label" -> native (shape, affine)
    label: np.ndarray
    label_fraction: np.ndarray  # annotated lesion fraction (working grid)
    brain: np.ndarray
    groups: list[lesions.LesionGroup]
    texture: dict[str, np.ndarray] = field(default_factory=dict)  # T1 and PD multipliers (not on fluids)
    t2_modifier: np.ndarray | None = None  # WMH penumbra on GM/WM T2
    meta: dict = field(default_factory=dict)

    @property
    def lesion_type(self) -> str:
        return self.groups[0].lesion_type

    def to_native(self, volume: np.ndarray, key: str, order: int = 1) -> np.ndarray:
        """A working-grid array on the native grid of modality ``key`` (unchanged if it has none)."""
        if key not in self.grids:
            return volume
        shape, affine = self.grids[key]
        if tuple(shape) == self.anatomy.full_shape and np.allclose(affine, self.anatomy.full_affine):
            return self.anatomy.to_full(volume)
        return resample(volume, self.anatomy.affine, affine, shape, order=order, dtype=None)


def _r(x: float, digits: int = 4) -> float:
    return float(f"{float(x):.{digits}g}")


def _sample_params(names: list[str], rng: np.random.Generator) -> tuple[dict[str, dict[str, float]], dict]:
    """Per-subject tissue parameters: shared T1/T2 factors (not CSF) times per-compartment jitter, clipped."""
    shared = {k: float(rng.uniform(*v)) for k, v in GLOBAL_JITTER.items()}
    out: dict[str, dict[str, float]] = {}
    for name in names:
        vals = {}
        sds = JITTER | JITTER_OVERRIDES.get(name, {})
        for key, (default, lo, hi) in _TABLES[name].items():
            factor = 1.0 + sds[key] * float(np.clip(rng.standard_normal(), -2.0, 2.0))  # truncated at 2 sd
            if name != "CSF":
                factor *= shared.get(key, 1.0)
            vals[key] = float(np.clip(default * factor, lo, hi))
        vals.setdefault("CGd", 0.0)
        out[name] = vals
    return out, {k: _r(v) for k, v in shared.items()}


def _mix(
    fractions: dict[str, np.ndarray],
    params: dict[str, dict[str, float]],
    protocol: dict,
    tex: dict[str, np.ndarray],
    t2mod: np.ndarray | None,
    index: dict[str, np.ndarray],
) -> np.ndarray:
    """Partial-volume signal: sum over compartments of fraction x compartment signal (texture per voxel)."""
    shape = next(iter(fractions.values())).shape
    out = np.zeros(int(np.prod(shape)), dtype=np.float32)
    for name, frac in fractions.items():
        idx = index[name]
        if idx.size == 0:
            continue
        p = params[name]
        t2 = p["T2"] * t2mod.ravel()[idx] if (t2mod is not None and name in ("GM", "WM")) else p["T2"]
        if name in FLUIDS:
            pd, t1 = p["PD"], p["T1"]
        else:
            pd, t1 = p["PD"] * tex["PD"].ravel()[idx], p["T1"] * tex["T1"].ravel()[idx]
        s = sequence_signal(protocol, pd, t1, t2, p["ADC"], p["CGd"])
        out[idx] += (frac.ravel()[idx] * s).astype(np.float32)
    return out.reshape(shape)


def _reference_mask(fractions: dict[str, np.ndarray], tissue: str, lesion_total: np.ndarray) -> np.ndarray:
    mask = (fractions[tissue] > 0.9) & (lesion_total < 0.01)
    return mask if mask.sum() >= 20 else fractions[tissue] > 0.5


def synthesize(profile: str, index: int, spacing: float = 2.0, seed: int = 0) -> Subject:
    """Generate subject ``index`` of ``profile`` in memory (deterministic in its arguments)."""
    prof = get_profile(profile)
    if index < 0:
        raise ValueError(f"subject index must be >= 0, got {index}")
    anat = load_anatomy(spacing)
    sp = anat.spacing
    entropy = [int(seed), profile_key(prof.name), int(index)]
    rng = np.random.default_rng(np.random.SeedSequence(entropy))
    site_idx, _ = prof.site_index(index)
    layout = prof.layout(prof, index)
    protocols = prof.protocols(site_idx, seed)

    # Anatomy and lesions.
    plan = prof.planner(rng)
    sub = deform(anat, rng, atrophy=plan.atrophy, atrophy_side=plan.side, ex_vacuo=plan.ex_vacuo)
    ctx = lesions.Context(sub, sp, rng)
    groups = [_LESION_FUNCS[kind](ctx, **kwargs) for kind, kwargs in plan.steps]
    fractions = lesions.paint(sub, groups, sp)
    lesion_names = [n for g in groups for n in g.compartments]
    lesion_total = np.zeros(anat.shape, np.float32)
    for n in lesion_names:
        lesion_total += fractions[n]
    brain_frac = fractions["GM"] + fractions["WM"] + fractions["CSF"] + lesion_total
    brain = brain_frac > 0.3

    # Tissue parameters and texture.
    names = ["WM", "GM", "CSF", *[n for n in _TABLES if n in lesion_names]]
    params, shared = _sample_params(names, rng)
    tex_cfg = {k: float(rng.uniform(*v)) for k, v in TEXTURE.items()}
    tex = {
        "T1": np.clip(1.0 + tex_cfg["T1_sd"] * fields.smooth_noise(anat.shape, sp, tex_cfg["corr_mm"], rng), 0.8, 1.2),
        "PD": np.clip(1.0 + tex_cfg["PD_sd"] * fields.smooth_noise(anat.shape, sp, tex_cfg["corr_mm"], rng), 0.8, 1.2),
    }
    t2mod = None
    for g in groups:
        if g.t2_modifier is not None:
            t2mod = g.t2_modifier if t2mod is None else t2mod * g.t2_modifier
    fractions = {n: fractions[n] for n in names}
    index_map = {n: np.flatnonzero(f.ravel() > 1e-4) for n, f in fractions.items()}

    # Signals.
    clean = {m: _mix(fractions, params, p, tex, t2mod, index_map) for m, p in protocols.items() if m != "ADC"}

    # Acquisition.
    grids: dict[str, tuple] = {}
    if prof.native_dwi_grid:
        g_shape, g_affine = dwi_grid(anat.full_shape, anat.full_affine, anat.crop)
        for key in ("DWI", "b0", "ADC", "label"):
            grids[key] = (g_shape, g_affine)
    if not prof.skull_stripped:  # noise fills the whole field of view, not just the working box
        for key in protocols:
            grids.setdefault(key, (anat.full_shape, anat.full_affine))
    wm_ref = _reference_mask(fractions, "WM", lesion_total)
    csf_ref = _reference_mask(fractions, "CSF", lesion_total)
    noiseless: dict[str, np.ndarray] = {}
    images: dict[str, np.ndarray] = {}
    acq_info: dict[str, dict] = {}
    brain_native: dict[str, np.ndarray] = {}

    def to_grid(vol: np.ndarray, key: str) -> np.ndarray:
        if key not in grids:
            return vol
        if grids[key][0] == anat.full_shape and np.allclose(grids[key][1], anat.full_affine):
            return anat.to_full(vol)
        shape, affine = grids[key]
        return resample(vol, anat.affine, affine, shape, dtype=None)

    def native_brain(key: str) -> np.ndarray:
        if key not in brain_native:
            brain_native[key] = brain if key not in grids else to_grid(brain_frac, key) > 0.3
        return brain_native[key]

    for m, p in protocols.items():
        if m in ("ADC", "b0"):
            continue
        ratio = float(rng.uniform(*p["bias_max_over_min"]))
        bias = artefacts.bias_field(anat.shape, sp, brain, ratio, rng)
        keys = ("DWI", "b0") if m == "DWI" else (m,)
        if m == "DWI":
            sigma = float(np.median(clean["DWI"][wm_ref])) / p["noise_snr_wm"]
            ref_desc = f"WM b1000 / SNR {p['noise_snr_wm']}"
        elif "noise_pct_of_csf" in p:
            sigma = float(np.median(clean[m][csf_ref])) * p["noise_pct_of_csf"] / 100.0
            ref_desc = f"{p['noise_pct_of_csf']} % of CSF"
        else:
            sigma = float(np.median(clean[m][wm_ref])) * p["noise_pct_of_wm"] / 100.0
            ref_desc = f"{p['noise_pct_of_wm']} % of WM"
        for key in keys:
            vol = artefacts.slice_blur(clean[key], sp, p["inplane_mm"], p["slice_mm"]) * bias * np.float32(p["gain"])
            vol = to_grid(vol, key)
            noiseless[key] = vol
            img = artefacts.rician(vol, sigma * p["gain"], rng)
            if prof.skull_stripped:
                img = img * native_brain(key)
            images[key] = img.astype(np.float32)
        acq_info[m] = {
            "bias_max_over_min": _r(ratio),
            "noise_sigma": _r(sigma * p["gain"]),
            "noise_reference": ref_desc,
            "slice_blur_fwhm_mm": [p["inplane_mm"], p["inplane_mm"], p["slice_mm"]],
            "gain": p["gain"],
        }
    if "ADC" in protocols:
        s0, sb = images["b0"], images["DWI"]
        valid = native_brain("ADC") & (s0 > 0.1 * float(np.median(s0[native_brain("ADC")]))) & (sb > 0)
        adc = np.zeros_like(s0)
        b = float(protocols["DWI"].get("b", 1000.0))
        adc[valid] = np.log(s0[valid] / sb[valid]) / b * 1e6
        images["ADC"] = np.clip(adc, 0.0, 5000.0).astype(np.float32)
        acq_info["ADC"] = {"computed_from": "noisy b0 and b1000: ln(S0/Sb)/b", "units": "1e-6 mm^2/s"}

    # Labels (the dataset's vocabulary); unannotated pathology stays background.
    labelled = [n for g in groups if g.labelled for n in g.compartments if n in prof.labels]
    label_fraction = np.zeros(anat.shape, np.float32)
    for n in labelled:
        label_fraction += fractions[n]
    if "label" in grids:
        frac_native = resample(label_fraction, anat.affine, grids["label"][1], grids["label"][0], dtype=None)
        value = max((prof.labels[n] for n in labelled), default=1)
        label = (frac_native >= 0.5).astype(np.uint8) * np.uint8(value)
    else:
        label = np.zeros(anat.shape, np.uint8)
        if labelled:
            stack = np.stack([fractions[n] for n in labelled])
            values = np.array([prof.labels[n] for n in labelled], dtype=np.uint8)
            sel = label_fraction >= 0.5
            label[sel] = values[np.argmax(stack[:, sel], axis=0)]
        if prof.name == "wmh2017" and (label == 2).any():  # as the WMH challenge: other pathology dilated in-plane
            grown = ndimage.binary_dilation(label == 2, structure=np.ones((3, 3, 1), bool))
            label[grown & (label == 0)] = 2

    vox_ml = sp**3 / 1000.0 if "label" not in grids else float(np.prod(np.diag(grids["label"][1])[:3])) / 1000.0
    meta = {
        "generator": {"name": "MoME phantoms", "version": GENERATOR_VERSION},
        "profile": prof.name,
        "dataset": prof.dataset,
        "subject": layout.subject,
        "index": int(index),
        "site": layout.site,
        "seed": int(seed),
        "seed_sequence_entropy": entropy,
        "spacing_mm": sp,
        "grid": {"shape": list(anat.full_shape), "affine": anat.full_affine.round(4).tolist()},
        "demographics": {"age": plan.age, "sex": plan.sex},
        "protocol": protocols,
        "tissue_params": {n: {k: _r(v) for k, v in p.items()} for n, p in params.items()},
        "subject_factors": shared,
        "texture": {k: _r(v) for k, v in tex_cfg.items()},
        "anatomy": sub.info,
        "lesions": [
            {
                "kind": g.kind,
                "lesion_type": g.lesion_type,
                "labelled": g.labelled,
                "compartments": list(g.compartments),
                **g.info,
            }
            for g in groups
        ],
        "acquisition": acq_info,
        "skull_stripped": prof.skull_stripped,
        "labels": {str(k): v for k, v in prof.label_names.items()},
        "label_volumes_ml": {
            str(v): round(float((label == v).sum()) * vox_ml, 3) for v in sorted(set(prof.label_names))
        },
    }
    return Subject(
        profile=prof,
        index=int(index),
        subject_id=layout.subject,
        site=layout.site,
        spacing=sp,
        seed=int(seed),
        anatomy=anat,
        fractions=fractions,
        params=params,
        protocols=protocols,
        clean=clean,
        noiseless=noiseless,
        images=images,
        grids=grids,
        label=label,
        label_fraction=label_fraction,
        brain=brain,
        groups=groups,
        texture=tex,
        t2_modifier=t2mod,
        meta=meta,
    )
