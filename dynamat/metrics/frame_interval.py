"""Is a trajectory's frame interval right? Equipartition on its velocities (the one check).

T_kin ∝ 1/dt², so the kinetic temperature of velocities taken at a claimed interval ``dt_fs`` says
whether the frames really are that far apart: a stride or unit mistake (2× in dt is 4× in T) shows,
an AIMD a little off its nominal temperature does not. Used by ``score_md`` (both sides of every
score: ``frame_interval_suspect_*``) and by ``reference import`` (a contradicted interval is refused),
so a file accepted by one is never flagged by the other.

Finite-difference velocities (central differences of positions, no stored velocities) see a mode of
frequency ν with power sinc²(2πν dt) (:func:`dynamat.metrics.vdos.fd_transfer`) and read low — ~30 %
of copper's kinetic energy at 20 fs frames. :func:`fd_correction` undoes that from the measured
spectrum itself: ∫ S(ν)/max(h(ν), :data:`FD_FILTER_FLOOR`) dν ÷ ∫ S(ν) dν. It depends on ν·dt only, i.e. on
the frames, not on the claimed interval, so it cannot hide a wrong ``dt_fs``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dynamat.errors import DynamatError

__all__ = [
    "CHECK_WINDOW",
    "DT_TOLERANCE",
    "FD_FILTER_FLOOR",
    "MIN_TEMPERATURE_K",
    "EquipartitionCheck",
    "check_frame_interval",
    "equipartition_check",
    "fd_correction",
]

#: The one threshold. An interval is suspect when the one equipartition implies differs from it by
#: more than a factor 1 + DT_TOLERANCE either way, or by more than three standard errors of the
#: measurement if that is larger (a short trajectory's temperature is noisy; the check must not flag
#: what the noise cannot resolve). Symmetric in the factor because interval mistakes are factors
#: (a stride of k or 1/k); 1.15 in dt is 0.756–1.32 in T: room for a run a little off its nominal
#: temperature, none for a stride or unit mistake. (Before this module scoring flagged outside
#: 0.75–1.33 in T without the noise term, and the importer allowed ±15 % in dt, i.e. 0.72–1.32 in T.)
DT_TOLERANCE = 0.15
#: The one filter floor. A mode the central difference transmits with less than a quarter of its
#: power (2ν·dt ≳ 0.6) is beyond what the estimator resolves: what sits there is mostly aliasing and
#: noise, which a full 1/h restoration would multiply without bound. Capping the restoration at 4×
#: bounds that and is continuous in h, so a small change of dt cannot switch a mode between restored
#: and not. (Scoring used to restore fully above h = 0.1 and not at all below: a jump at 0.1.)
FD_FILTER_FLOOR = 0.25
#: A target below this is no MD temperature (VASP writes TEBEG = 0.0001 for a relaxation): against it
#: any motion implies an absurd interval (0.0001 K made 0.5 fs frames "look 910 fs apart"), so the
#: check has no target then and suggests no interval; the temperature is what is missing.
MIN_TEMPERATURE_K = 1.0
#: frames of the window the import check uses (mid-trajectory, as Matbench-discovery's converter does)
CHECK_WINDOW = 2000


@dataclass
class EquipartitionCheck:
    """Kinetic temperature of frames at the interval ``dt_fs``, and what it implies for dt."""

    dt_fs: float  # the interval checked
    target_K: float | None  # the temperature the run is said to be at
    raw_K: float  # Σ m v² / (3N − 3) k_B of the velocities as given (stored or central differences)
    fd_correction: float  # ≥ 1: undoes the sinc² filter of central differences (1 for stored velocities)
    temperature_K: float  # raw_K × fd_correction
    stderr_K: float  # block-average standard error of temperature_K
    implied_dt_fs: float | None  # the interval at which temperature_K would equal target_K (None: no target)
    tolerance: float  # allowed max(implied/dt, dt/implied) − 1
    frames_used: int
    coarse_fraction: float = 0.0  # kinetic energy where the filter is below 1/2 (too coarse to trust)

    @property
    def ratio(self) -> float | None:
        """T_kin / T_target (None without a target)."""
        return self.temperature_K / self.target_K if self.target_K else None

    @property
    def has_target(self) -> bool:
        """A target temperature to check against (none, or one under MIN_TEMPERATURE_K, is none)."""
        return self.implied_dt_fs is not None

    @property
    def ok(self) -> bool | None:
        """The interval agrees with equipartition (None without a target temperature)."""
        if self.implied_dt_fs is None:
            return None
        x = self.implied_dt_fs / self.dt_fs
        return bool(x > 0 and max(x, 1.0 / x) - 1.0 <= self.tolerance)


def fd_correction(nu_THz, spectrum, dt_fs: float) -> float:
    """Factor (≥ 1) that undoes the central difference's filter in a kinetic energy.

    ``spectrum``: the measured one-sided power spectrum of finite-difference velocities on the
    uniform grid ``nu_THz`` from 0 (a windowed VACF spectrum or a periodogram):
    ∫ S/max(h, FD_FILTER_FLOOR) dν ÷ ∫ S dν by the trapezoid rule, whose half weights at 0 and the
    top frequency are a one-sided spectrum's Parseval weights (those two bins stand for one
    frequency each, every other for ±ν). A plain sum (what the importer did) over-weights them.
    """
    from dynamat.metrics.vdos import fd_transfer

    nu = np.asarray(nu_THz, dtype=float)
    s = np.asarray(spectrum, dtype=float)
    total = np.trapezoid(s, nu)
    if not total > 0:
        return 1.0
    h = fd_transfer(nu, dt_fs)
    return float(np.trapezoid(s / np.maximum(h, FD_FILTER_FLOOR), nu) / total)


def equipartition_check(t_frames, dt_fs: float, target_K: float | None, correction: float = 1.0,
                        coarse_fraction: float = 0.0) -> EquipartitionCheck:
    """The verdict from per-frame kinetic temperatures ``t_frames`` (K) of velocities at ``dt_fs``.

    ``correction``: :func:`fd_correction` for finite-difference velocities, 1 for stored ones. The
    standard error is from up to 10 block means (at least 20 frames a block), and the tolerance is
    :data:`DT_TOLERANCE` or 3 standard errors of dt, whichever is larger (T ∝ 1/dt²: a relative
    error s in T is s/2 in dt)."""
    t_frames = np.asarray(t_frames, dtype=float)
    w = len(t_frames)
    raw = float(t_frames.mean())
    temp = raw * correction
    nb = max(2, min(10, w // 20))
    blocks = np.array([b.mean() for b in np.array_split(t_frames, nb)]) * correction
    stderr = float(blocks.std(ddof=1) / np.sqrt(nb))
    implied = None
    if target_K is not None and target_K >= MIN_TEMPERATURE_K:
        implied = float(dt_fs * np.sqrt(temp / target_K)) if temp > 0 else float("inf")
    tol = max(DT_TOLERANCE, 3.0 * 0.5 * stderr / temp if temp > 0 else DT_TOLERANCE)
    return EquipartitionCheck(float(dt_fs), None if target_K is None else float(target_K), raw,
                              float(correction), temp, stderr, implied, float(tol), w, float(coarse_fraction))


def check_frame_interval(positions, cells, pbc, numbers, dt_fs: float, temperature_K: float,
                         window: int = CHECK_WINDOW) -> EquipartitionCheck:
    """Equipartition check of a frame interval from positions alone, on up to ``window`` frames
    from the middle (what ``reference import`` runs before writing a reference).

    ``positions`` (M, N, 3) Å (an h5py dataset works: only the window is read), ``cells`` (M, 3, 3)
    or (3, 3) Å, ``dt_fs`` the claimed time between frames, ``temperature_K`` the run's temperature.
    Velocities by central differences (minimum image), corrected by :func:`fd_correction` of their
    mass-weighted periodogram (Parseval: its integral is the kinetic energy measured).
    """
    from ase.data import atomic_masses

    from dynamat.metrics.vdos import FiniteDifferenceVelocities, fd_transfer, kinetic_temperature

    m = int(positions.shape[0])
    if m < 4:
        raise DynamatError(f"{m} frames are too few to check the frame interval by equipartition")
    w = min(window, m)
    t0 = (m - w) // 2
    pos = np.asarray(positions[t0 : t0 + w], dtype=float)
    cells = np.asarray(cells[t0 : t0 + w] if np.ndim(cells) == 3 else cells, dtype=float)
    masses = atomic_masses[np.asarray(numbers, int)]
    v = FiniteDifferenceVelocities(pos, dt_fs, cells, pbc)[:, :]
    t_frames = kinetic_temperature(v, masses, remove_com=True)
    v = v - (np.einsum("n,fnk->fk", masses, v) / masses.sum())[:, None, :]  # COM-free, as t_frames
    spec = np.einsum("n,fnk->f", masses, np.abs(np.fft.rfft(v, axis=0)) ** 2)
    nu_THz = np.fft.rfftfreq(w, d=dt_fs) * 1e3
    total = spec.sum()
    coarse = float(spec[fd_transfer(nu_THz, dt_fs) < 0.5].sum() / total) if total > 0 else 0.0
    return equipartition_check(t_frames, dt_fs, temperature_K, fd_correction(nu_THz, spec, dt_fs), coarse)
