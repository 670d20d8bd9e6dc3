"""Every number the phantom generator samples from, in one place so it can be retuned.

Values are 3 T defaults from ``docs/PHANTOMS.md`` (§2.2 tissues, §2.3 lesions, §2.4 protocols, §2.5 targets,
§2.6-2.8 anatomy, lesion geometry and artefacts). Units: T1/T2/TR/TE/TI in ms, ADC in 10^-3 mm^2/s, C_Gd in mM,
lengths in mm, volumes in ml. A parameter entry is ``(default, low, high)``; per-subject values are drawn around
the default and clipped to ``[low, high]`` (see :data:`JITTER`).
"""

from __future__ import annotations

import math

__all__ = [
    "ACQUISITION",
    "ANATOMY",
    "ATROPHY",
    "COLUMNS",
    "CSF_T1_NOMINAL",
    "DEFORMATION",
    "FLUIDS",
    "GD",
    "GEOMETRY",
    "GLOBAL_JITTER",
    "JITTER",
    "JITTER_OVERRIDES",
    "LESIONS",
    "QA_TOLERANCE",
    "REFERENCE_PROTOCOLS",
    "SEQUENCES",
    "TARGET_RATIOS",
    "TERRITORIES",
    "TEXTURE",
    "TISSUES",
    "VENTRICLE_BOX",
    "flair_null_ti",
]

# --------------------------------------------------------------------------------------------------------------
# Tissue and lesion compartments (§2.2, §2.3). ``CGd`` only matters for T1c.
# CSF T1 is kept to 4150-4450 ms (not 3800-4500): FLAIR's inversion time is set for a nominal CSF T1 of 4300 ms,
# and a 10 % mismatch already leaves CSF at 0.4 x WM on FLAIR, which no real FLAIR shows.
# --------------------------------------------------------------------------------------------------------------
TISSUES: dict[str, dict[str, tuple[float, float, float]]] = {
    "WM": {"T1": (850, 750, 1100), "T2": (75, 65, 85), "PD": (0.70, 0.65, 0.75), "ADC": (0.70, 0.62, 0.79)},
    "GM": {"T1": (1400, 1250, 1650), "T2": (95, 85, 110), "PD": (0.82, 0.78, 0.86), "ADC": (0.85, 0.78, 1.09)},
    "CSF": {"T1": (4300, 4150, 4450), "T2": (2000, 1500, 2300), "PD": (1.0, 0.97, 1.0), "ADC": (3.0, 2.9, 3.3)},
}

