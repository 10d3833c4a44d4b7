"""Score an MLIP trajectory against a reference one, and single-point predictions against labels.

``score_md`` returns a flat dict with stable keys (see ``MD_KEYS``): the paper's observable
errors (Eqs. 4, 7, 9, 10, 11, 12), each with a block-bootstrap standard error ``<key>_unc`` and
a reference noise floor ``<key>_floor`` (see :mod:`dynamat.metrics.uncertainty`), plus
diagnostics. It is a short sequence of named steps — :func:`matched_pair`, :func:`rdf_step`,
:func:`pressure_step`, :func:`vdos_step`, :func:`combined_step` (Eq. 11–12 from
:mod:`dynamat.metrics.combined`), :func:`diagnostics_step` (the frame-interval check of
:mod:`dynamat.metrics.frame_interval`), :func:`bootstrap_step` — which :mod:`dynamat.pimd` reuses
for its quantum-classical differences; a new observable is a new step. Pressure entries are None — never 0 — when either side has no stress, and so are
the combined scores that need them.

Choices the paper leaves open, made here (each documented where it is implemented):

- RDF: 500 bins on [0, R_max], R_max = half the shortest Minkowski-reduced lattice vector of
  either trajectory; MDTraj's normalisation (ideal gas → 1); frames pooled as counts.
- Pressure histogram (Eq. 9): Freedman–Diaconis width from the reference sample, shared edges
  over the pooled range, 10–200 bins (:func:`dynamat.metrics.pressure.pressure_hist_edges`).
- VDOS: unbiased mass-weighted VACF, Hann lag window of half-width L = half the matched duration
  (or ``vdos_max_lag_fs``), real FFT of the even extension; stored velocities if both sides
  have them, else central differences on both sides with their sinc² filters equalised.
- Uncertainty: non-overlapping block bootstrap, both trajectories resampled independently,
  blocks of ⌈5 τ_int⌉ frames (τ_int the largest integrated autocorrelation time among the
  kinetic energy, a structural scalar, the potential energy and the pressure), 20–100 blocks.
- Noise floor: the same errors between the two halves of the reference (RDF halves at the block
  boundary nearest M/2; VDOS halves with L = min(L, M/4)).

Memory: the scorer reads positions in chunks of frames (RDF) or of atoms (VACF) and never
materialises a second full-size copy of a trajectory, so its working memory is independent of
the trajectory length up to the O(M) per-frame scalars and the VACF accumulators (~16 bytes ×
M × (1 + L/B)): ~220 MiB beyond the input arrays for two 80,000-frame × 108-atom trajectories.
The ``Trajectory`` arrays themselves are the caller's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
from ase.data import atomic_masses

from dynamat.metrics.combined import combined_scores
from dynamat.metrics.energy_force import (
    energy_fluctuation_rmse_per_atom,
    energy_rmse_per_atom,
    force_rmse,
    reference_to_isolated_atoms,
)
from dynamat.metrics.frame_interval import equipartition_check, fd_correction
from dynamat.metrics.pressure import (
    pressure_GPa,
    pressure_hist_edges,
    pressure_hist_error,
    pressure_hist_error_sensitivity,
    pressure_mae,
    pressure_wasserstein_GPa,
    weighted_hist_error,
)
from dynamat.metrics.rdf import (
    all_bead_rdf_histogram,
    rdf_error,
    rdf_from_histogram,
    rdf_histogram,
    rdf_r_max,
)
from dynamat.metrics.uncertainty import (
    block_sizes,
    bootstrap_weights,
    choose_block_length,
    integrated_autocorrelation_time,
    standard_error,
)
from dynamat.metrics.vdos import (
    FiniteDifferenceVelocities,
    fd_transfer,
    kinetic_temperature,
    spectrum_from_acf,
    vacf_blocks,
    vdos_error,
    vdos_w1_error,
)
from dynamat.scoring.cell import CELL_ERROR_KEYS, cell_step
from dynamat.scoring.keys import COMPOSITE_KEYS, ERROR_KEYS, OBSERVABLE_KEYS
from dynamat.trajectory import MIN_MATCHED_FRAMES, Trajectory

__all__ = [
    "ERROR_KEYS",
    "MD_KEYS",
    "bootstrap_step",
    "combined_step",
    "diagnostics_step",
    "matched_pair",
    "pressure_step",
    "rdf_step",
    "score_md",
    "score_singlepoint",
    "vdos_step",
]

MD_KEYS = (
    *ERROR_KEYS,
    *(f"{k}_unc" for k in ERROR_KEYS),
    *(f"{k}_floor" for k in ERROR_KEYS),
    "matched_duration_fs",
    "n_frames_ref",
    "n_frames_mlip",
    "kinetic_temperature_ref_K",
    "kinetic_temperature_mlip_K",
    "frame_interval_suspect_ref",
    "frame_interval_suspect_mlip",
    "velocity_source",
    "pressure_wasserstein_GPa",
    "pressure_hist_bins",
    "pressure_hist_error_pct_half_bins",
    "pressure_hist_error_pct_double_bins",
    "vdos_w1_error_pct",
    "rdf_r_max_A",
    "vdos_max_lag_fs",
    "block_length_frames_ref",
    "block_length_frames_mlip",
    "tau_int_frames_ref",
    "tau_int_frames_mlip",
    "n_boot",
)
#: what an NPT score adds (:mod:`dynamat.scoring.cell`); a fixed-cell score has none of these keys
NPT_KEYS = (
    *CELL_ERROR_KEYS,
    *(f"{k}_unc" for k in CELL_ERROR_KEYS),
    *(f"{k}_floor" for k in CELL_ERROR_KEYS),
    "volume_mean_ref_A3",
    "volume_mean_mlip_A3",
    "density_mean_ref_g_cm3",
    "density_mean_mlip_g_cm3",
    "volume_hist_bins",
)

class _FrameWindow:
    """Frames [t0, t1) of a (M, N, 3) array-like, itself sliceable as v[a:b, c:d]."""

    def __init__(self, arr, t0: int, t1: int):
        self.arr, self.t0, self.t1 = arr, t0, t1
        self.shape = (t1 - t0,) + tuple(arr.shape[1:])

    def __getitem__(self, key):
        ts, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        a, b, _ = ts.indices(self.shape[0])
        return self.arr[(slice(self.t0 + a, self.t0 + b), *rest)]


def _structural_series(traj: Trajectory, atoms_per_chunk: int = 16) -> np.ndarray:
    """Per-frame mean-square displacement from each atom's time-averaged (unwrapped) position.

    A cheap scalar that decorrelates on the structural time scale; used only to size bootstrap
    blocks for the RDF.
    """
    m, n = traj.n_frames, traj.n_atoms
    out = np.zeros(m)
    if m < 2:
        return out
    cells = traj.cells
    inv = np.linalg.inv(cells[:-1])
    per = traj.pbc
    for a0 in range(0, n, atoms_per_chunk):
        x = np.asarray(traj.positions[:, a0 : a0 + atoms_per_chunk], dtype=float)
        step = np.diff(x, axis=0)
        frac = np.einsum("fnk,fkl->fnl", step, inv)
        frac[..., per] -= np.rint(frac[..., per])
        step = np.einsum("fnk,fkl->fnl", frac, cells[:-1])
        unwrapped = np.concatenate([x[:1], x[:1] + np.cumsum(step, axis=0)])
        dev = unwrapped - unwrapped.mean(axis=0)
        out += np.einsum("fnk,fnk->f", dev, dev)
    return out / n


def _tau(series: Iterable[np.ndarray | None]) -> float:
    taus = [
        integrated_autocorrelation_time(s)
        for s in series
        if s is not None and len(s) >= 2 and np.ptp(s) > 0
    ]
    return max(taus) if taus else 0.5


def _check_pair(ref: Trajectory, mlip: Trajectory) -> None:
    for name, t in (("ref", ref), ("mlip", mlip)):
        if not isinstance(t, Trajectory):
            raise TypeError(f"{name} must be a dynamat Trajectory, got {type(t).__name__}")
        if t.dt_fs is None:
            raise ValueError(
                f"{name} trajectory has no frame interval (dt_fs); cannot match durations"
            )
    if ref.n_atoms != mlip.n_atoms:
        raise ValueError(f"atom counts differ: ref {ref.n_atoms}, mlip {mlip.n_atoms}")
    if not np.array_equal(np.sort(ref.numbers), np.sort(mlip.numbers)):
        raise ValueError("ref and mlip trajectories have different compositions")


@dataclass
class _Pair:
    """The matched-duration reference and MLIP trajectories and what every step shares."""

    sides: dict  # "ref"/"mlip" -> Trajectory, truncated to the matched duration
    beads: Trajectory | None  # all beads of a path-integral MLIP run (step-major), or None
    beads_per_frame: int | None
    stored: bool  # both sides have stored velocities (else central differences on both)
    vel: dict  # side -> velocities (array or FiniteDifferenceVelocities)
    masses: dict  # side -> (N,) amu
    t_kin: dict  # side -> per-frame kinetic temperature (K) of ``vel``, uncorrected
    p: dict  # side -> configurational pressure (GPa) per frame; empty when a side has no stress
    tau: dict  # side -> integrated autocorrelation time (frames) that sized the blocks
    blen: dict  # side -> bootstrap block length (frames)
    sizes: dict  # side -> the blocks' lengths

    @property
    def ref(self) -> Trajectory:
        return self.sides["ref"]

    @property
    def mlip(self) -> Trajectory:
        return self.sides["mlip"]


def matched_pair(ref: Trajectory, mlip: Trajectory, dims: int, mlip_beads: Trajectory | None = None,
                 npt: bool = False) -> _Pair:
    """Step 1: both trajectories over the shorter duration (paper: matched-duration segments), their
    velocities (stored if both sides have them), kinetic temperatures, pressures and block lengths
    (``npt``: the volume, slowest of all with a barostat, sizes the blocks too)."""
    _check_pair(ref, mlip)
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    duration = min(ref.duration_fs, mlip.duration_fs)
    beads_per_frame = None
    if mlip_beads is not None:
        beads_per_frame, rest = divmod(mlip_beads.n_frames, mlip.n_frames)
        if rest or beads_per_frame < 1:
            raise ValueError(f"{mlip_beads.n_frames} bead frames are not a whole number per {mlip.n_frames} steps")
    ref, mlip = ref.truncated_to(duration), mlip.truncated_to(duration)
    if mlip_beads is not None:
        mlip_beads = mlip_beads[: mlip.n_frames * beads_per_frame]
    if min(ref.n_frames, mlip.n_frames) < MIN_MATCHED_FRAMES:
        raise ValueError(
            f"matched duration {duration:g} fs leaves {ref.n_frames} ref and {mlip.n_frames} "
            f"MLIP frames; need at least {MIN_MATCHED_FRAMES} on each side"
        )
    sides = {"ref": ref, "mlip": mlip}
    stored = ref.velocities is not None and mlip.velocities is not None
    vel = {k: t.velocities if stored else FiniteDifferenceVelocities(t.positions, t.dt_fs, t.cells, t.pbc)
           for k, t in sides.items()}
    masses = {k: atomic_masses[t.numbers] for k, t in sides.items()}
    t_kin = {k: kinetic_temperature(vel[k], masses[k]) for k in sides}
    have_p = ref.stress is not None and mlip.stress is not None
    p = {k: pressure_GPa(t.stress, dims) for k, t in sides.items()} if have_p else {}
    vol = {k: np.abs(np.linalg.det(t.cells)) if npt else None for k, t in sides.items()}
    tau = {k: _tau([t_kin[k], _structural_series(t), t.energies, p.get(k), vol[k]]) for k, t in sides.items()}
    blen = {k: choose_block_length(t.n_frames, tau[k]) for k, t in sides.items()}
    sizes = {k: block_sizes(sides[k].n_frames, blen[k]) for k in sides}
    return _Pair(sides, mlip_beads, beads_per_frame, stored, vel, masses, t_kin, p, tau, blen, sizes)


def _block_diagnostics(pair: _Pair) -> dict:
    return {f"{what}_frames_{k}": d[k] for k in pair.sides
            for what, d in (("tau_int", pair.tau), ("block_length", pair.blen))}


def rdf_step(pair: _Pair, n_bins: int = 500, backend: str = "numpy", pair_visitors: dict | None = None,
             shared: dict | None = None) -> tuple[dict, dict]:
    """E_RDF (Eq. 4) on a shared 0…R_max grid; for a path-integral run the all-bead (quantum) g(r),
    with the centroid's as ``rdf_error_centroid_pct``. Returns (score entries, state for later steps).

    ``pair_visitors`` / ``shared``: see :func:`score_md`."""
    ref, mlip = pair.ref, pair.mlip
    r_max = min(rdf_r_max(ref.cells, ref.pbc), rdf_r_max(mlip.cells, mlip.pbc))
    out: dict = {"rdf_r_max_A": r_max}
    visitors = {}
    for k, t in pair.sides.items():
        v = (pair_visitors or {}).get(k)
        # a visitor rides along only where the pass can serve it; elsewhere its owner makes its own pass
        visitors[k] = v if v is not None and backend == "numpy" and t.pbc.all() and v.r_near <= r_max else None
    hist = {
        k: rdf_histogram(t.positions, t.cells, n_bins=n_bins, r_max=r_max, pbc=t.pbc,
                         block_length=pair.blen[k], backend=backend, pair_visitor=visitors[k])
        for k, t in pair.sides.items()
    }
    if shared is not None:
        shared.update((k, (hist[k], visitors[k])) for k in hist)
    r, g_ref = rdf_from_histogram(hist["ref"])
    if pair.beads is not None:  # quantum g(r): all beads; the centroid one kept under its own name
        _, g_centroid = rdf_from_histogram(hist["mlip"])
        out["rdf_error_centroid_pct"] = rdf_error(g_ref, g_centroid, r)
        b, p = pair.beads, pair.beads_per_frame
        hist["mlip"] = all_bead_rdf_histogram(
            b.positions.reshape(mlip.n_frames, p, b.n_atoms, 3), b.cells[::p], n_bins=n_bins, r_max=r_max,
            pbc=b.pbc, block_length=pair.blen["mlip"], backend=backend)
        out["rdf_source"] = "all_beads"
    _, g_mlip = rdf_from_histogram(hist["mlip"])
    out["rdf_error_pct"] = rdf_error(g_ref, g_mlip, r)
    state = {"hist": hist, "r": r, "curves": dict(rdf_r=r, rdf_ref=g_ref, rdf_mlip=g_mlip)}
    if pair.beads is not None:
        state["g_centroid"] = g_centroid
    return out, state


def pressure_step(pair: _Pair) -> tuple[dict, dict]:
    """Pressure MAE (Eq. 7, GPa) and E_P (Eq. 9) with its bin sensitivity and the Wasserstein distance;
    nothing (the entries stay None) when a side has no stress."""
    if not pair.p:
        return {}, {"edges": None, "curves": {}}
    p_ref, p_mlip = pair.p["ref"], pair.p["mlip"]
    edges = pressure_hist_edges(p_ref, p_mlip)
    sens = pressure_hist_error_sensitivity(p_ref, p_mlip)
    out = {
        "pressure_mae_GPa": pressure_mae(p_ref, p_mlip),
        "pressure_hist_error_pct": pressure_hist_error(p_ref, p_mlip, bins=edges),
        "pressure_hist_bins": sens["bins"],
        "pressure_hist_error_pct_half_bins": sens["error_half_bins_pct"],
        "pressure_hist_error_pct_double_bins": sens["error_double_bins_pct"],
        "pressure_wasserstein_GPa": pressure_wasserstein_GPa(p_ref, p_mlip),
    }
    return out, {"edges": edges, "curves": dict(p_ref_GPa=p_ref, p_mlip_GPa=p_mlip)}


class _Spectra:
    """Both sides' VDOS from their VACF blocks, optionally reweighted (a bootstrap replicate), with the
    finite-difference low-pass filters equalised: each side gets the other's too."""

    def __init__(self, pair: _Pair, vac: dict):
        self.pair, self.vac = pair, vac

    def __call__(self, w_ref=None, w_mlip=None):
        ref, mlip = self.pair.ref, self.pair.mlip
        nu_r, s_r = spectrum_from_acf(self.vac["ref"].acf(w_ref), ref.dt_fs)
        nu_m, s_m = spectrum_from_acf(self.vac["mlip"].acf(w_mlip), mlip.dt_fs)
        if not (self.pair.stored or ref.dt_fs == mlip.dt_fs):
            s_r, s_m = s_r * fd_transfer(nu_r, mlip.dt_fs), s_m * fd_transfer(nu_m, ref.dt_fs)
        return nu_r, s_r, nu_m, s_m


