"""Score an MLIP trajectory against a reference one, and single-point predictions against labels.

``score_md`` returns a flat dict with stable keys (see ``MD_KEYS``): the paper's observable
errors (Eqs. 4, 7, 9, 10, 11, 12), each with a block-bootstrap standard error ``<key>_unc`` and
a reference noise floor ``<key>_floor`` (see :mod:`dynamat.metrics.uncertainty`), plus
diagnostics. Pressure entries are None — never 0 — when either side has no stress, and so are
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

import numpy as np
from ase.data import atomic_masses

from dynamat.metrics.combined import e_rpv, l_rpv
from dynamat.metrics.energy_force import (
    energy_fluctuation_rmse_per_atom,
    energy_rmse_per_atom,
    force_rmse,
    reference_to_isolated_atoms,
)
from dynamat.metrics.pressure import (
    pressure_GPa,
    pressure_hist_edges,
    pressure_hist_error,
    pressure_hist_error_sensitivity,
    pressure_mae,
    pressure_wasserstein_GPa,
)
from dynamat.metrics.rdf import rdf_error, rdf_from_histogram, rdf_histogram, rdf_r_max
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
from dynamat.scoring.keys import ERROR_KEYS
from dynamat.trajectory import Trajectory

__all__ = ["ERROR_KEYS", "MD_KEYS", "score_md", "score_singlepoint"]

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

#: T_kinetic / T_target outside this range flags a suspect frame interval (T ∝ 1/dt²: a ×1.5
#: error gives ×0.44 or ×2.25). Finite-difference temperatures are first corrected for the
#: central difference's low-pass filter (:func:`fd_temperature_correction`), which otherwise
#: costs ~30 % of the kinetic energy of copper at a 20 fs frame interval.
SUSPECT_T_RATIO = (0.75, 1.33)
#: below this filter transmission a mode is not restored (noise would be amplified)
_FD_MIN_TRANSFER = 0.1


def fd_temperature_correction(acf, dt_fs: float) -> float:
    """Factor that undoes the central difference's filter in a finite-difference temperature.

    Central differences see a mode of frequency ν with amplitude sinc(2ν·dt) (:func:`fd_transfer`),
    so the kinetic energy they measure is ∫S(ν)·sinc²(2ν·dt)dν where S is the true VDOS. From the
    measured (filtered) spectrum S_fd the true kinetic energy is ∫S_fd/sinc² dν (modes whose
    transmission is below 10 % are taken as measured). The factor depends on ν·dt only, i.e. on
    the frames themselves, not on the claimed interval, so it cannot hide a wrong ``dt_fs``.
    """
    nu, s_fd = spectrum_from_acf(acf, dt_fs)
    h = fd_transfer(nu, dt_fs)
    ok = h > _FD_MIN_TRANSFER
    restored = np.where(ok, s_fd / np.where(ok, h, 1.0), s_fd)
    den = np.trapezoid(s_fd, nu)
    return float(np.trapezoid(restored, nu) / den) if den > 0 else 1.0


class _FrameWindow:
    """Frames [t0, t1) of a (M, N, 3) array-like, itself sliceable as v[a:b, c:d]."""

    def __init__(self, arr, t0: int, t1: int):
        self.arr, self.t0, self.t1 = arr, t0, t1
        self.shape = (t1 - t0,) + tuple(arr.shape[1:])

    def __getitem__(self, key):
        ts, rest = (key[0], key[1:]) if isinstance(key, tuple) else (key, ())
        a, b, _ = ts.indices(self.shape[0])
        return self.arr[(slice(self.t0 + a, self.t0 + b), *rest)]


def frame_interval_check(traj: Trajectory, target_K: float | None = None) -> dict:
    """Equipartition check of a trajectory's frame interval: the kinetic temperature (K) from its
    stored velocities, or from central differences corrected for their filter, against the target.

    Returns ``temperature_K``, ``ratio`` (to the target) and ``suspect`` (outside
    :data:`SUSPECT_T_RATIO`; None without a target)."""
    masses = atomic_masses[traj.numbers]
    if traj.velocities is not None:
        t = float(kinetic_temperature(traj.velocities, masses).mean())
    else:
        vel = FiniteDifferenceVelocities(traj.positions, traj.dt_fs, traj.cells, traj.pbc)
        t = float(kinetic_temperature(vel, masses).mean())
        t *= fd_temperature_correction(vacf_blocks(vel, masses, traj.dt_fs).acf(), traj.dt_fs)
    target = target_K or traj.temperature_K
    ratio = t / target if target else None
    lo, hi = SUSPECT_T_RATIO
    return {"temperature_K": t, "ratio": ratio, "suspect": None if ratio is None else not (lo <= ratio <= hi)}


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
) -> dict:
    """Observable errors of ``mlip`` against ``ref`` over matched durations.

    Both trajectories are truncated to the shorter duration (paper: matched-duration segments).
    Then: E_RDF (Eq. 4) on a shared 0…R_max grid with ``n_bins`` bins; pressure MAE (Eq. 7, GPa)
    and E_P (Eq. 9) when both sides have stress, ``dims`` = 3 or 2 (slabs: xx, yy); E_VDOS
    (Eq. 10) from stored velocities when both sides have them, otherwise from the
    central-difference estimator on both sides (with the two sinc² filters equalised when the
    frame intervals differ); Ē_RPV and L_RPV (Eqs. 11–12).

    ``vdos_max_lag_fs``: VACF window half-width; default half the matched duration on each side.
    ``n_boot``: block-bootstrap replicates for the ``_unc`` entries (0 disables them).
    ``mlip_beads``: for a path-integral run, every bead of every saved step (step-major, P frames
    per centroid frame, :func:`dynamat.io.run_folder.read_bead_trajectory`): E_RDF is then the
    all-bead (quantum) g(r) against the reference, and ``rdf_error_centroid_pct`` the centroid's.
    ``curves``: a dict that receives the compared curves (what the report draws, Fig. 3-5 b-f):
    ``rdf_r`` (Å), ``rdf_ref``, ``rdf_mlip``; ``vdos_nu_THz``, ``vdos_ref``, ``vdos_mlip`` (unit
    area over the common range, the MLIP's on the reference's grid); ``p_ref_GPa``, ``p_mlip_GPa``.

    Diagnostics: the kinetic temperature of each side (equipartition, 3N − 3 dof, from stored or
    estimated velocities) and, when the trajectory names its target temperature, a flag if
    T_kin / T_target falls outside :data:`SUSPECT_T_RATIO` — the signature of a wrong ``dt_fs``.
    """
    _check_pair(ref, mlip)
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3, got {dims}")
    duration = min(ref.duration_fs, mlip.duration_fs)
    beads_per_frame = None
    if mlip_beads is not None:
        beads_per_frame, rest = divmod(mlip_beads.n_frames, mlip.n_frames)
        if rest or beads_per_frame < 1:
            raise ValueError(f"{mlip_beads.n_frames} bead frames are not a whole number per {mlip.n_frames} steps")
    ref = ref.truncated_to(duration)
    mlip = mlip.truncated_to(duration)
    if mlip_beads is not None:
        mlip_beads = mlip_beads[: mlip.n_frames * beads_per_frame]
    if min(ref.n_frames, mlip.n_frames) < 8:
        raise ValueError(
            f"matched duration {duration:g} fs leaves {ref.n_frames} ref and {mlip.n_frames} "
            "MLIP frames; need at least 8 on each side"
        )
    out: dict = dict.fromkeys(MD_KEYS)
    out.update(
        matched_duration_fs=float(duration),
        n_frames_ref=ref.n_frames,
        n_frames_mlip=mlip.n_frames,
        n_boot=int(n_boot),
    )
    rng = np.random.default_rng(seed)

    # --- velocities and temperatures -------------------------------------------------------
    stored = ref.velocities is not None and mlip.velocities is not None
    out["velocity_source"] = "stored" if stored else "finite_difference"

    def velocity_source(t: Trajectory):
        if stored:
            return t.velocities
        return FiniteDifferenceVelocities(t.positions, t.dt_fs, t.cells, t.pbc)

    sides = {"ref": ref, "mlip": mlip}
    vel = {k: velocity_source(t) for k, t in sides.items()}
    masses = atomic_masses[ref.numbers]
    masses_m = atomic_masses[mlip.numbers]
    t_kin = {
        "ref": kinetic_temperature(vel["ref"], masses),
        "mlip": kinetic_temperature(vel["mlip"], masses_m),
    }
    for k, t in sides.items():
        out[f"kinetic_temperature_{k}_K"] = float(t_kin[k].mean())

    # --- pressures (needed early: they also inform the block length) ------------------------
    have_p = ref.stress is not None and mlip.stress is not None
    p = {k: pressure_GPa(t.stress, dims) for k, t in sides.items()} if have_p else {}

    # --- block lengths ----------------------------------------------------------------------
    blen = {}
    for k, t in sides.items():
        tau = _tau([t_kin[k], _structural_series(t), t.energies, p.get(k)])
        blen[k] = choose_block_length(t.n_frames, tau)
        out[f"tau_int_frames_{k}"] = tau
        out[f"block_length_frames_{k}"] = blen[k]
    sizes = {k: block_sizes(sides[k].n_frames, blen[k]) for k in sides}

    # --- RDF --------------------------------------------------------------------------------
    r_max = min(rdf_r_max(ref.cells, ref.pbc), rdf_r_max(mlip.cells, mlip.pbc))
    out["rdf_r_max_A"] = r_max
    hist = {
        k: rdf_histogram(
            t.positions, t.cells, n_bins=n_bins, r_max=r_max, pbc=t.pbc,
            block_length=blen[k], backend=rdf_backend,
        )
        for k, t in sides.items()
    }
    r, g_ref = rdf_from_histogram(hist["ref"])
    if mlip_beads is not None:  # quantum g(r): all beads; the centroid one kept under its own name
        _, g_centroid = rdf_from_histogram(hist["mlip"])
        out["rdf_error_centroid_pct"] = rdf_error(g_ref, g_centroid, r)
        hist["mlip"] = rdf_histogram(
            mlip_beads.positions, mlip_beads.cells, n_bins=n_bins, r_max=r_max, pbc=mlip_beads.pbc,
            block_length=blen["mlip"] * beads_per_frame, backend=rdf_backend,
        )
        out["rdf_source"] = "all_beads"
    _, g_mlip = rdf_from_histogram(hist["mlip"])
    out["rdf_error_pct"] = rdf_error(g_ref, g_mlip, r)
    if curves is not None:
        curves.update(rdf_r=r, rdf_ref=g_ref, rdf_mlip=g_mlip)
        if have_p:
            curves.update(p_ref_GPa=p["ref"], p_mlip_GPa=p["mlip"])

    # --- pressure ---------------------------------------------------------------------------
    if have_p:
        out["pressure_mae_GPa"] = pressure_mae(p["ref"], p["mlip"])
        edges = pressure_hist_edges(p["ref"], p["mlip"])
        out["pressure_hist_error_pct"] = pressure_hist_error(p["ref"], p["mlip"], bins=edges)
        sens = pressure_hist_error_sensitivity(p["ref"], p["mlip"])
        out["pressure_hist_bins"] = sens["bins"]
        out["pressure_hist_error_pct_half_bins"] = sens["error_half_bins_pct"]
        out["pressure_hist_error_pct_double_bins"] = sens["error_double_bins_pct"]
        out["pressure_wasserstein_GPa"] = pressure_wasserstein_GPa(p["ref"], p["mlip"])

    # --- VDOS -------------------------------------------------------------------------------
    def lag_frames(t: Trajectory, n_frames: int) -> int:
        if vdos_max_lag_fs is None:
            return max(1, n_frames // 2)
        lag = int(round(vdos_max_lag_fs / t.dt_fs))
        if not 1 <= lag <= n_frames - 1:
            raise ValueError(
                f"vdos_max_lag_fs = {vdos_max_lag_fs} fs is {lag} frames, outside 1…{n_frames - 1}"
            )
        return lag

    lags = {k: lag_frames(t, t.n_frames) for k, t in sides.items()}
    out["vdos_max_lag_fs"] = float(lags["ref"] * ref.dt_fs)
    vac = {
        k: vacf_blocks(vel[k], masses if k == "ref" else masses_m, t.dt_fs,
                       max_lag=lags[k], block_length=blen[k])
        for k, t in sides.items()
    }

    def filters(nu_ref, nu_mlip):
        # Equalise the finite-difference low-pass filters: give each side the other's too.
        if stored or ref.dt_fs == mlip.dt_fs:
            return 1.0, 1.0
        return fd_transfer(nu_ref, mlip.dt_fs), fd_transfer(nu_mlip, ref.dt_fs)

    def spectra(w_ref=None, w_mlip=None):
        nu_r, s_r = spectrum_from_acf(vac["ref"].acf(w_ref), ref.dt_fs)
        nu_m, s_m = spectrum_from_acf(vac["mlip"].acf(w_mlip), mlip.dt_fs)
        fr, fm = filters(nu_r, nu_m)
        return nu_r, s_r * fr, nu_m, s_m * fm

    for k, t in sides.items():  # the frame-interval check, on filter-corrected temperatures
        if not stored:
            out[f"kinetic_temperature_{k}_K"] *= fd_temperature_correction(vac[k].acf(), t.dt_fs)
        if t.temperature_K:
            ratio = out[f"kinetic_temperature_{k}_K"] / t.temperature_K
            lo, hi = SUSPECT_T_RATIO
            out[f"frame_interval_suspect_{k}"] = not (lo <= ratio <= hi)

    spec = spectra()
    out["vdos_error_pct"] = vdos_error(*spec)
    if curves is not None:
        nu_r, s_r, nu_m, s_m = spec
        top = min(nu_r[-1], nu_m[-1])
        keep = nu_r <= top
        nu = nu_r[keep]
        v_r, v_m = s_r[keep], np.interp(nu, nu_m, s_m)
        curves.update(vdos_nu_THz=nu, vdos_ref=v_r / np.trapezoid(v_r, nu),
                      vdos_mlip=v_m / np.trapezoid(v_m, nu))
    out["vdos_w1_error_pct"] = vdos_w1_error(*spec)

    # --- combined ---------------------------------------------------------------------------
    def combine(e_r, e_p, e_v):
        if e_p is None:
            return None, None
        return e_rpv(e_r, e_p, e_v), l_rpv(e_r, e_p, e_v)

    out["E_RPV_pct"], out["L_RPV_pct"] = combine(
        out["rdf_error_pct"], out["pressure_hist_error_pct"], out["vdos_error_pct"]
    )

    # --- block bootstrap --------------------------------------------------------------------
    if n_boot and n_boot >= 2:
        w_all = {k: bootstrap_weights(len(sizes[k]), n_boot, rng) for k in sides}
        reps = {k: [] for k in ERROR_KEYS}
        for i in range(n_boot):
            w = {k: w_all[k][i] for k in sides}
            _, gr = rdf_from_histogram(hist["ref"], w["ref"])
            _, gm = rdf_from_histogram(hist["mlip"], w["mlip"])
            e_r = rdf_error(gr, gm, r)
            e_v = vdos_error(*spectra(w["ref"], w["mlip"]))
            e_p = None
            if have_p:
                fw = {k: np.repeat(w[k], sizes[k]) for k in sides}
                means = {k: np.average(p[k], weights=fw[k]) for k in sides}
                reps["pressure_mae_GPa"].append(abs(means["ref"] - means["mlip"]))
                e_p = _weighted_hist_error(p["ref"], fw["ref"], p["mlip"], fw["mlip"], edges)
                reps["pressure_hist_error_pct"].append(e_p)
            reps["rdf_error_pct"].append(e_r)
            reps["vdos_error_pct"].append(e_v)
            er, lr = combine(e_r, e_p, e_v)
            if er is not None:
                reps["E_RPV_pct"].append(er)
                reps["L_RPV_pct"].append(lr)
        for k, v in reps.items():
            if v:
                out[f"{k}_unc"] = standard_error(v)

    # --- noise floor: first vs second half of the reference ---------------------------------
    out.update(_reference_floor(ref, hist["ref"], r, vel["ref"], masses, lags["ref"],
                                p.get("ref"), stored))
    return out


def _weighted_hist_error(p_ref, w_ref, p_mlip, w_mlip, edges) -> float:
    """Eq. 9 with frame weights (bootstrap replicate) on fixed edges."""
    width = np.diff(edges)
    h_r = np.histogram(p_ref, bins=edges, weights=w_ref)[0] / (w_ref.sum() * width)
    h_m = np.histogram(p_mlip, bins=edges, weights=w_mlip)[0] / (w_mlip.sum() * width)
    return 100.0 * float(np.sum(np.abs(h_r - h_m) * width)) / 2.0


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
    components = ("rdf_error_pct", "pressure_hist_error_pct", "vdos_error_pct")
    parts = [out.get(f"{x}_floor") for x in components]
    if all(v is not None for v in parts):
        out["E_RPV_pct_floor"] = e_rpv(*parts)
        out["L_RPV_pct_floor"] = l_rpv(*parts)
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
    Matbench-discovery's) is reported beside it and needs no referencing.
    """
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
        "force_rmse_eV_per_A": force_rmse(pred_forces, ref_forces),
        "energy_fluctuation_rmse_eV_per_atom": energy_fluctuation_rmse_per_atom(
            e_pred, e_ref, n_atoms
        ),
    }