LESIONS: dict[str, dict[str, tuple[float, float, float]]] = {
    "ms_chronic": {"T1": (1250, 1050, 1500), "T2": (120, 100, 160), "PD": (0.80, 0.76, 0.84), "ADC": (1.05, 0.9, 1.3)},
    "ms_active": {
        "T1": (1300, 1150, 1500),
        "T2": (130, 110, 160),
        "PD": (0.82, 0.78, 0.86),
        "ADC": (0.95, 0.7, 1.3),
        "CGd": (0.10, 0.05, 0.2),
    },
    "ms_blackhole": {"T1": (1900, 1600, 2500), "T2": (170, 140, 210), "PD": (0.88, 0.84, 0.92), "ADC": (1.4, 1.2, 1.7)},
    "wmh": {"T1": (1150, 1000, 1350), "T2": (115, 95, 140), "PD": (0.78, 0.74, 0.82), "ADC": (1.10, 0.95, 1.3)},
    "glioma_oedema": {
        "T1": (1450, 1250, 1700),
        "T2": (160, 130, 220),
        "PD": (0.86, 0.82, 0.90),
        "ADC": (1.5, 1.3, 1.8),
        "CGd": (0.01, 0.0, 0.02),
    },
    "glioma_et": {
        "T1": (1700, 1500, 1900),
        "T2": (120, 100, 150),
        "PD": (0.85, 0.81, 0.89),
        "ADC": (1.05, 0.8, 1.3),
        "CGd": (0.40, 0.25, 0.7),
    },
    "glioma_necrosis": {
        "T1": (3000, 2200, 3800),
        "T2": (400, 200, 800),
        "PD": (0.95, 0.9, 1.0),
        "ADC": (2.2, 1.7, 2.8),
    },
    "glioma_nonenh": {
        "T1": (1550, 1350, 1750),
        "T2": (130, 110, 160),
        "PD": (0.85, 0.81, 0.89),
        "ADC": (1.15, 0.95, 1.4),
        "CGd": (0.02, 0.0, 0.04),
    },
    "met_et": {
        "T1": (1650, 1450, 1850),
        "T2": (110, 90, 140),
        "PD": (0.84, 0.80, 0.88),
        "ADC": (0.95, 0.7, 1.3),
        "CGd": (0.5, 0.35, 0.8),
    },
    "met_oedema": {
        "T1": (1500, 1300, 1750),
        "T2": (170, 140, 220),
        "PD": (0.87, 0.83, 0.91),
        "ADC": (1.6, 1.4, 1.9),
        "CGd": (0.01, 0.0, 0.02),
    },
    # Not in the design table: the necrotic core of a ring-enhancing metastasis, taken from glioma necrosis.
    "met_necrosis": {"T1": (2800, 2200, 3600), "T2": (350, 200, 700), "PD": (0.93, 0.88, 0.98), "ADC": (2.0, 1.6, 2.6)},
    "stroke_hyperacute": {
        "T1": (900, 820, 1000),
        "T2": (80, 72, 90),
        "PD": (0.72, 0.68, 0.76),
        "ADC": (0.40, 0.35, 0.55),
    },
    "stroke_acute": {"T1": (1050, 950, 1200), "T2": (100, 88, 115), "PD": (0.76, 0.72, 0.80), "ADC": (0.45, 0.35, 0.6)},
    "stroke_subacute": {
        "T1": (1300, 1150, 1450),
        "T2": (140, 120, 165),
        "PD": (0.82, 0.78, 0.86),
        "ADC": (0.70, 0.5, 0.9),
        "CGd": (0.10, 0.0, 0.2),
    },
    # Chronic infarct (ATLAS-type): a CSF-like cavity inside a gliotic rim with WMH-like relaxation.
    "stroke_chronic_core": {
        "T1": (3500, 3000, 4000),
        "T2": (1200, 800, 1600),
        "PD": (0.95, 0.9, 1.0),
        "ADC": (2.5, 2.0, 3.0),
    },
    "stroke_chronic_rim": {
        "T1": (1250, 1100, 1450),
        "T2": (130, 110, 160),
        "PD": (0.80, 0.76, 0.84),
        "ADC": (1.2, 1.0, 1.5),
    },
}

#: Per-compartment relative jitter (standard deviation of a normal factor around 1, truncated at 2 sd), then the
#: value is clipped to its range.
#: Parameters are drawn per subject and per compartment (all lesions of one compartment share them; the texture
#: field below makes lesions differ from one another).
JITTER: dict[str, float] = {"T1": 0.04, "T2": 0.05, "PD": 0.02, "ADC": 0.05, "CGd": 0.15}
#: Tighter jitter where physics demands it: CSF is water (its T1 sets the FLAIR null, see TISSUES).
JITTER_OVERRIDES: dict[str, dict[str, float]] = {"CSF": {"T1": 0.015, "T2": 0.03}}
#: Fluid compartments: no tissue texture (free water is homogeneous).
FLUIDS: tuple[str, ...] = ("CSF", "stroke_chronic_core")

#: Subject-wide factors shared by every compartment but CSF (relaxometry differs systematically between subjects
#: and methods; a shared factor moves absolute values while keeping tissue contrast plausible).
GLOBAL_JITTER: dict[str, tuple[float, float]] = {"T1": (0.94, 1.08), "T2": (0.95, 1.05)}

