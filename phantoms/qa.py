"""Phantom QA: do the images show the contrasts the design promises, and do they look right?

Three layers:

* :func:`table_check` - physics: the signal equations with default parameters at the §2.5 reference protocols
  reproduce the §2.5 target table (tolerance ``QA_TOLERANCE["table"]``: 3 % or 0.03, i.e. rounding; worst 0.024).
* :func:`ratio_checks` - one generated subject, every compartment x sequence: the median of the noiseless,
  bias-free, unblurred signal over the compartment's *pure* voxels (fraction > 0.98 if >= 10 such voxels, else
  > 0.9 if >= 5, else > 0.7 if >= 3, else "skipped"), divided by the median over NAWM (WM > 0.98, no lesion within
  3 voxels, outside any WMH penumbra). Two targets, both must hold:

  1. *design*: the same voxels' fractions with the design's default parameters at the subject's site protocol
     (for pure voxels this is the §2.5 ratio re-evaluated at that TR/TE/TI; the printed §2.5 value is reported
     next to it). Pass: |measured - target| <= max(25 % of target, 0.06, 5 sd), sd = spread of that ratio over 256
     parameter sets drawn by the generator's own sampler (``jitter_spread``). Why not the raw table with a fixed
     tolerance: sites draw TR/TE/TI from the §2.4 ranges, which alone moves CSF on T2w from 2.0 to 5.5 x NAWM, and
     the per-subject jitter (shared T1/T2 factors up to 8 %, 2-5 % per compartment truncated at 2 sd, C_Gd 15 %)
     moves ratios on steep parts of their equations (long-T1 necrosis near the FLAIR null, enhancement vs C_Gd,
     T2w at long TE) by up to 30 %. Measured on 108 subjects (6 seeds x 6 profiles x 3, 2 mm): 0 failures; median
     deviation 5 %, 90th percentile 13 %, 99th 27 %; a parameter-level Monte Carlo of 171 000 ratios peaked at
     0.9 of the allowed deviation.
  2. *drawn*: an independent re-derivation from the parameters and texture this subject actually drew, within
     2 % or 0.01 - it checks the partial-volume mixing itself.

* :func:`qualitative_checks` - on the final images (bias, noise, blur included): CSF dark on FLAIR (< 0.35 x NAWM),
  acute stroke bright on DWI (> 1.2) and, before the subacute stage, dark on ADC (< 0.8) vs the contralateral
  mirror region (a lesion thinner than the DWI slices is judged on the noiseless signal), enhancing tumour bright
  on T1c (> 1.3 x NAWM), labels non-empty, noise sigma within 20 % of the requested value.

:func:`montage` draws three orthogonal slices through the main label for every written sequence with the label
contours. ``python -m phantoms.qa DIR`` re-creates every subject of a generated tree in memory from its
manifest (same seed: same subject; it verifies the files match), runs the checks and writes ``DIR/qa``.
"""

from __future__ import annotations

import argparse
import functools
import json
import sys
from collections.abc import Sequence
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from phantoms import contrasts
from phantoms.params import (
    FLUIDS,
    LESIONS,
    QA_TOLERANCE,
    REFERENCE_PROTOCOLS,
    TARGET_RATIOS,
    TISSUES,
)

__all__ = ["check_subject", "main", "montage", "qualitative_checks", "ratio_checks", "table_check"]

MIN_PURE = 3
PURE = 0.9
#: Purity tiers: the first (fraction threshold, minimum voxels) a compartment satisfies is used.
PURITY_TIERS = ((0.98, 10), (0.9, 5), (0.7, MIN_PURE))
_DEFAULTS = {
    name: {k: v[0] for k, v in table.items()} | {"CGd": table.get("CGd", (0.0,))[0]}
    for name, table in {**TISSUES, **LESIONS}.items()
}
_LABEL_COLOURS = {1: "#ff3b30", 2: "#34c759", 3: "#0a84ff", 4: "#0a84ff"}


def _within(measured: float, target: float, tol: dict[str, float], spread: float = 0.0) -> bool:
    return abs(measured - target) <= allowed(target, tol, spread)


def allowed(target: float, tol: dict[str, float], spread: float = 0.0) -> float:
    """Allowed |measured - target|: max(rel x target, abs, k x the spread the parameter jitter implies)."""
    return max(tol["rel"] * abs(target), tol["abs"], tol.get("spread_k", 0.0) * spread)


