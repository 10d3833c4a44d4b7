"""Matbench-discovery's six per-system MD metrics, as its own code defines them.

Definitions follow ``matbench_discovery/metrics/md.py::evaluate_md_system`` in
janosh/matbench-discovery (read at its 2026-07-16 head); they are re-implemented here, not
copied. They differ from the paper's Eqs. 3–10 as we implement them elsewhere in
:mod:`dynamat.metrics`, so every function here says ``matbench`` and keeps their key names:

* time matching (:func:`matbench_matched_frame_counts`): both runs are cut to the same span
  [0, t], t the largest multiple of the common (LCM) frame interval inside both;
* ``rdf_error``: ideal-gas counts N²/2 · Σ_frames 1/V · shell (Eq. 3 literally, not MDTraj's
  N(N−1)/2), R_max of the reference reused for the prediction, trapezoid integrals, and 100
  whenever the reference is indistinguishable from an ideal gas (even for identical inputs);
* ``adf_error``: :func:`~dynamat.metrics.adf.bond_angle_distribution` (their ``calc_adf``),
  W1 against the sin θ background, 100 for a background-like reference;
* ``vdos_error``: finite-difference velocities (numpy.gradient of minimum-image-unwrapped
  positions), a Hann-windowed periodogram normalised per Cartesian component, and a
  Wasserstein-1 distance over the reference's spectral standard deviation after clipping the
  reference's top 0.1 % of power;
* ``pressure_*``: P = −tr σ / 3 (ASE-sign Voigt stress) in GPa; MAE of means, W1, and the
  Eq. 9 overlap on 80 equal bins over the pooled range; NaN when either side lacks stress.

Energy and force RMSE (their ``calc_energy_force_rmse``) are
:func:`~dynamat.metrics.energy_force.energy_fluctuation_rmse_per_atom` (per-atom energies minus
each side's mean, eV/atom) and :func:`~dynamat.metrics.energy_force.force_component_rmse`
(divide by 3MN, eV/Å); both are re-exported here under Matbench's names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from fractions import Fraction

import numpy as np

from dynamat.metrics.adf import AngleCounter, adf_w1_terms, bond_angle_distribution
from dynamat.metrics.energy_force import (
    energy_fluctuation_rmse_per_atom as matbench_energy_rmse,
)
from dynamat.metrics.energy_force import (
    force_component_rmse as matbench_force_rmse,
)
from dynamat.metrics.neighbours import as_cells, minimum_image
from dynamat.metrics.rdf import RDFHistogram, rdf_from_histogram, rdf_histogram
from dynamat.metrics.vdos import w1_over_spread_pct
from dynamat.units import EV_PER_A3_TO_GPA

__all__ = [
    "MATBENCH_KEYS",
    "MATBENCH_TABLE",
    "matbench_adf_error",
    "matbench_energy_rmse",
    "matbench_force_rmse",
    "matbench_matched_frame_counts",
    "angle_visitor",
    "matbench_md_metrics",
    "matbench_pressure_GPa",
    "matbench_pressure_hist_error",
    "matbench_pressure_metrics",
    "matbench_rdf",
    "matbench_rdf_error",
    "matbench_vdos",
    "matbench_vdos_error",
    "matbench_velocities",
]

#: The one table of Matbench-discovery's per-system keys: key -> (the score JSON object that carries
#: it, the factor to the unit Matbench-discovery publishes, that unit). The score, the report's
#: tables and its Matbench export all read it.
MATBENCH_TABLE: dict[str, tuple[str, float, str]] = {
    "energy_rmse": ("matbench_singlepoint", 1000.0, "meV/atom (mean-subtracted)"),
    "force_rmse": ("matbench_singlepoint", 1000.0, "meV/Å (per component)"),
    "rdf_error": ("matbench", 1.0, "%"),
    "adf_error": ("matbench", 1.0, "%"),
    "vdos_error": ("matbench", 1.0, "%"),
    "pressure_mae": ("matbench", 1.0, "GPa"),
    "pressure_wasserstein": ("matbench", 1.0, "GPa"),
    "pressure_error": ("matbench", 1.0, "% (pressure-histogram error, 80 bins)"),
}
#: the MD keys (a score's ``matbench`` object, :func:`matbench_md_metrics`)
MATBENCH_KEYS = tuple(k for k, (where, _, _) in MATBENCH_TABLE.items() if where == "matbench")


# --- time matching -------------------------------------------------------------------------


def _interval(dt_fs: float) -> Fraction:
    # Matbench takes the decimal spelling of the float (Fraction(str(dt))), so 0.1 is 1/10,
    # not the binary float's 3602879701896397/36028797018963968.
    if not (np.isfinite(dt_fs) and dt_fs > 0):
        raise ValueError(f"frame interval must be a positive number of fs, got {dt_fs}")
    return Fraction(repr(float(dt_fs)))


def matbench_matched_frame_counts(
    n_ref: int, n_pred: int, dt_ref_fs: float, dt_pred_fs: float
) -> tuple[int, int]:
    """Frame counts (n_ref_use, n_pred_use) spanning the same time [0, t] on both sides.

    Matbench's ``matched_frame_counts``: the common interval is lcm(p₁, p₂)/gcd(q₁, q₂) for
    dt = p/q in lowest terms; t is the largest multiple of it within both spans (M − 1)·dt.
    Frames are then used from the start; nothing is subsampled.
    """
    a, b = _interval(dt_ref_fs), _interval(dt_pred_fs)
    common = Fraction(math.lcm(a.numerator, b.numerator), math.gcd(a.denominator, b.denominator))
    s_ref, s_pred = int(common / a), int(common / b)
    if min(n_ref, n_pred) < 1:
        return 0, 0
    k = min((n_ref - 1) // s_ref, (n_pred - 1) // s_pred)
    return k * s_ref + 1, k * s_pred + 1


# --- RDF -----------------------------------------------------------------------------------


def _matbench_r_max(cells: np.ndarray, pbc: np.ndarray) -> float:
    """Half the shortest (Minkowski-reduced) periodic lattice vector, Å, Matbench's rule.

    Its ``min_image_radius`` looks at the first cell only when all cells are ``np.allclose``
    to it, else at every frame; with no periodic direction it takes the shortest vector.
    """
    from ase.geometry import minkowski_reduce

    use = cells[:1] if np.allclose(cells, cells[0]) else cells
    best = np.inf
    for cell in use:
        lengths = np.linalg.norm(minkowski_reduce(cell, pbc)[0], axis=1)
        best = min(best, float(lengths[pbc].min() if pbc.any() else lengths.min()))
    return best / 2


def matbench_rdf(
    positions, cells, pbc=True, *, n_bins: int = 500, r_max: float | None = None, pair_visitor=None
) -> tuple[np.ndarray, np.ndarray]:
    """(r in Å, g(r)) as Matbench's ``calc_rdf``: all unique pairs, exact minimum image.

    g_k = counts_k / (N²/2 · Σ_frames 1/V · 4π/3 (r_{k+1}³ − r_k³)) on ``n_bins`` equal bins over
    [0, r_max]; default r_max :func:`_matbench_r_max`. The N² (not N(N−1)) makes the
    large-r limit (N − 1)/N: our ``normalization="eq3"``. ``pair_visitor``: see
    :func:`~dynamat.metrics.rdf.rdf_histogram` (the ADF's neighbours from the same pass).
    """
    cells = as_cells(cells)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if r_max is None:
        r_max = _matbench_r_max(cells, pbc)
    hist = rdf_histogram(positions, cells, n_bins=n_bins, r_max=r_max, pbc=pbc,
                         pair_visitor=pair_visitor)
    return rdf_from_histogram(hist, normalization="eq3")


def angle_visitor(numbers, cells, pbc) -> AngleCounter:
    """The bond-angle counter of Matbench's ADF for one side, to ride along in another scorer's RDF
    pass (``pair_visitors`` of :func:`dynamat.scoring.core.score_md`) and be handed back through
    ``shared`` of :func:`matbench_md_metrics`."""
    return AngleCounter(numbers, cells, pbc)


def _from_shared(side: dict, n_bins: int, r_max: float, counter, given):
    """((r, g), counter) from another scorer's pass over the same frames, or None unless it is the
    pass this side would make: the same frames, bins and R_max to the bit, and a counter fed
    exactly when this one would be, with the same bond cutoffs. Counts are integers, so the
    result is bit for bit the one of a pass of our own."""
    if given is None:
        return None
    hist, fed = given
    n = len(side["positions"])
    if not (len(hist.edges) == n_bins + 1 and hist.edges[-1] == r_max and int(hist.n_frames.sum()) == n
            and hist.n_atoms == side["positions"].shape[1] and (fed is None) == (counter is None)):
        return None
    if counter is not None and not (np.array_equal(fed.cutoff, counter.cutoff)
                                    and np.array_equal(fed.species, counter.species)):
        return None
    # Σ 1/V as rdf_histogram sums it for one block, so g(r) is the bits of our own pass
    inv_v = np.bincount(np.zeros(n, dtype=np.intp), weights=1.0 / np.abs(np.linalg.det(side["cells"])),
                        minlength=1)
    one = RDFHistogram(hist.edges, hist.counts.sum(axis=0, keepdims=True), inv_v, np.array([n]), hist.n_atoms)
    return rdf_from_histogram(one, normalization="eq3"), fed


def _rdf_and_angles(side: dict, n_bins: int, r_max: float | None = None, given=None):
    """Matbench's RDF of one side, and its bond-angle counter filled by the same neighbour pass
    when the bonds lie inside the RDF's range (else None: the ADF then makes its own pass).
    ``given``: another scorer's pass (:func:`_from_shared`), used when it is this one."""
    counter = AngleCounter(side["numbers"], side["cells"], side["pbc"])
    if r_max is None:
        r_max = _matbench_r_max(as_cells(side["cells"]), side["pbc"])
    if not (side["pbc"].all() and counter.r_near <= r_max):
        counter = None
    if (reused := _from_shared(side, n_bins, r_max, counter, given)) is not None:
        return reused
    rdf = matbench_rdf(side["positions"], side["cells"], side["pbc"], n_bins=n_bins, r_max=r_max,
                       pair_visitor=counter)
    return rdf, counter


def _angles(side: dict, counter) -> tuple[np.ndarray, np.ndarray]:
    if counter is not None:
        return counter.distribution()
    return bond_angle_distribution(side["positions"], side["cells"], side["numbers"], pbc=side["pbc"])


def matbench_rdf_error(r, g_ref, g_pred) -> float:
    """``rdf_error`` in %: 100 · min(1, ∫|g_ref − g_pred| dr / ∫|g_ref − 1| dr), trapezoid rule.

    Matbench's ``calc_rdf_error``: integrals by ``np.trapezoid`` over the bin centres; a zero
    denominator gives 100 (ours, :func:`~dynamat.metrics.rdf.rdf_error`, gives 0 for identical
    inputs and uses midpoint sums).
    """
    r, g_ref, g_pred = (np.asarray(x, dtype=float) for x in (r, g_ref, g_pred))
    if not len(r) == len(g_ref) == len(g_pred):
        raise ValueError("r, g_ref and g_pred must have equal length")
    for name, g in (("g_ref", g_ref), ("g_pred", g_pred)):
        if not np.all(np.isfinite(g)) or np.any(g < 0):
            raise ValueError(f"{name} must be finite and non-negative")
    den = float(np.trapezoid(np.abs(g_ref - 1.0), x=r))
    if den == 0:
        return 100.0
    num = float(np.trapezoid(np.abs(g_ref - g_pred), x=r))
    return 100.0 * min(1.0, num / den)


# --- ADF -----------------------------------------------------------------------------------


def matbench_adf_error(angles, adf_ref, adf_pred) -> float:
    """``adf_error`` in %: 100 · min(1, W1(ref, pred) / W1(ref, sin θ)), W1 in degrees.

    Matbench's ``calc_adf_error``; unlike our ``bond_angle_distribution_error`` a reference
    at zero distance from the sin θ background gives 100 even for identical inputs.
    """
    angles = np.asarray(angles, dtype=float)
    step = np.diff(angles)
    if len(step) == 0 or not np.all(step > 0) or not np.allclose(step, step[0]):
        raise ValueError("the angle grid must be increasing, evenly spaced and of length ≥ 2")
    w1, w1_bg = adf_w1_terms(angles, adf_ref, adf_pred)
    if w1_bg <= 0:
        return 100.0
    return 100.0 * min(1.0, w1 / w1_bg)


# --- VDOS ----------------------------------------------------------------------------------


def matbench_velocities(positions, cells, pbc, dt_fs: float) -> np.ndarray:
    """(M, N, 3) finite-difference velocities in Å/fs, Matbench's ``calc_velocities``.

    Displacements between consecutive frames are minimum-imaged in the earlier frame's cell,
    summed from frame 0 to unwrap, and differentiated by ``numpy.gradient`` (central
    differences inside, first-order one-sided at both ends).
    """
    x = np.asarray(positions, dtype=float)
    if x.ndim != 3 or x.shape[2] != 3 or len(x) < 2:
        raise ValueError(f"positions must be (M ≥ 2, N, 3) in Å, got {x.shape}")
    cells = np.broadcast_to(as_cells(cells, len(x)), (len(x), 3, 3))
    step = np.diff(x, axis=0)
    if np.all(cells == cells[0]):
        step = minimum_image(step, cells[0], pbc)
    else:
        step = np.stack([minimum_image(d, c, pbc) for d, c in zip(step, cells[:-1])])
    unwrapped = x[0] + np.concatenate([np.zeros_like(x[:1]), np.cumsum(step, axis=0)])
    return np.gradient(unwrapped, float(dt_fs), axis=0)


def matbench_vdos(velocities, dt_fs: float) -> tuple[np.ndarray, np.ndarray]:
    """(frequencies in THz, spectrum), Matbench's ``calc_vdos``.

    For each atom and Cartesian component, |rfft(w·v)|² with w the M-point Hann window
    (``numpy.hanning``), divided by its own total power (components with none are dropped),
    then summed over atoms and components. Frequencies ``rfftfreq(M, dt)`` with dt in ps.
    """
    v = np.asarray(velocities, dtype=float)
    if v.ndim != 3 or v.shape[2] != 3 or len(v) < 4:
        raise ValueError(f"velocities must be (M ≥ 4, N, 3), got {v.shape}")
    power = np.abs(np.fft.rfft(v * np.hanning(len(v))[:, None, None], axis=0)) ** 2
    total = power.sum(axis=0)
    power = np.divide(power, total, out=np.zeros_like(power), where=total > 0)
    return np.fft.rfftfreq(len(v), d=float(dt_fs) * 1e-3), power.sum(axis=(1, 2))


def _trapezoid_cells(grid: np.ndarray) -> np.ndarray:
    # width attributed to each grid point by the trapezoid rule: half-cells at both ends
    w = np.empty_like(grid)
    w[1:-1] = 0.5 * (grid[2:] - grid[:-2])
    w[0] = 0.5 * (grid[1] - grid[0])
    w[-1] = 0.5 * (grid[-1] - grid[-2])
    return w


def matbench_vdos_error(f_ref, vdos_ref, f_pred, vdos_pred, *, band_frac: float = 0.999) -> float:
    """``vdos_error`` in %: 100 · min(1, W1(ref, pred) / σ_ref), W1 and σ in THz.

    Matbench's ``calc_vdos_error``: both spectra are linearly interpolated onto the union of
    the two frequency grids up to the smaller maximum, weighted by trapezoid cell widths into
    masses, the grid is cut after the point where the reference's cumulative mass first
    reaches ``band_frac`` of its total, and σ_ref is the reference mass's standard deviation
    over the kept grid. No predicted mass in the band gives 100; σ_ref = 0 gives 0 or 100.
    """
    if not 0 < band_frac <= 1:
        raise ValueError(f"band_frac must be in (0, 1], got {band_frac}")
    f_ref, f_pred = np.asarray(f_ref, dtype=float), np.asarray(f_pred, dtype=float)
    grid = np.union1d(f_ref, f_pred)
    grid = grid[grid <= min(f_ref.max(), f_pred.max())]
    if len(grid) < 2:
        raise ValueError("the two frequency grids overlap in fewer than 2 points")
    ref = np.interp(grid, f_ref, np.asarray(vdos_ref, dtype=float))
    pred = np.interp(grid, f_pred, np.asarray(vdos_pred, dtype=float))
    for name, d in (("vdos_ref", ref), ("vdos_pred", pred)):
        if not np.all(np.isfinite(d)) or np.any(d < 0) or d.sum() <= 0:
            raise ValueError(f"{name} must be finite, non-negative and non-zero")
    w = _trapezoid_cells(grid)
    m_ref, m_pred = ref * w, pred * w
    if band_frac < 1:
        cut = min(int(np.searchsorted(np.cumsum(m_ref), band_frac * m_ref.sum())), len(grid) - 1)
        keep = grid <= grid[cut]
        grid, m_ref, m_pred = grid[keep], m_ref[keep], m_pred[keep]
    if m_ref.sum() <= 0:
        raise ValueError("reference VDOS has no power in its band")
    if m_pred.sum() <= 0:
        return 100.0
    return w1_over_spread_pct(grid, m_ref, m_pred)


# --- pressure ------------------------------------------------------------------------------


def matbench_pressure_GPa(stress_voigt) -> np.ndarray:
    """Per-frame P = −(σ_xx + σ_yy + σ_zz)/3 in GPa from ASE-sign Voigt stress in eV/Å³.

    Matbench's ``get_trajectory_pressures``: always the 3D trace, no kinetic term.
    """
    s = np.asarray(stress_voigt, dtype=float)
    if s.ndim != 2 or s.shape[1] != 6:
        raise ValueError(f"stress must be (M, 6) Voigt eV/Å³, got {s.shape}")
    return -s[:, :3].sum(axis=1) / 3.0 * EV_PER_A3_TO_GPA


def matbench_pressure_hist_error(p_ref, p_pred, *, n_bins: int = 80) -> float:
    """``pressure_error`` in %: Eq. 9 on ``n_bins`` equal bins spanning the pooled [min, max].

    Matbench's ``calc_pressure_histogram_error``: 50 · Σ_k |h_ref − h_pred| Δ with
    ``np.histogram(density=True)`` (last bin closed); all values equal gives 0.
    """
    p_ref, p_pred = np.asarray(p_ref, dtype=float), np.asarray(p_pred, dtype=float)
    if n_bins < 2:
        raise ValueError(f"need at least 2 bins, got {n_bins}")
    pooled = np.concatenate([p_ref, p_pred])
    if len(p_ref) == 0 or len(p_pred) == 0 or not np.all(np.isfinite(pooled)):
        raise ValueError("pressures must be non-empty and finite")
    lo, hi = float(pooled.min()), float(pooled.max())
    if hi == lo:
        return 0.0
    edges = np.linspace(lo, hi, n_bins + 1)
    h_ref = np.histogram(p_ref, bins=edges, density=True)[0]
    h_pred = np.histogram(p_pred, bins=edges, density=True)[0]
    return float(50.0 * np.sum(np.abs(h_ref - h_pred) * np.diff(edges)))


def matbench_pressure_metrics(p_ref, p_pred) -> dict[str, float]:
    """``pressure_mae`` (GPa, |mean − mean|, frames unpaired), ``pressure_wasserstein`` (GPa,
    W1 of the two samples) and ``pressure_error`` (%, :func:`matbench_pressure_hist_error`)."""
    from scipy.stats import wasserstein_distance

    p_ref, p_pred = np.asarray(p_ref, dtype=float), np.asarray(p_pred, dtype=float)
    if len(p_ref) == 0 or len(p_pred) == 0:
        raise ValueError("pressure arrays must be non-empty")
    return {
        "pressure_mae": abs(float(p_ref.mean()) - float(p_pred.mean())),
        "pressure_wasserstein": float(wasserstein_distance(p_ref, p_pred)),
        "pressure_error": matbench_pressure_hist_error(p_ref, p_pred),
    }


# --- entry point ---------------------------------------------------------------------------


def _fields(traj, dt_fs: float | None) -> dict:
    """positions, cells, numbers, pbc, dt_fs, stress of a Trajectory or a mapping."""
    get = traj.get if isinstance(traj, Mapping) else lambda k, d=None: getattr(traj, k, d)
    numbers = get("numbers")
    if numbers is None:
        numbers = get("atomic_numbers")
    cells = get("cells")
    if cells is None:
        cells = get("cell")
    out = {
        "positions": np.asarray(get("positions"), dtype=float),
        "numbers": np.asarray(numbers, dtype=int),
        "pbc": np.broadcast_to(np.asarray(get("pbc", True), dtype=bool), (3,)),
        "stress": None if get("stress") is None else np.asarray(get("stress"), dtype=float),
        "dt_fs": dt_fs if dt_fs is not None else get("dt_fs"),
    }
    m = len(out["positions"])
    out["cells"] = np.broadcast_to(as_cells(cells, m), (m, 3, 3))
    if out["dt_fs"] is None:
        raise ValueError("the frame interval dt_fs is needed (pass dt_ref_fs / dt_pred_fs)")
    return out


def matbench_md_metrics(
    ref, pred, *, dt_ref_fs: float | None = None, dt_pred_fs: float | None = None,
    n_rdf_bins: int = 500, shared: dict | None = None,
) -> dict[str, float]:
    """Matbench-discovery's six per-system keys for one reference/prediction pair.

    ``ref`` and ``pred``: :class:`dynamat.trajectory.Trajectory` or mappings with
    ``positions`` (M, N, 3) Å, ``cells`` (M, 3, 3) or (3, 3) Å row vectors, ``numbers`` (N,),
    ``pbc`` (3,), ``dt_fs`` (saved-frame interval, fs; or pass ``dt_*_fs``) and ``stress``
    (M, 6) ASE-sign Voigt eV/Å³ or None. Returns ``rdf_error``, ``adf_error``, ``vdos_error``
    (%), ``pressure_mae``, ``pressure_wasserstein`` (GPa), ``pressure_error`` (%); the three
    pressure keys are NaN when either side has no stress. Both sides are first cut to the same
    time span (:func:`matbench_matched_frame_counts`); fewer than 4 frames left is an error.
    ``shared``: {"ref" | "pred": (RDF histogram, angle counter or None)} from another scorer's
    pass over the same frames (``shared`` of :func:`dynamat.scoring.core.score_md`, counters from
    :func:`angle_visitor`); a side's pass is skipped only where it would be the same pass.
    """
    from threadpoolctl import threadpool_limits

    # The kernels' matrix products are small ((n, 3) @ (3, 3), batched k × 3 Gram matrices):
    # a second BLAS thread only spins in them (CPU time lost under load), and one thread gives
    # the same bits.
    with threadpool_limits(1, user_api="blas"):
        return _md_metrics(_fields(ref, dt_ref_fs), _fields(pred, dt_pred_fs), n_rdf_bins, shared or {})


def _md_metrics(a: dict, b: dict, n_rdf_bins: int, shared: dict) -> dict[str, float]:
    """:func:`matbench_md_metrics` of two sides' :func:`_fields`."""
    n_a, n_b = matbench_matched_frame_counts(
        len(a["positions"]), len(b["positions"]), a["dt_fs"], b["dt_fs"]
    )
    if n_a < 4 or n_b < 4:
        raise ValueError(f"too few frames after time matching: {n_a} (ref), {n_b} (pred)")
    for side, n in ((a, n_a), (b, n_b)):
        for key in ("positions", "cells", "stress"):
            if side[key] is not None:
                side[key] = side[key][:n]

    # one neighbour pass per side feeds both the RDF and the ADF
    (r, g_ref), angles_ref = _rdf_and_angles(a, n_rdf_bins, given=shared.get("ref"))
    # the prediction is histogrammed out to the reference's R_max, rebuilt from its grid
    r_max = float(r[-1] + (r[1] - r[0]) / 2)
    (_, g_pred), angles_pred = _rdf_and_angles(b, n_rdf_bins, r_max, given=shared.get("pred"))
    out = {"rdf_error": matbench_rdf_error(r, g_ref, g_pred)}

    theta, adf_ref = _angles(a, angles_ref)
    _, adf_pred = _angles(b, angles_pred)
    out["adf_error"] = matbench_adf_error(theta, adf_ref, adf_pred)

    spectra = [
        matbench_vdos(matbench_velocities(s["positions"], s["cells"], s["pbc"], s["dt_fs"]), s["dt_fs"])
        for s in (a, b)
    ]
    out["vdos_error"] = matbench_vdos_error(*spectra[0], *spectra[1])

    if a["stress"] is not None and b["stress"] is not None:
        out |= matbench_pressure_metrics(
            matbench_pressure_GPa(a["stress"]), matbench_pressure_GPa(b["stress"])
        )
    else:
        out |= dict.fromkeys(("pressure_mae", "pressure_wasserstein", "pressure_error"), float("nan"))
    return out