#: Smooth multiplicative texture on T1 and PD (§2.2): standard deviation ranges and correlation length in mm.
TEXTURE: dict[str, tuple[float, float]] = {"T1_sd": (0.03, 0.05), "PD_sd": (0.02, 0.03), "corr_mm": (5.0, 15.0)}

#: Gadolinium relaxivity r1 in L mmol^-1 s^-1 (drawn per site: agent and field differ), r2 = 1.2 r1 (§2.3).
GD: dict[str, tuple[float, float]] = {"r1": (3.0, 5.0), "r2_over_r1": (1.2, 1.2)}

# --------------------------------------------------------------------------------------------------------------
# Sequences (§2.4): protocol ranges, drawn once per dataset site.
# --------------------------------------------------------------------------------------------------------------
SEQUENCES: dict[str, dict[str, tuple[float, float]]] = {
    "mprage": {
        "TR": (1900, 2500),
        "TI": (800, 1100),
        "flip": (7, 12),
        "tau": (6.5, 7.5),
        "N": (160, 192),
        "TE": (2.5, 4),
    },
    "se_t1": {"TR": (400, 700), "TE": (8, 15)},
    "tse_t2": {"TR": (3000, 6000), "TE": (80, 120)},
    # TI = flair_null_ti(TR) x (1 + U(-TI_jitter, +TI_jitter)) so CSF is dark but not always perfectly nulled.
    "flair": {"TR": (8000, 11000), "TE": (80, 140), "TI_jitter": (0.02, 0.02)},
    "dwi": {"TR": (3000, 8000), "TE": (60, 100), "b": (1000, 1000)},
    "pd": {"TR": (2500, 4000), "TE": (10, 20)},
}

#: The protocols in the column headers of the §2.5 table; with default parameters they reproduce it (tested).
#: The MPRAGE and DWI settings are not printed in the design; these are the values inside the ranges that do.
REFERENCE_PROTOCOLS: dict[str, dict[str, float]] = {
    "mprage": {"TR": 2100, "TI": 900, "flip": 7, "tau": 7, "N": 192, "TE": 3},
    "se_t1": {"TR": 600, "TE": 12},
    "tse_t2": {"TR": 5000, "TE": 100},
    "flair": {"TR": 9000, "TE": 120, "TI": 2500},
    "dwi": {"TR": 6000, "TE": 80, "b": 1000},
    "gd": {"r1": 4.0, "r2_over_r1": 1.2},
}

CSF_T1_NOMINAL = 4300.0


def flair_null_ti(tr: float, t1_csf: float = CSF_T1_NOMINAL) -> float:
    """Inversion time that nulls CSF for repetition time ``tr`` (TI0 = T1 ln(2 / (1 + exp(-TR/T1))))."""
    return t1_csf * math.log(2.0 / (1.0 + math.exp(-tr / t1_csf)))


# --------------------------------------------------------------------------------------------------------------
# §2.5 target ratios vs NAWM. Columns: T1w MPRAGE, T1c MPRAGE+Gd, T1w SE, T1c SE+Gd, T2w, FLAIR, DWI b1000, b0, ADC.
# --------------------------------------------------------------------------------------------------------------
COLUMNS: tuple[str, ...] = ("T1_mprage", "T1c_mprage", "T1_se", "T1c_se", "T2", "FLAIR", "DWI", "b0", "ADC")