def column(protocol: dict, modality: str) -> str | None:
    """The §2.5 table column of a modality's protocol (None: no target, e.g. the PD-weighted DP)."""
    seq = protocol["sequence"]
    if modality in ("T1", "T1c"):
        return f"{modality}_{'mprage' if seq == 'mprage' else 'se'}"
    return {"T2": "T2", "FLAIR": "FLAIR", "DWI": "DWI", "b0": "b0", "ADC": "ADC"}.get(modality)


def _reference_protocol(col: str) -> dict:
    ref = REFERENCE_PROTOCOLS
    seq = {"T1_mprage": "mprage", "T1c_mprage": "mprage", "T1_se": "se_t1", "T1c_se": "se_t1", "T2": "tse_t2"}
    seq |= {"FLAIR": "flair", "DWI": "dwi", "b0": "dwi", "ADC": "adc"}
    name = seq[col]
    p = {"sequence": "b0" if col == "b0" else name, **ref.get(name, {})}
    if col.startswith("T1c"):
        p.update(gd=True, **ref["gd"])
    return p


def table_check(tolerance: dict[str, float] | None = None) -> dict:
    """Default parameters at the reference protocols vs the printed §2.5 table."""
    tol = tolerance or QA_TOLERANCE["table"]
    rows, worst = [], 0.0
    for comp, cols in TARGET_RATIOS.items():
        for col, target in cols.items():
            value = contrasts.ratio(_reference_protocol(col), _DEFAULTS[comp], _DEFAULTS["WM"])
            ok = _within(value, target, tol)
            worst = max(worst, abs(value - target))
            rows.append({"compartment": comp, "column": col, "computed": round(value, 3), "table": target, "ok": ok})
    return {"tolerance": tol, "worst_abs_error": round(worst, 4), "passed": all(r["ok"] for r in rows), "rows": rows}


@functools.lru_cache(maxsize=1)
def _jitter_draws(n: int = 256) -> dict[str, dict[str, np.ndarray]]:
    """``n`` parameter sets drawn exactly as the generator draws them (fixed seed), per compartment as arrays."""
    from phantoms.subject import _TABLES, _sample_params

    rng = np.random.default_rng(20261128)
    names = list(_TABLES)
    draws = [_sample_params(names, rng)[0] for _ in range(n)]
    return {c: {k: np.array([d[c][k] for d in draws]) for k in draws[0][c]} for c in names}


def jitter_spread(protocol: dict, comp: str) -> float:
    """Standard deviation of the ratio comp / NAWM over the generator's own parameter draws (256, fixed seed).

    Most ratios move < 10 %; a few sit on a steep or folded part of their signal equation (long-T1 necrosis near
    the FLAIR null, enhancement on T1c vs C_Gd, CSF at the FLAIR null) and legitimately vary more; sampling rather
    than linearising catches the folded cases too.
    """
    d = _jitter_draws()
    if protocol["sequence"] == "adc":
        return float(np.std(d[comp]["ADC"] / d["WM"]["ADC"]))

    def sig(c: str) -> np.ndarray:
        p = d[c]
        return contrasts.sequence_signal(protocol, p["PD"], p["T1"], p["T2"], p["ADC"], p["CGd"])

    return float(np.std(sig(comp) / sig("WM")))


def nawm_mask(subject) -> np.ndarray:
    """Normal-appearing WM: pure WM, >= 3 voxels from any lesion, outside WMH penumbrae."""
    lesion = np.zeros(subject.anatomy.shape, bool)
    for g in subject.groups:
        for name in g.compartments:
            lesion |= subject.fractions[name] > 0.01
        if g.t2_modifier is not None:
            lesion |= g.t2_modifier > 1.002
    near = ndimage.binary_dilation(lesion, iterations=3)
    purer = (subject.fractions["WM"] > PURITY_TIERS[0][0]) & ~near
    return purer if purer.sum() >= 50 else (subject.fractions["WM"] > PURE) & ~near


