"""Pressure from the virial stress and its errors (paper Eqs. 5–9), plus a Wasserstein extra.

Stress comes in eV/Å³ as Voigt ``[xx, yy, zz, yz, xz, xy]`` with ASE's sign convention
(positive = tensile), so pressure is minus the mean of the normal components. The paper's
reference stress labels are DFT stresses, i.e. configurational (virial) only; the MLIP side must
be the same quantity. i-PI's ``pressure_md`` adds the kinetic term Σ m v vᵀ / (3V) (≈ N k T / V,
~0.3 GPa for 108 Cu atoms at 300 K); :func:`pressure_md_GPa` exists only to show and test that
difference, never to be compared with the reference labels.
"""

from __future__ import annotations

import numpy as np

from dynamat.units import AMU_A2_PER_FS2_TO_EV, EV_PER_A3_TO_GPA

__all__ = [
    "instantaneous_pressure_GPa",
    "pressure_GPa",
    "pressure_hist_edges",
    "pressure_hist_error",
    "pressure_hist_error_sensitivity",
    "pressure_histograms",
    "pressure_mae",
    "pressure_md_GPa",
    "pressure_wasserstein_GPa",
]


def _voigt(stress) -> np.ndarray:
    s = np.asarray(stress, dtype=float)
    if s.ndim == 1:
        s = s[None]
    if s.ndim != 2 or s.shape[1] != 6:
        raise ValueError(f"stress must be (M, 6) Voigt [xx yy zz yz xz xy] in eV/Å³, got {s.shape}")
    if not np.all(np.isfinite(s)):
        raise ValueError("stress contains non-finite values")
    return s


def pressure_GPa(stress_voigt, dims: int = 3) -> np.ndarray:
    """Configurational pressure per frame in GPa (paper Eq. 5).

    3D: P = −(σxx + σyy + σzz)/3; 2D slabs: P = −(σxx + σyy)/2 (in-plane only, the vacuum
    direction carries no stress). σ is the ASE-sign virial stress in eV/Å³; no kinetic term.
    """
    s = _voigt(stress_voigt)
    if dims == 3:
        p = -s[:, :3].mean(axis=1)
    elif dims == 2:
        p = -s[:, :2].mean(axis=1)
    else:
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    return p * EV_PER_A3_TO_GPA


def pressure_md_GPa(stress_voigt, velocities, masses, volumes, dims: int = 3) -> np.ndarray:
    """i-PI-style ``pressure_md`` in GPa: configurational plus kinetic, tr(Σ m v vᵀ)/(dims·V).

    For comparison and diagnostics only (see the module docstring). Velocities (M, N, 3) Å/fs,
    masses (N,) amu, volumes (M,) Å³. For 2D the kinetic trace is over x and y.
    """
    v = np.asarray(velocities, dtype=float)
    m = np.asarray(masses, dtype=float)
    vol = np.broadcast_to(np.asarray(volumes, dtype=float), (len(v),))
    if v.ndim != 3 or v.shape[2] != 3 or v.shape[1] != len(m):
        raise ValueError(f"velocities must be (M, {len(m)}, 3), got {v.shape}")
    k = dims if dims in (2, 3) else None
    if k is None:
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    kin = np.einsum("n,mnk->m", m, v[..., :k] ** 2) * AMU_A2_PER_FS2_TO_EV / (k * vol)
    return pressure_GPa(stress_voigt, dims) + kin * EV_PER_A3_TO_GPA


def instantaneous_pressure_GPa(stress_voigt, volumes_A3, n_atoms: int, temperature_K: float) -> np.ndarray:
    """Instantaneous pressure per frame in GPa of 3D frames whose velocities are not stored: configurational
    (Eq. 5) plus the kinetic term by equipartition, N k_B T / V.

    Its mean is the external pressure an NPT trajectory was held at (⟨P⟩ = P_ext in equilibrium), which an
    ASE, LAMMPS or VASP (``ISIF=3``) trajectory does not store. The configurational mean alone misses it by
    N k_B T / V (0.35 GPa for 32 Cu atoms at 300 K). Stress in eV/Å³ (ASE sign), volumes (M,) Å³.
    """
    from dynamat.units import KB_EV_PER_K

    vol = np.broadcast_to(np.asarray(volumes_A3, dtype=float), (len(_voigt(stress_voigt)),))
    if not (np.all(vol > 0) and n_atoms > 0 and temperature_K >= 0):
        raise ValueError("volumes, atom count and temperature must be positive")
    return pressure_GPa(stress_voigt) + n_atoms * KB_EV_PER_K * float(temperature_K) / vol * EV_PER_A3_TO_GPA