_TABLE = {
    "WM": (1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00, 1.00),
    "GM": (0.65, 0.65, 0.83, 0.83, 1.51, 1.22, 1.25, 1.45, 1.21),
    "CSF": (0.17, 0.17, 0.43, 0.43, 3.55, 0.04, 0.30, 3.00, 4.29),
    "ms_chronic": (0.73, 0.73, 0.91, 0.91, 1.85, 1.70, 1.19, 1.69, 1.50),
    "ms_active": (0.72, 1.16, 0.92, 1.24, 2.02, 1.83, 1.42, 1.82, 1.36),
    "ms_blackhole": (0.47, 0.47, 0.74, 0.74, 2.46, 1.62, 1.09, 2.19, 2.00),
    "wmh": (0.79, 0.79, 0.95, 0.95, 1.75, 1.68, 1.08, 1.61, 1.57),
    "glioma_oedema": (0.65, 0.70, 0.90, 0.94, 2.42, 2.07, 0.96, 2.13, 2.14),
    "glioma_et": (0.53, 2.08, 0.76, 1.82, 1.90, 1.35, 1.24, 1.76, 1.50),
    "glioma_necrosis": (0.27, 0.27, 0.55, 0.55, 3.26, 1.01, 0.62, 2.79, 3.14),
    "glioma_nonenh": (0.59, 0.69, 0.82, 0.90, 2.06, 1.61, 1.19, 1.87, 1.64),
    "met_et": (0.54, 2.30, 0.76, 1.91, 1.75, 1.26, 1.28, 1.64, 1.36),
    "met_oedema": (0.63, 0.68, 0.88, 0.93, 2.53, 2.12, 0.90, 2.22, 2.29),
    "stroke_hyperacute": (0.97, 0.97, 1.00, 1.00, 1.12, 1.11, 1.48, 1.10, 0.57),
    "stroke_acute": (0.86, 0.86, 0.97, 0.97, 1.51, 1.48, 1.82, 1.41, 0.64),
    "stroke_subacute": (0.72, 1.16, 0.92, 1.25, 2.14, 1.95, 1.90, 1.90, 1.00),
}
TARGET_RATIOS: dict[str, dict[str, float]] = {
    row: dict(zip(COLUMNS, vals, strict=True)) for row, vals in _TABLE.items()
}

#: QA pass rule for a measured median ratio r against its target t: |r - t| <= max(rel * t, abs, spread_k * sd),
#: sd = spread of the ratio over the generator's own parameter draws (see ``qa.jitter_spread``).
#: ``table``: the physics check (default parameters at the §2.5 reference protocols vs the printed table; only
#: rounding differs). ``subject``: a generated subject vs the target re-evaluated at its site protocol (see qa.py).
QA_TOLERANCE: dict[str, dict[str, float]] = {
    "table": {"rel": 0.03, "abs": 0.03},
    "subject": {"rel": 0.25, "abs": 0.06, "spread_k": 5.0},
    # the image vs an independent re-derivation from the parameters and texture this subject actually drew
    "drawn": {"rel": 0.02, "abs": 0.01},
}

# --------------------------------------------------------------------------------------------------------------
# Anatomy, deformation, atrophy (§2.6)
# --------------------------------------------------------------------------------------------------------------
ANATOMY: dict[str, float] = {
    "brain_threshold": 0.2,  # template / max > this is brain (as nilearn's load_mni152_brain_mask)
    "crop_margin_mm": 8.0,  # working grid = brain bounding box + this margin
    "ventricle_csf": 0.55,  # CSF fraction that counts as ventricle inside the central box below
}
#: MNI box (x, y, z ranges in mm) that contains the lateral and third ventricles.
VENTRICLE_BOX: tuple[tuple[float, float], ...] = ((-32.0, 32.0), (-48.0, 36.0), (-6.0, 38.0))

DEFORMATION: dict[str, tuple[float, float]] = {
    "max_disp_mm": (3.0, 8.0),  # elastic: maximum displacement
    "control_mm": (16.0, 32.0),  # elastic: control-point spacing of the velocity field
    "rotation_deg": (-3.0, 3.0),  # datasets are registered: only a small residual affine
    "scale": (0.97, 1.03),
    "translation_mm": (-3.0, 3.0),
}

ATROPHY: dict[str, tuple[float, float]] = {
    "ventricle_mm": (1.0, 6.0),  # ventricle enlargement (displacement at the ventricle wall)
    "sulcal": (0.0, 0.4),  # fraction of boundary GM turned into CSF
    "young_ventricle_mm": (0.0, 1.5),  # profiles without the atrophy option
    "young_sulcal": (0.0, 0.08),
}