def _model_signal(subject, protocol: dict, mask: np.ndarray, params: dict, exact: bool) -> np.ndarray:
    """Signal in ``mask``: the voxels' fractions times each compartment's signal for ``params``.

    ``exact`` adds the subject's texture and WMH penumbra, i.e. re-derives the generator's image independently.
    """
    total = np.zeros(int(mask.sum()), dtype=np.float64)
    for name, frac in subject.fractions.items():
        f = frac[mask]
        if not f.any():
            continue
        d = params[name]
        pd, t1, t2 = d["PD"], d["T1"], d["T2"]
        if exact:
            if name not in FLUIDS:
                pd, t1 = pd * subject.texture["PD"][mask], t1 * subject.texture["T1"][mask]
            if subject.t2_modifier is not None and name in ("GM", "WM"):
                t2 = t2 * subject.t2_modifier[mask]
        total += f * contrasts.sequence_signal(protocol, pd, t1, t2, d["ADC"], d["CGd"])
    return total


def _mixture_ratio(subject, modality: str, sel: np.ndarray, nawm: np.ndarray, params: dict | None = None) -> float:
    """Median ratio vs NAWM on exactly these voxels for ``params`` (None: design defaults, no texture; else the
    subject's drawn parameters with its texture)."""
    exact = params is not None
    params = params or _DEFAULTS
    if modality == "ADC":
        b = float(subject.protocols["DWI"].get("b", 1000.0)) / 1000.0

        def adc(mask: np.ndarray) -> float:
            s0 = _model_signal(subject, subject.protocols["b0"], mask, params, exact)
            sb = _model_signal(subject, subject.protocols["DWI"], mask, params, exact)
            return float(np.median(np.log(s0 / sb) / b))

        return adc(sel) / adc(nawm)
    protocol = subject.protocols[modality]
    num = np.median(_model_signal(subject, protocol, sel, params, exact))
    return float(num) / float(np.median(_model_signal(subject, protocol, nawm, params, exact)))


def _clean_signal(subject, modality: str) -> np.ndarray:
    if modality == "ADC":
        s0, sb = subject.clean["b0"], subject.clean["DWI"]
        b = float(subject.protocols["DWI"].get("b", 1000.0)) / 1000.0
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.where((s0 > 0) & (sb > 0), np.log(s0 / sb) / b, 0.0)
    return subject.clean[modality]


def ratio_checks(subject, tolerance: dict[str, float] | None = None) -> list[dict]:
    """Median ratio vs NAWM per compartment and sequence on pure voxels of the clean signal (see module doc)."""
    tol = tolerance or QA_TOLERANCE["subject"]
    tol_drawn = QA_TOLERANCE["drawn"]
    nawm = nawm_mask(subject)
    out = []
    for modality, protocol in subject.protocols.items():
        col = column(protocol, modality)
        signal = _clean_signal(subject, modality)
        ref = float(np.median(signal[nawm]))
        for comp, frac in subject.fractions.items():
            if comp == "WM" or not (frac > 0.5).any():
                continue
            purity, pure = None, None
            for thr, min_n in PURITY_TIERS:
                if (frac > thr).sum() >= min_n:
                    purity, pure = thr, frac > thr
                    break
            target = contrasts.ratio(protocol, _DEFAULTS[comp], _DEFAULTS["WM"])
            spread = jitter_spread(protocol, comp)
            row = {
                "modality": modality,
                "column": col,
                "compartment": comp,
                "purity": purity,
                "n_voxels": 0 if pure is None else int(pure.sum()),
                "target_table": TARGET_RATIOS.get(comp, {}).get(col) if col else None,
                "target_protocol": round(target, 3),
            }
            if pure is None:
                row.update(target_voxels=None, allowed_abs_error=None, measured=None, status="skipped")
            else:
                expected = _mixture_ratio(subject, modality, pure, nawm)
                drawn = _mixture_ratio(subject, modality, pure, nawm, subject.params)
                measured = float(np.median(signal[pure])) / ref
                ok = _within(measured, expected, tol, spread) and _within(measured, drawn, tol_drawn)
                row.update(
                    target_voxels=round(expected, 3),
                    allowed_abs_error=round(allowed(expected, tol, spread), 3),
                    target_drawn=round(drawn, 3),
                    measured=round(measured, 3),
                    status="pass" if ok else "fail",
                )
            out.append(row)
    return out


def _ratio_native(subject, modality: str, mask_w: np.ndarray, nawm_w: np.ndarray, image: np.ndarray) -> float | None:
    mask = subject.to_native(mask_w.astype(np.float32), modality) > 0.5
    nawm = subject.to_native(nawm_w.astype(np.float32), modality) > 0.5
    if mask.sum() < MIN_PURE or nawm.sum() < MIN_PURE:
        return None
    return float(np.median(image[mask])) / max(float(np.median(image[nawm])), 1e-6)


