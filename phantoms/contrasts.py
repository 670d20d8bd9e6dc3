"""MR signal equations (§2.4): tissue parameters + sequence protocol -> signal, per compartment.

Partial volume is handled by the caller as a sum of compartment signals weighted by fraction (never by averaging
parameters first). Every function is vectorised over NumPy arrays of T1/T2/PD/ADC.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping

import numpy as np

__all__ = ["gd_relaxation", "ratio", "sequence_signal"]

_T1_GRID = np.exp(np.linspace(np.log(50.0), np.log(8000.0), 1024))


@functools.lru_cache(maxsize=64)
def _mprage_curve(tr: float, ti: float, flip_deg: float, tau: float, n: int) -> np.ndarray:
    """Steady-state MPRAGE longitudinal factor at the centre readout pulse, on ``_T1_GRID``.

    Bloch recursion: invert; recover for t0 = TI - (N/2) tau; N pulses of flip alpha spaced tau (Mz <- Mz cos a, then
    relax for tau); signal = Mz sin a at the centre pulse; recover for the rest of TR; iterate to steady state.
    Evaluated once per protocol on a T1 grid and interpolated, so each voxel costs one ``np.interp``.
    """
    t1 = _T1_GRID
    a = np.deg2rad(flip_deg)
    n = int(n)
    t0 = max(ti - (n / 2.0) * tau, 1.0)
    trec = max(tr - t0 - n * tau, 0.0)
    e_tau = np.exp(-tau / t1)
    mz = np.ones_like(t1)
    signal = np.zeros_like(t1)
    for _ in range(30):
        mz = -mz
        mz = 1.0 - (1.0 - mz) * np.exp(-t0 / t1)
        for k in range(n):
            if k == n // 2:
                signal = mz * np.sin(a)
            mz = mz * np.cos(a)
            mz = 1.0 - (1.0 - mz) * e_tau
        mz = 1.0 - (1.0 - mz) * np.exp(-trec / t1)
    return signal


def gd_relaxation(
    t1: np.ndarray | float, t2: np.ndarray | float, conc: np.ndarray | float, r1: float, r2_over_r1: float = 1.2
) -> tuple[np.ndarray, np.ndarray]:
    """T1, T2 after gadolinium: 1/T1' = 1/T1 + r1 C, 1/T2' = 1/T2 + r2 C (r in L/mmol/s, C in mM, T in ms)."""
    r1_ms = r1 / 1000.0
    t1p = 1.0 / (1.0 / np.asarray(t1) + r1_ms * np.asarray(conc))
    t2p = 1.0 / (1.0 / np.asarray(t2) + r2_over_r1 * r1_ms * np.asarray(conc))
    return t1p, t2p


def sequence_signal(protocol: Mapping, pd, t1, t2, adc=None, conc=None) -> np.ndarray:
    """Signal of a compartment with parameters (PD, T1, T2, ADC, C_Gd) for one protocol.

    ``protocol["sequence"]`` is one of ``mprage``, ``se_t1``, ``tse_t2``, ``pd``, ``flair``, ``dwi`` (b1000 trace)
    or ``b0``; ``protocol["gd"]`` applies the contrast agent (T1c). DWI is S0 exp(-b ADC) with S0 the spin echo at
    the DWI TR/TE, so T2 shine-through comes out of the physics.
    """
    seq = protocol["sequence"]
    pd = np.asarray(pd, dtype=np.float64)
    t1 = np.asarray(t1, dtype=np.float64)
    t2 = np.asarray(t2, dtype=np.float64)
    if protocol.get("gd") and conc is not None:
        t1, t2 = gd_relaxation(t1, t2, conc, protocol["r1"], protocol.get("r2_over_r1", 1.2))
    te = float(protocol["TE"])
    e2 = np.exp(-te / t2)
    if seq == "mprage":
        curve = _mprage_curve(
            float(protocol["TR"]), float(protocol["TI"]), float(protocol["flip"]), float(protocol["tau"]),
            int(protocol["N"]),
        )  # fmt: skip
        return pd * np.interp(np.log(t1), np.log(_T1_GRID), curve) * e2
    e1 = np.exp(-float(protocol["TR"]) / t1)
    if seq in ("se_t1", "tse_t2", "pd", "b0"):
        return pd * (1.0 - e1) * e2
    if seq == "flair":
        return pd * np.abs(1.0 - 2.0 * np.exp(-float(protocol["TI"]) / t1) + e1) * e2
    if seq == "dwi":
        b = float(protocol.get("b", 1000.0)) / 1000.0  # ADC in 1e-3 mm^2/s
        return pd * (1.0 - e1) * e2 * np.exp(-b * np.asarray(adc, dtype=np.float64))
    raise ValueError(f"unknown sequence {seq!r}")


def ratio(protocol: Mapping, params: Mapping[str, float], reference: Mapping[str, float]) -> float:
    """Signal of compartment ``params`` relative to ``reference`` (NAWM) for one protocol; ADC maps give ADC ratios."""
    if protocol["sequence"] == "adc":
        return float(params["ADC"]) / float(reference["ADC"])

    def s(p: Mapping[str, float]) -> float:
        return float(sequence_signal(protocol, p["PD"], p["T1"], p["T2"], p.get("ADC", 0.0), p.get("CGd", 0.0)))

    return s(params) / s(reference)