def _sample(p, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=float).reshape(-1)
    if p.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.all(np.isfinite(p)):
        raise ValueError(f"{name} contains non-finite values")
    return p


def pressure_mae(p_ref, p_mlip) -> float:
    """ΔP = |mean(P_ref) − mean(P_mlip)| in the units of the input (paper Eqs. 6–7).

    Each trajectory is averaged separately (frame counts may differ); frames are never paired,
    because the two runs are independent realisations and a frame-paired error would measure
    thermal noise, not model bias.
    """
    return abs(float(_sample(p_ref, "p_ref").mean()) - float(_sample(p_mlip, "p_mlip").mean()))


def _iqr(x: np.ndarray) -> float:
    q75, q25 = np.percentile(x, [75, 25])
    return float(q75 - q25)


def pressure_hist_edges(p_ref, p_mlip, *, min_bins: int = 10, max_bins: int = 200) -> np.ndarray:
    """Shared histogram edges for Eq. 9 (the paper does not state its rule; this is ours).

    The paper's words (Methods, Eq. 9): "we construct area-normalised reference and MLIP
    pressure histograms using shared bin edges. Given the histogram densities
    {h_k^REF, h_k^MLIP}, k = 1…K, ... Δ_k is the width of histogram bin k." Neither K nor the
    edges are given. Matbench-discovery uses 80 equal bins over the pooled range
    (:func:`dynamat.metrics.matbench.matbench_pressure_hist_error`); E_P changes with K by
    several points on the same samples (a counting-noise floor that grows with K), so report
    :func:`pressure_hist_error_sensitivity` beside it.

    Bin width: Freedman–Diaconis on the *reference* sample, h = 2·IQR_ref·n^(−1/3) with
    n = min(M_ref, M_mlip). Edges: uniform over the pooled range [min, max], with the bin count
    clipped to [min_bins, max_bins].

    Why the reference and not the pooled sample: the pooled IQR grows with the offset between
    the two distributions, so a worse model would get coarser bins and a smoother, more
    overlapping histogram — the error would be compressed exactly where it should be large.
    The reference width fixes the resolution to the physical fluctuation scale. n = the smaller
    sample keeps the sparser histogram from being dominated by counting noise. The cap bounds
    the cost when a model's pressure is far off (its samples are then disjoint from the
    reference anyway, and E_P ≈ 100 % for any bin width narrower than the gap); the floor avoids
    degenerate 1–3-bin histograms. If the reference has zero IQR, the pooled IQR is used; if all
    values are equal, one bin.
    """
    p_ref = _sample(p_ref, "p_ref")
    p_mlip = _sample(p_mlip, "p_mlip")
    lo = min(p_ref.min(), p_mlip.min())
    hi = max(p_ref.max(), p_mlip.max())
    if hi == lo:
        return np.array([lo - 0.5, lo + 0.5])
    iqr = _iqr(p_ref) or _iqr(np.concatenate([p_ref, p_mlip])) or (hi - lo) / min_bins
    n = min(len(p_ref), len(p_mlip))
    h = 2.0 * iqr * n ** (-1.0 / 3.0)
    k = int(np.clip(np.ceil((hi - lo) / h), min_bins, max_bins))
    return np.linspace(lo, hi, k + 1)


def _edges(p_ref: np.ndarray, p_mlip: np.ndarray, bins) -> np.ndarray:
    if bins is None:
        return pressure_hist_edges(p_ref, p_mlip)
    if np.ndim(bins) == 0:
        if int(bins) < 1:
            raise ValueError(f"bins must be positive, got {bins}")
        lo = min(p_ref.min(), p_mlip.min())
        hi = max(p_ref.max(), p_mlip.max())
        return np.linspace(lo, hi, int(bins) + 1) if hi > lo else np.array([lo - 0.5, lo + 0.5])
    edges = np.asarray(bins, dtype=float)
    if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
        raise ValueError("bin edges must be a strictly increasing 1-D array")
    return edges