def _mirror(subject, mask: np.ndarray) -> np.ndarray:
    """``mask`` reflected across the MNI midline (x -> -x): the contralateral homologous region."""
    aff = subject.anatomy.affine
    x_mm = aff[0, 3] + aff[0, 0] * np.arange(mask.shape[0])
    src = np.round((-x_mm - aff[0, 3]) / aff[0, 0]).astype(int)
    valid = (src >= 0) & (src < mask.shape[0])
    out = np.zeros_like(mask)
    out[valid] = mask[src[valid]]
    return out


def qualitative_checks(subject) -> dict:
    """Radiological sanity on the final images (bias, noise and slice blur included)."""
    fr, imgs = subject.fractions, subject.images
    nawm = nawm_mask(subject)
    checks: dict[str, dict] = {}
    vols = {int(v): int((subject.label == v).sum()) for v in np.unique(subject.label) if v}
    checks["labels_non_empty"] = {"voxels_per_label": vols, "ok": bool(vols)}
    if "FLAIR" in imgs:
        r = _ratio_native(subject, "FLAIR", (fr["CSF"] > PURE) & (subject.anatomy.vent > 0.5), nawm, imgs["FLAIR"])
        checks["csf_dark_on_flair"] = {"csf_over_nawm": r, "limit": "< 0.35", "ok": r is not None and r < 0.35}
    stroke = [n for n in fr if n in ("stroke_hyperacute", "stroke_acute", "stroke_subacute")]
    if stroke and "DWI" in imgs:
        # As a radiologist reads rDWI / rADC: infarct core vs the contralateral homologous region (same tissue
        # mix, similar coil sensitivity); NAWM if the mirror falls into a lesion or outside the brain.
        lesion_any = sum(fr[n] for g in subject.groups for n in g.compartments) > 0.01
        dwi = adc = None
        where = "final images (native DWI grid)"
        r_eq = (3.0 * float(fr[stroke[0]].sum()) * subject.spacing**3 / (4.0 * np.pi)) ** (1.0 / 3.0)
        resolvable = r_eq >= subject.protocols["DWI"]["slice_mm"]  # else blurred into its neighbours
        for thr in (0.9, 0.7) if resolvable else ():  # the infarct core, free of CSF partial volume
            core = fr[stroke[0]] > thr
            if (subject.to_native(core.astype(np.float32), "DWI") > 0.5).sum() >= MIN_PURE:
                ref = _mirror(subject, core) & ~lesion_any & (fr["GM"] + fr["WM"] > 0.5)
                ref = ref if ref.sum() >= core.sum() // 2 else nawm
                dwi = _ratio_native(subject, "DWI", core, ref, imgs["DWI"])
                adc = _ratio_native(subject, "ADC", core, ref, imgs["ADC"])
                break
        if dwi is None and (fr[stroke[0]] > 0.7).sum() >= MIN_PURE:  # a lacune below the DWI resolution
            core = fr[stroke[0]] > 0.7
            where = "noiseless signal (lesion radius below the DWI slice thickness)"
            dwi = float(np.median(subject.clean["DWI"][core]) / np.median(subject.clean["DWI"][nawm]))
            adc_map = _clean_signal(subject, "ADC")
            adc = float(np.median(adc_map[core]) / np.median(adc_map[nawm]))
        need_dark_adc = stroke[0] != "stroke_subacute"  # ADC pseudo-normalises by the subacute stage
        ok = dwi is not None and dwi > 1.2 and (not need_dark_adc or (adc is not None and adc < 0.8))
        checks["stroke_bright_dwi_dark_adc"] = {
            "stage": stroke[0], "dwi_ratio": dwi, "adc_ratio": adc, "reference": "contralateral mirror region",
            "adc_must_be_dark": need_dark_adc, "measured_on": where, "ok": ok,
        }  # fmt: skip
    et = [n for n in fr if n in ("glioma_et", "met_et")]
    if et and "T1c" in imgs:
        r = _ratio_native(subject, "T1c", fr[et[0]] > 0.7, nawm, imgs["T1c"])
        checks["enhancing_bright_on_t1c"] = {"et_over_nawm": r, "limit": "> 1.3", "ok": r is not None and r > 1.3}
    noise = {}
    for m, img in imgs.items():
        if m not in subject.noiseless or m not in subject.meta["acquisition"]:
            continue
        sigma = subject.meta["acquisition"][m]["noise_sigma"]
        clean = subject.noiseless[m]
        region = (subject.to_native(nawm.astype(np.float32), m) > 0.5) & (clean > 8 * sigma)
        if region.sum() < 50:
            continue
        measured = float(np.std(img[region] - clean[region]))
        noise[m] = {"requested": sigma, "measured": round(measured, 4), "ok": abs(measured / sigma - 1.0) < 0.2}
    checks["noise_level"] = {"per_modality": noise, "ok": all(v["ok"] for v in noise.values())}
    return checks


