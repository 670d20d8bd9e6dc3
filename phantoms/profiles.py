"""Dataset profiles: which modalities, lesions, sites and label vocabulary each imitated public dataset has, and the
writers that put a subject on disk in that dataset's exact layout and file naming (see ``docs/DATASETS.md``).

Protocols are drawn per dataset *site* (seeded by seed, profile and site), not per subject, so sites differ
systematically as real ones do. Everything is written on the MNI152NLin2009aSym template grid (197x233x189 at
1 mm, 99x117x95 at 2 mm), except ISLES 2022, whose DWI/ADC/mask live on their own coarser grid as in the real data.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np

from phantoms.params import ACQUISITION, GD, GEOMETRY, SEQUENCES, flair_null_ti
from scripts.atomic import save_json

__all__ = [
    "MODALITIES",
    "PROFILES",
    "Layout",
    "Plan",
    "Profile",
    "get_profile",
    "profile_key",
    "write_static",
    "write_subject",
]

#: Manifest modality vocabulary (ADC is derived from DWI).
MODALITIES: tuple[str, ...] = ("T1", "T1c", "T2", "FLAIR", "DWI", "ADC")


def profile_key(name: str) -> int:
    """Stable integer for a profile name (seeding; Python's ``hash`` is salted per process)."""
    return zlib.crc32(name.encode())


@dataclass(frozen=True)
class Site:
    """One acquisition site: per modality the sequence family and the acquisition kind (3d, 2d, dwi)."""

    name: str
    sequences: dict[str, tuple[str, str]]
    field_strength: float = 3.0


@dataclass
class Plan:
    """What a subject will get, decided before the anatomy is warped (ex-vacuo dilation needs the infarct side)."""

    steps: list[tuple[str, dict]]
    atrophy: bool = False
    side: int = 0
    ex_vacuo: float = 0.0
    age: int = 50
    sex: str = "F"


@dataclass(frozen=True)
class Layout:
    """Where one subject's files go, relative to the output folder."""

    subject: str
    site: str
    files: dict[str, str]  # modality / "label" / "brain_mask" -> path
    sidecar: str
    bids_json: dict[str, str] = field(default_factory=dict)  # modality -> BIDS .json next to the image


@dataclass(frozen=True)
class Profile:
    name: str
    dataset: str
    summary: str
    root: str  # dataset root inside --out
    modalities: tuple[str, ...]  # manifest modalities, in writing order
    extra: tuple[str, ...]  # written but not in the manifest vocabulary (MSSEG's PD-weighted "DP")
    sites: tuple[Site, ...]
    labels: dict[str, int]  # compartment -> label value
    label_names: dict[int, str]
    skull_stripped: bool
    planner: Callable[[np.random.Generator], Plan]
    layout: Callable[[Profile, int], Layout]
    lesion_types: tuple[str, ...]
    native_dwi_grid: bool = False
    sform_code: int = 1  # 1 scanner, 4 MNI (ATLAS is distributed in MNI152NLin2009aSym space)

    def site_index(self, index: int) -> tuple[int, int]:
        """(site number, 1-based subject number within the site) of the ``index``-th subject."""
        return index % len(self.sites), index // len(self.sites) + 1

    def protocols(self, site: int, seed: int) -> dict[str, dict]:
        """Sequence parameters, acquisition geometry, noise, bias and gain of every modality at one site."""
        rng = np.random.default_rng(np.random.SeedSequence([int(seed), profile_key(self.name), 1_000_003, site]))
        spec = self.sites[site]
        r1 = float(rng.uniform(*GD["r1"]))
        out: dict[str, dict] = {}
        for modality in (*self.modalities, *self.extra):
            if modality == "ADC":
                continue
            seq, acq = spec.sequences[modality]
            out[modality] = _draw_protocol(seq, acq, rng)
            out[modality]["field_strength_T"] = spec.field_strength
            if modality == "T1c":
                out[modality].update(gd=True, r1=round(r1, 3), r2_over_r1=GD["r2_over_r1"][0])
        if "DWI" in out:
            out["b0"] = dict(out["DWI"], sequence="b0")
            out["ADC"] = {"sequence": "adc", "derived_from": ["b0", "DWI"], "units": "1e-6 mm^2/s"}
        return out


def _draw_protocol(seq: str, acq: str, rng: np.random.Generator) -> dict:
    ranges = SEQUENCES[seq]
    p: dict = {"sequence": seq, "acquisition": acq}
    for key, (lo, hi) in ranges.items():
        if key == "TI_jitter":
            continue
        v = float(rng.uniform(lo, hi))
        p[key] = int(round(v / 2) * 2) if key == "N" else round(v, 1)
    if seq == "flair":
        jitter = ranges["TI_jitter"][1]
        p["TI"] = round(flair_null_ti(p["TR"]) * (1.0 + float(rng.uniform(-jitter, jitter))), 1)
    geom = ACQUISITION[acq]
    p["inplane_mm"] = round(float(rng.uniform(*geom["inplane_mm"])), 2)
    p["slice_mm"] = round(float(rng.uniform(*geom["slice_mm"])), 2) if acq != "3d" else p["inplane_mm"]
    if seq in ("dwi",):
        p["noise_snr_wm"] = round(float(rng.uniform(*ACQUISITION["noise"]["dwi_snr"])), 2)
        p["bias_max_over_min"] = ACQUISITION["bias"]["dwi"]
    elif seq == "tse_t2":
        p["noise_pct_of_csf"] = round(float(rng.uniform(*ACQUISITION["noise"]["t2_csf"])), 2)
        p["bias_max_over_min"] = ACQUISITION["bias"]["structural"]
    else:
        p["noise_pct_of_wm"] = round(float(rng.uniform(*ACQUISITION["noise"]["structural"])), 2)
        p["bias_max_over_min"] = ACQUISITION["bias"]["structural"]
    p["gain"] = round(float(rng.uniform(*ACQUISITION["gain"]["all"])), 1)
    return p


# ----------------------------------------------------------------------------------------------------------------
# Plans (which lesions a subject of each profile gets)
# ----------------------------------------------------------------------------------------------------------------
def _sex(rng: np.random.Generator) -> str:
    return "F" if rng.random() < 0.5 else "M"


def _plan_glioma(rng: np.random.Generator) -> Plan:
    return Plan([("glioma", {})], atrophy=False, age=int(rng.integers(25, 80)), sex=_sex(rng))


def _plan_mets(rng: np.random.Generator) -> Plan:
    age = int(rng.integers(40, 85))
    return Plan([("metastases", {})], atrophy=age > 65, age=age, sex=_sex(rng))


def _plan_atlas(rng: np.random.Generator) -> Plan:
    side = int(rng.choice([-1, 1]))
    age = int(rng.integers(40, 85))
    return Plan(
        [("stroke", {"stage": "chronic", "side": side})],
        atrophy=bool(rng.random() < 0.5),
        side=side,
        ex_vacuo=float(rng.uniform(0.5, 1.5)),
        age=age,
        sex=_sex(rng),
    )


def _plan_isles(rng: np.random.Generator) -> Plan:
    stage = str(rng.choice(["hyperacute", "acute", "subacute"], p=[0.3, 0.45, 0.25]))
    steps: list[tuple[str, dict]] = [("stroke", {"stage": stage})]
    if rng.random() < 0.4:  # incidental small-vessel disease, not annotated in ISLES
        steps.append(("wmh", {"grade": int(rng.choice([1, 2], p=[0.7, 0.3])), "labelled": False}))
    return Plan(steps, atrophy=bool(rng.random() < 0.5), age=int(rng.integers(45, 90)), sex=_sex(rng))


def _plan_ms(rng: np.random.Generator) -> Plan:
    return Plan([("ms", {})], atrophy=False, age=int(rng.integers(20, 55)), sex="F" if rng.random() < 0.7 else "M")


def _plan_wmh(rng: np.random.Generator) -> Plan:
    steps: list[tuple[str, dict]] = [("wmh", {})]
    if rng.random() < 0.4:  # "other pathology" (label 2): an old lacune or cortical infarct
        territory = "lacunar" if rng.random() < 0.6 else None
        cap = GEOMETRY["stroke"]["other_pathology_max_ml"][1]
        steps.append(("stroke", {"stage": "chronic", "territory": territory, "max_volume_ml": cap}))
    return Plan(steps, atrophy=True, age=int(rng.integers(60, 90)), sex=_sex(rng))


# ----------------------------------------------------------------------------------------------------------------
# Layouts (exact public file naming; see docs/DATASETS.md for sources)
# ----------------------------------------------------------------------------------------------------------------
def _layout_brats2021(p: Profile, i: int) -> Layout:
    sid = f"BraTS2021_{i:05d}"
    d = f"{p.root}/{sid}"
    names = {"T1": "t1", "T1c": "t1ce", "T2": "t2", "FLAIR": "flair", "label": "seg"}
    files = {k: f"{d}/{sid}_{v}.nii.gz" for k, v in names.items()}
    return Layout(sid, p.sites[p.site_index(i)[0]].name, files, f"{d}/{sid}_phantom.json")


def _layout_brats_mets(p: Profile, i: int) -> Layout:
    sid = f"BraTS-MET-{i + 1:05d}-000"
    d = f"{p.root}/{sid}"
    names = {"T1": "t1n", "T1c": "t1c", "T2": "t2w", "FLAIR": "t2f", "label": "seg"}
    files = {k: f"{d}/{sid}-{v}.nii.gz" for k, v in names.items()}
    return Layout(sid, p.sites[p.site_index(i)[0]].name, files, f"{d}/{sid}-phantom.json")


def _layout_atlas2(p: Profile, i: int) -> Layout:
    k, n = p.site_index(i)
    site = p.sites[k].name  # R001 ...
    sid = f"sub-r{int(site[1:]):03d}s{n:03d}"
    d = f"{p.root}/{site}/{sid}/ses-1/anat"
    stem = f"{sid}_ses-1_space-MNI152NLin2009aSym"
    files = {"T1": f"{d}/{stem}_T1w.nii.gz", "label": f"{d}/{stem}_label-L_desc-T1lesion_mask.nii.gz"}
    return Layout(sid, site, files, f"{p.root}/{site}/sourcedata/phantom/{sid}_ses-1_phantom.json")


def _layout_isles2022(p: Profile, i: int) -> Layout:
    sid = f"sub-strokecase{i + 1:04d}"
    ses = "ses-0001"
    d = f"{p.root}/{sid}/{ses}"
    files = {
        "DWI": f"{d}/dwi/{sid}_{ses}_dwi.nii.gz",
        "ADC": f"{d}/dwi/{sid}_{ses}_adc.nii.gz",
        "FLAIR": f"{d}/anat/{sid}_{ses}_FLAIR.nii.gz",
        "label": f"{p.root}/derivatives/{sid}/{ses}/{sid}_{ses}_msk.nii.gz",
    }
    bids = {m: files[m].removesuffix(".nii.gz") + ".json" for m in ("DWI", "ADC", "FLAIR")}
    site = p.sites[p.site_index(i)[0]].name
    return Layout(sid, site, files, f"{p.root}/sourcedata/phantom/{sid}_{ses}_phantom.json", bids)


def _layout_msseg2016(p: Profile, i: int) -> Layout:
    k, n = p.site_index(i)
    centre = p.sites[k].name  # Center_01 ...
    patient = f"Patient_{n:02d}"
    d = f"{p.root}/{centre}/{patient}"
    pre = f"{d}/Preprocessed_Data"
    files = {
        "FLAIR": f"{pre}/FLAIR_preprocessed.nii.gz",
        "T1": f"{pre}/T1_preprocessed.nii.gz",
        "T1c": f"{pre}/GADO_preprocessed.nii.gz",
        "T2": f"{pre}/T2_preprocessed.nii.gz",
        "DP": f"{pre}/DP_preprocessed.nii.gz",
        "label": f"{d}/Masks/Consensus.nii.gz",
        "brain_mask": f"{d}/Masks/Brain_Mask.nii.gz",
    }
    return Layout(f"{centre}_{patient}", centre, files, f"{d}/phantom.json")


_WMH_FIRST_ID = {"Utrecht": 0, "Singapore": 50, "GE3T": 100}


def _layout_wmh2017(p: Profile, i: int) -> Layout:
    k, n = p.site_index(i)
    site = p.sites[k].name
    sid = str(_WMH_FIRST_ID[site] + n - 1)
    d = f"{p.root}/{site}/{sid}"
    files = {"FLAIR": f"{d}/pre/FLAIR.nii.gz", "T1": f"{d}/pre/T1.nii.gz", "label": f"{d}/wmh.nii.gz"}
    return Layout(f"{site}_{sid}", site, files, f"{d}/phantom.json")


# ----------------------------------------------------------------------------------------------------------------
# The profiles
# ----------------------------------------------------------------------------------------------------------------
_GLIOMA_LABELS = {"glioma_necrosis": 1, "glioma_nonenh": 1, "glioma_oedema": 2, "glioma_et": 4}
_STROKE = ("stroke_hyperacute", "stroke_acute", "stroke_subacute", "stroke_chronic_core", "stroke_chronic_rim")


def _structural(t1: str = "mprage", t1c: str = "mprage", flair_acq: str = "2d", t1_acq: str = "3d") -> dict:
    return {
        "T1": (t1, t1_acq if t1 == "mprage" else "2d"),
        "T1c": (t1c, "3d" if t1c == "mprage" else "2d"),
        "T2": ("tse_t2", "2d"),
        "FLAIR": ("flair", flair_acq),
        "DP": ("pd", "2d"),
    }


PROFILES: dict[str, Profile] = {
    p.name: p
    for p in (
        Profile(
            name="brats2021",
            dataset="BraTS 2021 (RSNA-ASNR-MICCAI)",
            summary="glioma; T1, T1c, T2, FLAIR; labels 1 NCR, 2 ED, 4 ET",
            root="brats2021/RSNA_ASNR_MICCAI_BraTS2021_TrainingData",
            modalities=("T1", "T1c", "T2", "FLAIR"),
            extra=(),
            sites=(
                Site("site-1", _structural("mprage", "mprage")),
                Site("site-2", _structural("se_t1", "se_t1")),
                Site("site-3", _structural("se_t1", "mprage", flair_acq="3d")),
            ),
            labels=_GLIOMA_LABELS,
            label_names={1: "NCR (necrotic / non-enhancing tumour core)", 2: "ED (peritumoural oedema)", 4: "ET"},
            skull_stripped=True,
            planner=_plan_glioma,
            layout=_layout_brats2021,
            lesion_types=("glioma",),
        ),
        Profile(
            name="brats_mets",
            dataset="BraTS-METS 2023 (ASNR-MICCAI)",
            summary="brain metastases; t1n, t1c, t2w, t2f; labels 1 NETC, 2 SNFH, 3 ET",
            root="brats_mets/ASNR-MICCAI-BraTS2023-MET-Challenge-TrainingData",
            modalities=("T1", "T1c", "T2", "FLAIR"),
            extra=(),
            sites=(Site("site-1", _structural()), Site("site-2", _structural(flair_acq="3d"))),
            labels={"met_necrosis": 1, "met_oedema": 2, "met_et": 3},
            label_names={1: "NETC (non-enhancing tumour core)", 2: "SNFH (FLAIR hyperintensity)", 3: "ET"},
            skull_stripped=True,
            planner=_plan_mets,
            layout=_layout_brats_mets,
            lesion_types=("metastasis",),
        ),
        Profile(
            name="atlas2",
            dataset="ATLAS v2.0 (BIDS)",
            summary="chronic stroke; T1w only; lesion mask 1",
            root="atlas2/ATLAS_2/Training",
            modalities=("T1",),
            extra=(),
            sites=tuple(Site(f"R{k:03d}", {"T1": ("mprage", "3d")}) for k in (1, 2, 3)),
            labels={"stroke_chronic_core": 1, "stroke_chronic_rim": 1},
            label_names={1: "lesion"},
            skull_stripped=False,
            planner=_plan_atlas,
            layout=_layout_atlas2,
            lesion_types=("stroke_chronic",),
            sform_code=4,
        ),
        Profile(
            name="isles2022",
            dataset="ISLES 2022 (BIDS)",
            summary="acute/subacute stroke; DWI (b1000), ADC, FLAIR on its own grid; mask 1",
            root="isles2022/ISLES-2022",
            modalities=("DWI", "ADC", "FLAIR"),
            extra=(),
            sites=tuple(
                Site(f"center-{k}", {"DWI": ("dwi", "dwi"), "FLAIR": ("flair", "2d" if k != 2 else "3d")})
                for k in (1, 2, 3)
            ),
            labels={c: 1 for c in _STROKE[:3]},
            label_names={1: "ischaemic stroke lesion"},
            skull_stripped=True,
            planner=_plan_isles,
            layout=_layout_isles2022,
            lesion_types=("stroke_hyperacute", "stroke_acute", "stroke_subacute"),
            native_dwi_grid=True,
        ),
        Profile(
            name="msseg2016",
            dataset="MSSEG 2016 (MICCAI MS lesion challenge)",
            summary="multiple sclerosis; 3D FLAIR, 3D T1, GADO, T2, DP; consensus mask 1",
            root="msseg2016/Training",
            modalities=("T1", "T1c", "T2", "FLAIR"),
            extra=("DP",),
            sites=tuple(Site(c, _structural(flair_acq="3d")) for c in ("Center_01", "Center_07", "Center_08")),
            labels={"ms_chronic": 1, "ms_active": 1, "ms_blackhole": 1},
            label_names={1: "MS lesion"},
            skull_stripped=True,
            planner=_plan_ms,
            layout=_layout_msseg2016,
            lesion_types=("ms",),
        ),
        Profile(
            name="wmh2017",
            dataset="MICCAI WMH Segmentation Challenge 2017",
            summary="white-matter hyperintensities; FLAIR + T1 (in FLAIR space); 1 WMH, 2 other pathology",
            root="wmh2017",
            modalities=("T1", "FLAIR"),
            extra=(),
            sites=tuple(
                Site(s, {"T1": ("mprage", "2d"), "FLAIR": ("flair", "2d")}) for s in ("Utrecht", "Singapore", "GE3T")
            ),
            labels={"wmh": 1, "stroke_chronic_core": 2, "stroke_chronic_rim": 2},
            label_names={1: "white-matter hyperintensities", 2: "other pathology (ignored in evaluation)"},
            skull_stripped=False,
            planner=_plan_wmh,
            layout=_layout_wmh2017,
            lesion_types=("wmh",),
        ),
    )
}


def get_profile(name: str) -> Profile:
    if name not in PROFILES:
        raise ValueError(f"unknown profile {name!r}; expected one of {', '.join(PROFILES)}")
    return PROFILES[name]


# ----------------------------------------------------------------------------------------------------------------
# Writers
# ----------------------------------------------------------------------------------------------------------------
def save_nifti(path: Path, data: np.ndarray, affine: np.ndarray, sform_code: int = 1) -> None:
    """float32 images / uint8 labels with RAS affine in both qform and sform, mm units."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(data, affine)
    img.header.set_data_dtype(data.dtype)
    img.header.set_xyzt_units("mm")
    img.set_qform(affine, code=sform_code)
    img.set_sform(affine, code=sform_code)
    nib.save(img, str(path))


def write_json(path: Path, obj: object) -> None:
    save_json(obj, path)


def bids_sidecar(protocol: dict, modality: str) -> dict:
    """The acquisition fields a BIDS JSON sidecar carries (times in seconds)."""
    if modality == "ADC":
        return {"Modality": "MR", "Units": "10^-6 mm^2/s", "GeneratedBy": "MoME phantoms (synthetic, no patient data)"}
    out = {
        "Modality": "MR",
        "MagneticFieldStrength": protocol.get("field_strength_T", 3.0),
        "RepetitionTime": round(protocol["TR"] / 1000.0, 4),
        "EchoTime": round(protocol["TE"] / 1000.0, 4),
        "SliceThickness": protocol["slice_mm"],
        "MRAcquisitionType": "3D" if protocol["acquisition"] == "3d" else "2D",
        "GeneratedBy": "MoME phantoms (synthetic, no patient data)",
    }
    if "TI" in protocol:
        out["InversionTime"] = round(protocol["TI"] / 1000.0, 4)
    if modality == "DWI":
        out["bValue"] = protocol.get("b", 1000)
    return out


def write_static(profile: Profile, out: Path, entries: list[dict]) -> list[str]:
    """Dataset-level files of the imitated release (BIDS descriptions, participants); returns their paths."""
    written: list[str] = []
    if profile.name == "isles2022":
        root = out / profile.root
        write_json(
            root / "dataset_description.json",
            {
                "Name": "ISLES 2022 layout - MoME synthetic phantom (no patient data)",
                "BIDSVersion": "1.7.0",
                "DatasetType": "raw",
                "License": "same as the MoME project",
                "GeneratedBy": [{"Name": "MoME phantoms", "Description": "physics-based synthetic brain MRI"}],
            },
        )
        lines = ["participant_id\tage\tsex"] + [f"{e['subject']}\t{e['age']}\t{e['sex']}" for e in entries]
        (root / "participants.tsv").write_text("\n".join(lines) + "\n")
        (root / "README").write_text(
            "Synthetic stroke phantoms in the ISLES 2022 layout (MoME). Images are generated from tissue maps with MR\n"
            "signal equations; no patient data. DWI, ADC and masks share one grid; FLAIR has its own.\n"
            "Generator parameters per subject: sourcedata/phantom/*_phantom.json.\n"
        )
        written += [f"{profile.root}/{n}" for n in ("dataset_description.json", "participants.tsv", "README")]
    elif profile.name == "atlas2":
        for site in sorted({e["site"] for e in entries}):
            rel = f"{profile.root}/{site}/dataset_description.json"
            write_json(
                out / rel,
                {
                    "Name": f"ATLAS R2.0 {site} layout - MoME synthetic phantom (no patient data)",
                    "BIDSVersion": "1.4.0",
                    "GeneratedBy": [{"Name": "MoME phantoms"}],
                },
            )
            written.append(rel)
    return written


def dwi_grid(full_shape: tuple[int, ...], full_affine: np.ndarray, crop: tuple[slice, ...]) -> tuple:
    """ISLES-like native DWI grid: 2 mm in-plane (or the grid spacing if coarser), slices twice the grid spacing,
    covering the brain box on a lattice offset from the FLAIR grid, as real, unregistered DWI is."""
    sp = float(full_affine[0, 0])
    spacing = np.array([max(2.0, sp), max(2.0, sp), 2.0 * sp])
    lo = full_affine[:3, :3] @ np.array([s.start for s in crop]) + full_affine[:3, 3]
    hi = full_affine[:3, :3] @ np.array([s.stop - 1 for s in crop]) + full_affine[:3, 3]
    start = lo + spacing / 2.0 - sp / 2.0
    shape = tuple(int(math.ceil((h - s) / d)) + 1 for s, h, d in zip(start, hi, spacing, strict=True))
    affine = np.diag([*spacing, 1.0])
    affine[:3, 3] = start
    return shape, affine


def write_subject(subject, out: Path) -> dict:
    """Write one :class:`~phantoms.subject.Subject` in its profile's layout; returns its manifest entry."""
    prof: Profile = subject.profile
    lay = prof.layout(prof, subject.index)
    anat = subject.anatomy
    for key, rel in lay.files.items():
        if key == "label":
            data = subject.label
        elif key == "brain_mask":
            data = subject.brain.astype(np.uint8)
        else:
            data = subject.images[key]
        if key in subject.grids:
            affine = subject.grids[key][1]
        else:
            data, affine = anat.to_full(data), anat.full_affine
        save_nifti(out / rel, data, affine, prof.sform_code)
    for modality, rel in lay.bids_json.items():
        write_json(out / rel, bids_sidecar(subject.protocols[modality], modality))
    write_json(out / lay.sidecar, subject.meta)
    demo = subject.meta.get("demographics", {})
    return {
        "subject": lay.subject,
        "index": subject.index,
        "site": lay.site,
        "images": {m: lay.files[m] for m in prof.modalities},
        "extra_images": {k: v for k, v in lay.files.items() if k not in prof.modalities and k != "label"},
        "label": lay.files["label"],
        "lesion_type": subject.lesion_type,
        "sidecar": lay.sidecar,
        "age": demo.get("age"),
        "sex": demo.get("sex"),
    }