# --------------------------------------------------------------------------------------------------------------
# Lesion geometry (§2.7)
# --------------------------------------------------------------------------------------------------------------
GEOMETRY: dict[str, dict[str, tuple[float, float]]] = {
    "glioma": {
        "core_radius_mm": (12.0, 28.0),  # outer edge of the enhancing rim
        "rim_mm": (3.5, 7.0),
        "oedema_mm": (8.0, 28.0),  # oedema reach beyond the core
        "irregularity": (0.15, 0.35),
        "mass_effect_mm": (2.0, 8.0),
        "p_necrosis": (0.85, 0.85),  # else a non-enhancing core with a patchy rim
    },
    "metastasis": {
        "count": (1, 8),
        "radius_mm": (3.0, 14.0),  # log-uniform
        "solid_below_mm": (5.0, 5.0),  # smaller ones are solid-enhancing
        "rim_mm": (2.5, 4.0),
        "oedema_volume_ratio": (2.0, 10.0),
        "p_cerebellum": (0.15, 0.15),
    },
    "ms": {
        "count": (10, 45),
        "long_axis_mm": (4.0, 18.0),  # uniform: a 2 mm grid loses the smallest
        "aspect": (1.5, 3.0),
        "p_active": (0.0, 0.3),
        "p_blackhole": (0.1, 0.3),
    },
    "wmh": {
        # cap thickness from the ventricle wall per Fazekas grade (the lining along the bodies is ~0.3 of it); the
        # design's 5-10 / >10 mm for grades 2 / 3 gave 25-150 ml on this template, beyond MICCAI-WMH volumes
        "tau_grade1_mm": (2.0, 4.0),
        "tau_grade2_mm": (4.0, 7.0),
        "tau_grade3_mm": (7.0, 11.0),
        "punctate_count": (0, 30),
        "punctate_radius_mm": (1.5, 3.0),
        "penumbra_mm": (3.0, 8.0),
        "penumbra_t2": (0.03, 0.05),  # relative T2 increase in the penumbra (+3-5 % FLAIR)
    },
    "stroke": {
        "volume_ml": (2.0, 300.0),  # log-uniform
        "lacune_mm": (3.0, 15.0),
        "p_embolic": (0.2, 0.2),
        "irregularity": (0.2, 0.45),
        "core_fraction": (0.55, 0.75),  # chronic: radius of the cavity relative to the infarct
        "other_pathology_max_ml": (30.0, 30.0),  # WMH profile: old infarcts labelled "other pathology"
    },
}
#: Vascular territory weights (§2.7).
TERRITORIES: dict[str, float] = {"MCA": 0.60, "PCA": 0.15, "ACA": 0.05, "lacunar": 0.15, "cerebellar": 0.05}

# --------------------------------------------------------------------------------------------------------------
# Acquisition (§2.8)
# --------------------------------------------------------------------------------------------------------------
ACQUISITION: dict[str, dict[str, tuple[float, float]]] = {
    # voxel size of the acquisition: in-plane and slice thickness (mm); slices are axial
    "3d": {"inplane_mm": (0.9, 1.2), "slice_mm": (0.9, 1.2)},
    "2d": {"inplane_mm": (0.5, 1.0), "slice_mm": (3.0, 6.0)},
    "dwi": {"inplane_mm": (1.5, 2.5), "slice_mm": (4.0, 6.0)},
    # bias field max/min over the brain
    "bias": {"structural": (1.1, 1.4), "dwi": (1.3, 1.6)},
    # Rician noise sigma in % of the reference signal (WM; CSF for T2, BrainWeb convention); DWI: SNR of WM
    # (DWI SNR raised from the design's 5-15 to 10-20: at 5-8 a 2 mm phantom's small infarcts drown in noise)
    "noise": {"structural": (1.5, 4.0), "t2_csf": (1.0, 2.5), "dwi_snr": (10.0, 20.0)},
    # global scanner gain (arbitrary units)
    "gain": {"all": (400.0, 1200.0)},
}