def check_subject(subject) -> dict:
    """All checks of one subject, JSON-ready, with an overall ``passed``."""
    ratios = ratio_checks(subject)
    qual = qualitative_checks(subject)
    failed = [r for r in ratios if r["status"] == "fail"]
    return {
        "profile": subject.profile.name,
        "subject": subject.subject_id,
        "lesion_type": subject.lesion_type,
        "ratios": ratios,
        "qualitative": qual,
        "summary": {
            "ratios_checked": sum(r["status"] != "skipped" for r in ratios),
            "ratios_failed": len(failed),
            "ratios_skipped": sum(r["status"] == "skipped" for r in ratios),
            "qualitative_failed": [k for k, v in qual.items() if not v["ok"]],
        },
        "passed": not failed and all(v["ok"] for v in qual.values()),
    }


# ----------------------------------------------------------------------------------------------------------------
# Montage
# ----------------------------------------------------------------------------------------------------------------
def _lesion_centre_world(label: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """World position where the main label (its lowest value) is most visible: per axis, the slice holding most of it.

    For one tumour that is its centre; for scattered MS or WMH lesions the slices that show the most lesions.
    """
    values = [v for v in np.unique(label) if v]
    if not values:
        return affine[:3, :3] @ ((np.array(label.shape) - 1) / 2.0) + affine[:3, 3]
    mask = label == values[0]
    ijk = [int(np.argmax(mask.sum(axis=tuple(j for j in range(3) if j != i)))) for i in range(3)]
    return affine[:3, :3] @ np.array(ijk, dtype=float) + affine[:3, 3]


def montage(
    images: dict[str, Path], label: Path | None, out_png: Path, title: str = "", label_colours: dict | None = None
) -> Path:
    """PNG: one row per sequence, axial / coronal / sagittal slices through the largest lesion, label contours."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from scripts.data.geometry import resample

    colours = label_colours or _LABEL_COLOURS
    lab_img = nib.load(str(label)) if label is not None else None
    lab = np.asarray(lab_img.dataobj).astype(np.uint8) if lab_img is not None else None
    centre = _lesion_centre_world(lab, lab_img.affine) if lab is not None else None
    fig, axes = plt.subplots(len(images), 3, figsize=(9.0, 3.0 * len(images)), squeeze=False)
    for row, (name, path) in enumerate(images.items()):
        img = nib.load(str(path))
        data = np.asarray(img.dataobj, dtype=np.float32)
        aff = img.affine
        zooms = np.abs(np.diag(aff)[:3])
        c_world = centre if centre is not None else aff[:3, :3] @ ((np.array(data.shape) - 1) / 2.0) + aff[:3, 3]
        ijk = np.clip(
            np.round(np.linalg.solve(aff[:3, :3], c_world - aff[:3, 3])).astype(int), 0, np.array(data.shape) - 1
        )
        lab_here = None
        if lab is not None:
            same = lab.shape == data.shape and np.allclose(lab_img.affine, aff)
            lab_here = lab if same else resample(lab, lab_img.affine, aff, data.shape, order=0, dtype=None)
        nz = data[data > 0]
        lo, hi = np.percentile(nz, [1, 99.5]) if nz.size else (0.0, 1.0)
        views = [
            ("axial", data[:, :, ijk[2]], None if lab_here is None else lab_here[:, :, ijk[2]], zooms[1] / zooms[0]),
            ("coronal", data[:, ijk[1], :], None if lab_here is None else lab_here[:, ijk[1], :], zooms[2] / zooms[0]),
            ("sagittal", data[ijk[0], :, :], None if lab_here is None else lab_here[ijk[0], :, :], zooms[2] / zooms[1]),
        ]
        for col, (view, sl, lsl, aspect) in enumerate(views):
            ax = axes[row, col]
            ax.imshow(sl.T, cmap="gray", origin="lower", vmin=lo, vmax=hi, aspect=aspect, interpolation="nearest")
            if lsl is not None:
                for v in sorted((int(v) for v in np.unique(lsl) if v), reverse=True):
                    ax.contour((lsl == v).T.astype(float), levels=[0.5], colors=colours.get(v, "yellow"),
                               linewidths=0.9 if v == 1 else 0.6, origin="lower")  # fmt: skip
            ax.set_xticks([])
            ax.set_yticks([])
            if col == 0:
                ax.set_ylabel(name, fontsize=11)
            if row == 0:
                ax.set_title(view, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    out_png.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out_png, dpi=90)
    plt.close(fig)
    return out_png


def profile_montage(root: Path, profile: str, entry: dict, out_png: Path) -> Path:
    """Montage of one manifest subject (paths relative to ``root``)."""
    from phantoms.profiles import get_profile

    prof = get_profile(profile)
    images = {m: root / p for m, p in entry["images"].items()}
    images |= {m: root / p for m, p in entry.get("extra_images", {}).items() if m != "brain_mask"}
    legend = ", ".join(f"{k}={v.split(' (')[0]}" for k, v in prof.label_names.items())
    title = f"{profile} - {entry['subject']} ({entry['lesion_type']}); contours: {legend}"
    return montage(images, root / entry["label"], out_png, title)


# ----------------------------------------------------------------------------------------------------------------
# CLI: python -m phantoms.qa DIR
# ----------------------------------------------------------------------------------------------------------------
def run_tree(root: Path, profiles: Sequence[str] | None = None, montages: bool = True) -> dict:
    """Regenerate every subject of a written tree in memory, check it and compare with the files on disk."""
    from phantoms.subject import synthesize

    manifest = json.loads((root / "phantom_manifest.json").read_text())
    report = {"root": str(root), "table_check": table_check(), "tolerance": QA_TOLERANCE, "subjects": []}
    report["table_check"].pop("rows")
    for name, prof in manifest["profiles"].items():
        if profiles and name not in profiles:
            continue
        for k, entry in enumerate(prof["subjects"]):
            subj = synthesize(name, entry["index"], manifest["spacing_mm"], manifest["seed"])
            res = check_subject(subj)
            first = next(iter(entry["images"]))
            on_disk = np.asarray(nib.load(str(root / entry["images"][first])).dataobj)
            mine = subj.images[first] if first in subj.grids else subj.anatomy.to_full(subj.images[first])
            res["matches_disk"] = bool(np.array_equal(on_disk, mine))
            res["passed"] = res["passed"] and res["matches_disk"]
            report["subjects"].append(res)
            if montages and k == 0:
                profile_montage(root, name, entry, root / "qa" / f"{name}_montage.png")
    report["passed"] = report["table_check"]["passed"] and all(s["passed"] for s in report["subjects"])
    return report


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m phantoms.qa",
        description="Check a phantom tree: contrast ratios, qualitative checks, montages (writes DIR/qa/).",
    )
    parser.add_argument("root", type=Path, help="output folder of python -m phantoms")
    parser.add_argument("--profiles", nargs="+", default=None, help="only these profiles")
    parser.add_argument("--no-montage", action="store_true", help="skip the PNG montages")
    args = parser.parse_args(argv)
    if not (args.root / "phantom_manifest.json").is_file():
        parser.error(f"{args.root} has no phantom_manifest.json (not a phantom tree)")
    from scripts.atomic import save_json

    report = run_tree(args.root, args.profiles, montages=not args.no_montage)
    save_json(report, args.root / "qa" / "qa_report.json")
    bad = [f"{s['profile']}/{s['subject']}" for s in report["subjects"] if not s["passed"]]
    print(
        f"QA {'passed' if report['passed'] else 'FAILED'}: {len(report['subjects'])} subjects; failing: {bad or 'none'}"
    )
    print(f"report: {args.root / 'qa' / 'qa_report.json'}")
    return 0 if report["passed"] else 1


if __name__ == "__main__":
    sys.exit(main())