def _lag_frames(t: Trajectory, vdos_max_lag_fs: float | None) -> int:
    if vdos_max_lag_fs is None:
        return max(1, t.n_frames // 2)
    lag = int(round(vdos_max_lag_fs / t.dt_fs))
    if not 1 <= lag <= t.n_frames - 1:
        raise ValueError(f"vdos_max_lag_fs = {vdos_max_lag_fs} fs is {lag} frames, outside 1…{t.n_frames - 1}")
    return lag


def vdos_step(pair: _Pair, vdos_max_lag_fs: float | None = None) -> tuple[dict, dict]:
    """E_VDOS (Eq. 10) and the W1 variant from Hann-windowed VACF spectra, window half-width
    ``vdos_max_lag_fs`` (default half the matched duration on each side)."""
    lags = {k: _lag_frames(t, vdos_max_lag_fs) for k, t in pair.sides.items()}
    vac = {k: vacf_blocks(pair.vel[k], pair.masses[k], t.dt_fs, max_lag=lags[k], block_length=pair.blen[k])
           for k, t in pair.sides.items()}
    spectra = _Spectra(pair, vac)
    spec = spectra()
    nu_r, s_r, nu_m, s_m = spec
    keep = nu_r <= min(nu_r[-1], nu_m[-1])
    nu = nu_r[keep]
    v_r, v_m = s_r[keep], np.interp(nu, nu_m, s_m)
    out = {"vdos_max_lag_fs": float(lags["ref"] * pair.ref.dt_fs), "vdos_error_pct": vdos_error(*spec),
           "vdos_w1_error_pct": vdos_w1_error(*spec)}
    curves = dict(vdos_nu_THz=nu, vdos_ref=v_r / np.trapezoid(v_r, nu), vdos_mlip=v_m / np.trapezoid(v_m, nu))
    return out, {"vac": vac, "lags": lags, "spectra": spectra, "curves": curves}


def combined_step(out: dict) -> dict:
    """Ē_RPV and L_RPV (Eqs. 11–12, :mod:`dynamat.metrics.combined`) of this score's three errors."""
    comp = combined_scores(*(out.get(k) for k in OBSERVABLE_KEYS))
    return {k: comp[k] for k in COMPOSITE_KEYS}


def diagnostics_step(pair: _Pair, vac: dict) -> dict:
    """Each side's kinetic temperature and the frame-interval check (:mod:`dynamat.metrics.frame_interval`):
    finite-difference temperatures corrected for their filter from the side's own VACF spectrum."""
    out = {"velocity_source": "stored" if pair.stored else "finite_difference"}
    for k, t in pair.sides.items():
        corr = 1.0 if pair.stored else fd_correction(*spectrum_from_acf(vac[k].acf(), t.dt_fs), t.dt_fs)
        check = equipartition_check(pair.t_kin[k], t.dt_fs, t.temperature_K or None, corr)
        out[f"kinetic_temperature_{k}_K"] = check.temperature_K
        out[f"frame_interval_suspect_{k}"] = None if check.ok is None else not check.ok
    return out


def _replicate_vdos_error(spec) -> float:
    """E_VDOS of one bootstrap replicate; NaN (left out of the standard error) where the replicate drew no
    time origin for some VACF lag: a short run's few blocks (the last origins only reach the longest lags)
    are all left out now and then, and that lag's average is 0/0."""
    if not all(np.all(np.isfinite(a)) for a in spec):
        return float("nan")
    return vdos_error(*spec)


def bootstrap_step(pair: _Pair, rdf_state: dict, p_state: dict, spectra: _Spectra, n_boot: int,
                   rng: np.random.Generator, cell_state: dict | None = None) -> dict:
    """``<key>_unc``: block-bootstrap standard errors, both trajectories resampled independently
    (:mod:`dynamat.metrics.uncertainty`); E_RPV/L_RPV from each replicate's three errors; the cell errors
    of an NPT score (``cell_state``) from the same replicates."""
    if not n_boot or n_boot < 2:
        return {}
    hist, r, edges, sizes = rdf_state["hist"], rdf_state["r"], p_state["edges"], pair.sizes
    w_all = {k: bootstrap_weights(len(sizes[k]), n_boot, rng) for k in pair.sides}
    reps = {k: [] for k in (*ERROR_KEYS, *CELL_ERROR_KEYS)}
    for i in range(n_boot):
        w = {k: w_all[k][i] for k in pair.sides}
        _, gr = rdf_from_histogram(hist["ref"], w["ref"])
        _, gm = rdf_from_histogram(hist["mlip"], w["mlip"])
        e = {"rdf_error_pct": rdf_error(gr, gm, r), "vdos_error_pct": _replicate_vdos_error(spectra(w["ref"], w["mlip"]))}
        if pair.p:
            fw = {k: np.repeat(w[k], sizes[k]) for k in pair.sides}
            means = {k: np.average(pair.p[k], weights=fw[k]) for k in pair.sides}
            e["pressure_mae_GPa"] = abs(means["ref"] - means["mlip"])
            e["pressure_hist_error_pct"] = weighted_hist_error(pair.p["ref"], fw["ref"], pair.p["mlip"],
                                                                fw["mlip"], edges)
        if np.isfinite(e["vdos_error_pct"]):  # else this replicate has no E_RPV/L_RPV either
            e.update((k, v) for k, v in combined_step(e).items() if v is not None)
        if cell_state is not None:
            e.update(cell_state["errors"](*(np.repeat(w[k], sizes[k]) for k in ("ref", "mlip"))))
        for k, v in e.items():
            reps[k].append(v)
    return {f"{k}_unc": standard_error(v) for k, v in reps.items() if v}


def score_md(
    ref: Trajectory,
    mlip: Trajectory,
    *,
    dims: int = 3,
    n_boot: int = 200,
    seed: int = 0,
    n_bins: int = 500,
    vdos_max_lag_fs: float | None = None,
    rdf_backend: str = "numpy",
    curves: dict | None = None,
    mlip_beads: Trajectory | None = None,
    npt: bool = False,
    pair_visitors: dict | None = None,
    shared: dict | None = None,
) -> dict:
    """Observable errors of ``mlip`` against ``ref`` over matched durations.

    Both trajectories are truncated to the shorter duration (paper: matched-duration segments).
    Then, one named step each: E_RDF (Eq. 4, :func:`rdf_step`) on a shared 0…R_max grid with
    ``n_bins`` bins; pressure MAE (Eq. 7, GPa) and E_P (Eq. 9) when both sides have stress
    (:func:`pressure_step`), ``dims`` = 3 or 2 (slabs: xx, yy); E_VDOS (Eq. 10, :func:`vdos_step`)
    from stored velocities when both sides have them, otherwise from the central-difference
    estimator on both sides (with the two sinc² filters equalised when the frame intervals differ);
    Ē_RPV and L_RPV (Eqs. 11–12, :func:`combined_step`); the diagnostics (:func:`diagnostics_step`);
    the bootstrap uncertainties (:func:`bootstrap_step`) and the reference noise floor.

    ``vdos_max_lag_fs``: VACF window half-width; default half the matched duration on each side.
    ``n_boot``: block-bootstrap replicates for the ``_unc`` entries (0 disables them).
    ``mlip_beads``: for a path-integral run, every bead of every saved step (step-major, P frames
    per centroid frame, :func:`dynamat.io.run_folder.read_bead_trajectory`): E_RDF is then the
    all-bead (quantum) g(r) against the reference, and ``rdf_error_centroid_pct`` the centroid's.
    ``npt``: a variable-cell run: the cell step (:func:`dynamat.scoring.cell.cell_step`) adds the mean-volume,
    volume-histogram and lattice errors with their ``_unc`` and ``_floor`` (keys :data:`NPT_KEYS`), and the
    volume sizes the bootstrap blocks; a fixed-cell score has none of these keys.
    ``curves``: a dict that receives the compared curves (what the report draws, Fig. 3-5 b-f):
    ``rdf_r`` (Å), ``rdf_ref``, ``rdf_mlip``; ``vdos_nu_THz``, ``vdos_ref``, ``vdos_mlip`` (unit
    area over the common range, the MLIP's on the reference's grid); ``p_ref_GPa``, ``p_mlip_GPa``.
    ``pair_visitors``: {"ref" | "mlip": visitor} that ride along in that side's RDF neighbour pass
    (``pair_visitor`` of :func:`~dynamat.metrics.rdf.rdf_histogram`: another scorer's bond angles
    without a second pass); ``shared``: a dict that receives, per side, (its RDF histogram per
    bootstrap block, the visitor it fed or None) — the MLIP's centroid histogram for a PIMD run.

    Diagnostics: the kinetic temperature of each side (equipartition, 3N − 3 dof, from stored or
    estimated velocities) and, when the trajectory names its target temperature, a flag when the
    frame interval it implies is off (:mod:`dynamat.metrics.frame_interval`) — a wrong ``dt_fs``.
    """
    pair = matched_pair(ref, mlip, dims, mlip_beads, npt=npt)
    out: dict = dict.fromkeys(MD_KEYS + (NPT_KEYS if npt else ()))
    out.update(matched_duration_fs=float(min(ref.duration_fs, mlip.duration_fs)), n_frames_ref=pair.ref.n_frames,
               n_frames_mlip=pair.mlip.n_frames, n_boot=int(n_boot), **_block_diagnostics(pair))
    rng = np.random.default_rng(seed)
    res_rdf, rdf_state = rdf_step(pair, n_bins, rdf_backend, pair_visitors, shared)
    res_p, p_state = pressure_step(pair)
    res_vdos, vdos_state = vdos_step(pair, vdos_max_lag_fs)
    for part in (res_rdf, res_p, res_vdos):
        out.update(part)
    out.update(combined_step(out))
    out.update(diagnostics_step(pair, vdos_state["vac"]))
    res_cell, cell_state = cell_step(pair.sides) if npt else ({}, None)
    out.update(res_cell)
    out.update(bootstrap_step(pair, rdf_state, p_state, vdos_state["spectra"], n_boot, rng, cell_state))
    out.update(_reference_floor(pair.ref, rdf_state["hist"]["ref"], rdf_state["r"], pair.vel["ref"], pair.masses["ref"],
                                vdos_state["lags"]["ref"], pair.p.get("ref"), pair.stored))
    if cell_state is not None:
        out.update(cell_state["floor"])
    if curves is not None:
        curves.update(cell_state["curves"] if cell_state is not None else {})
        curves.update(rdf_state["curves"])
        curves.update(p_state["curves"])
        curves.update(vdos_state["curves"])
    return out


def _reference_floor(ref, hist, r, vel, masses, lag, p_ref, stored) -> dict:
    """``<key>_floor``: each error between the first and second half of the reference."""
    out = {}
    k = hist.counts.shape[0]
    if k >= 2:
        # RDF halves at the block boundary nearest M/2 (blocks are equal length but the last)
        half = k // 2
        w1 = np.r_[np.ones(half), np.zeros(k - half)]
        _, g1 = rdf_from_histogram(hist, w1)
        _, g2 = rdf_from_histogram(hist, 1.0 - w1)
        out["rdf_error_pct_floor"] = rdf_error(g1, g2, r)
    m = ref.n_frames
    h = m // 2
    if p_ref is not None:
        out["pressure_mae_GPa_floor"] = pressure_mae(p_ref[:h], p_ref[h : 2 * h])
        out["pressure_hist_error_pct_floor"] = pressure_hist_error(p_ref[:h], p_ref[h : 2 * h])
    if h >= 4:
        lag_h = max(1, min(lag, h // 2))
        halves = [
            spectrum_from_acf(
                vacf_blocks(_FrameWindow(vel, a, a + h), masses, ref.dt_fs, max_lag=lag_h).acf(),
                ref.dt_fs,
            )
            for a in (0, h)
        ]
        out["vdos_error_pct_floor"] = vdos_error(*halves[0], *halves[1])
    floors = {k: out.get(f"{k}_floor") for k in OBSERVABLE_KEYS}
    out.update((f"{k}_floor", v) for k, v in combined_step(floors).items() if v is not None)
    return out


def score_singlepoint(
    ref_energies,
    ref_forces,
    pred_energies,
    pred_forces,
    n_atoms,
    e_iso_ref=None,
    e_iso_pred=None,
    *,
    numbers=None,
) -> dict:
    """Single-point errors of a model on reference frames (paper Eqs. 1–2).

    Energies (M,) eV, forces (M, N, 3) eV/Å. ``e_iso_ref`` / ``e_iso_pred``: isolated-atom
    energies of the reference method and of the model, either as a mapping Z → eV (then pass
    ``numbers``) or directly as the per-configuration sum Σ_i e_iso(Z_i) in eV (scalar or (M,)).
    When given, each side is referenced to its own isolated atoms before Eq. 1, which removes
    the difference of energy zeros between codes. The fluctuation RMSE (mean-subtracted,
    Matbench-discovery's) is reported beside it and needs no referencing. A reference without energies
    (``ref_energies`` None: a LAMMPS dump) or without forces gives None for the errors it cannot have.
    """
    if ref_energies is None:
        return {"energy_rmse_eV_per_atom": None, "force_rmse_eV_per_A": force_rmse(pred_forces, ref_forces),
                "energy_fluctuation_rmse_eV_per_atom": None}
    e_ref = np.asarray(ref_energies, dtype=float).reshape(-1)
    e_pred = np.asarray(pred_energies, dtype=float).reshape(-1)

    def referenced(e, iso, name):
        if iso is None:
            return e
        if isinstance(iso, Mapping):
            if numbers is None:
                raise ValueError(f"{name} is a per-element mapping; pass numbers= too")
            return reference_to_isolated_atoms(e, numbers, iso)
        return e - np.broadcast_to(np.asarray(iso, dtype=float), e.shape)

    if (e_iso_ref is None) != (e_iso_pred is None):
        raise ValueError("give isolated-atom energies for both sides or for neither")
    return {
        "energy_rmse_eV_per_atom": energy_rmse_per_atom(
            referenced(e_pred, e_iso_pred, "e_iso_pred"),
            referenced(e_ref, e_iso_ref, "e_iso_ref"),
            n_atoms,
        ),
        "force_rmse_eV_per_A": None if ref_forces is None else force_rmse(pred_forces, ref_forces),
        "energy_fluctuation_rmse_eV_per_atom": energy_fluctuation_rmse_per_atom(
            e_pred, e_ref, n_atoms
        ),
    }