def pressure_histograms(p_ref, p_mlip, bins=None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(edges, h_ref, h_mlip): area-normalised densities on shared edges.

    ``bins``: None (rule of :func:`pressure_hist_edges`), a bin count over the pooled range, or
    explicit edges. Densities are normalised by the full sample size, so samples outside
    explicit edges reduce the area below 1 instead of silently vanishing.
    """
    p_ref = _sample(p_ref, "p_ref")
    p_mlip = _sample(p_mlip, "p_mlip")
    edges = _edges(p_ref, p_mlip, bins)
    width = np.diff(edges)
    h_ref = np.histogram(p_ref, bins=edges)[0] / (len(p_ref) * width)
    h_mlip = np.histogram(p_mlip, bins=edges)[0] / (len(p_mlip) * width)
    return edges, h_ref, h_mlip


def pressure_hist_error(p_ref, p_mlip, bins=None) -> float:
    """E_P in percent (paper Eq. 9): non-overlap of area-normalised histograms on shared edges.

    ``100 · Σ|h_ref − h_mlip|Δ / (Σ h_ref Δ + Σ h_mlip Δ)``; the denominator is 2 when both
    histograms hold all their samples. 0 = identical histograms, 100 = no shared bin.
    ``bins``: None (rule of :func:`pressure_hist_edges`), a bin count over the pooled range, or
    explicit edges; samples outside explicit edges count as non-overlapping mass.
    """
    p_ref = _sample(p_ref, "p_ref")
    p_mlip = _sample(p_mlip, "p_mlip")
    edges = _edges(p_ref, p_mlip, bins)
    c_ref = np.histogram(p_ref, bins=edges)[0]
    c_mlip = np.histogram(p_mlip, bins=edges)[0]
    # h·Δ is the bin's probability mass, so the sums reduce to count fractions (exact zeros
    # for identical samples, no width round-off).
    frac_ref = c_ref / len(p_ref)
    frac_mlip = c_mlip / len(p_mlip)
    outside = (len(p_ref) - c_ref.sum()) / len(p_ref) + (len(p_mlip) - c_mlip.sum()) / len(p_mlip)
    num = float(np.abs(frac_ref - frac_mlip).sum()) + float(outside)
    return 100.0 * num / 2.0


def weighted_hist_error(x_ref, w_ref, x_mlip, w_mlip, edges) -> float:
    """Eq. 9 (percent) with per-frame weights ``w`` (a bootstrap replicate) on fixed ``edges``: the
    non-overlap of the two weighted, area-normalised histograms. Pressures here; volumes in the NPT
    cell step (the same equation on another sample)."""
    width = np.diff(edges)
    h_r = np.histogram(x_ref, bins=edges, weights=w_ref)[0] / (w_ref.sum() * width)
    h_m = np.histogram(x_mlip, bins=edges, weights=w_mlip)[0] / (w_mlip.sum() * width)
    return 100.0 * float(np.sum(np.abs(h_r - h_m) * width)) / 2.0


def pressure_hist_error_sensitivity(p_ref, p_mlip) -> dict:
    """E_P (Eq. 9, %) with our bin rule and with half and double its bin count.

    K is the count of :func:`pressure_hist_edges`; the other two use ⌊K/2⌋ (at least 1) and 2K
    equal bins over the same pooled range. Differences between models smaller than the spread
    of these three numbers are binning noise, not model differences.
    """
    p_ref = _sample(p_ref, "p_ref")
    p_mlip = _sample(p_mlip, "p_mlip")
    edges = pressure_hist_edges(p_ref, p_mlip)
    k = len(edges) - 1
    half, double = max(1, k // 2), 2 * k
    lo, hi = edges[0], edges[-1]
    return {
        "bins": k,
        "error_pct": pressure_hist_error(p_ref, p_mlip, edges),
        "bins_half": half,
        "error_half_bins_pct": pressure_hist_error(p_ref, p_mlip, np.linspace(lo, hi, half + 1)),
        "bins_double": double,
        "error_double_bins_pct": pressure_hist_error(p_ref, p_mlip, np.linspace(lo, hi, double + 1)),
    }


def pressure_wasserstein_GPa(p_ref, p_mlip) -> float:
    """Wasserstein-1 distance between the two pressure samples, in the input units (GPa).

    Matbench-discovery's ``pressure_wasserstein`` (not in the paper): it captures both a mean
    offset and a width mismatch, needs no binning, and keeps growing where E_P saturates at 100 %.
    """
    from scipy.stats import wasserstein_distance

    return float(wasserstein_distance(_sample(p_ref, "p_ref"), _sample(p_mlip, "p_mlip")))
