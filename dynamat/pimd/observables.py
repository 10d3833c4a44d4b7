"""Quantum observables of path-integral runs: ⟨K_cv⟩ per species and the nuclear quantum effects on
a model's observables (a P = 1 run against a P > 1 run, through the scoring pipeline's steps). The
all-bead (quantum) g(r) is :func:`dynamat.metrics.all_bead_rdf`.

Runs come from the one supervisor (``dynamat run --beads P``, :func:`dynamat.runner.supervise`);
folders are read by :mod:`dynamat.io.run_folder`. Nothing here reimplements a metric.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from ase.data import atomic_masses, atomic_numbers

from dynamat.errors import DynamatError
from dynamat.io.ipi_output import read_properties
from dynamat.io.run_folder import (
    PREFIX,
    bead_files,
    input_info,
    read_bead_trajectory,
    read_centroid_trajectory,
    read_run_trajectory,
    species_counts,
)
from dynamat.layout import RunFolder
from dynamat.metrics.uncertainty import block_bootstrap_mean_se, integrated_autocorrelation_time
from dynamat.scoring.core import matched_pair, pressure_step, rdf_step, vdos_step
from dynamat.trajectory import Trajectory
from dynamat.units import AMU_A2_PER_FS2_TO_EV, KB_EV_PER_K

_KCV = "kinetic_cv{electronvolt}"
_KTD = "kinetic_td{electronvolt}"
_KCV_SPECIES = re.compile(r"^kinetic_cv\{electronvolt\}\((\w+)\)$")


def _discard(n: int, discard_fraction: float) -> slice:
    if not 0.0 <= discard_fraction < 1.0:
        raise ValueError(f"discard_fraction must be in [0, 1), got {discard_fraction}")
    return slice(int(np.floor(n * discard_fraction)), None)


@dataclass
class KineticEnergy:
    """⟨K_cv⟩ of one species (or ``all`` atoms) of a PIMD run, with its statistical error."""

    species: str
    n_atoms: int
    nbeads: int
    mean_eV: float  # ⟨K_cv⟩ summed over these atoms
    se_eV: float  # block-bootstrap standard error of mean_eV
    n_samples: int
    tau_int_frames: float
    temperature_K: float | None = None

    @property
    def per_atom_eV(self) -> float:
        return self.mean_eV / self.n_atoms

    @property
    def per_atom_se_eV(self) -> float:
        return self.se_eV / self.n_atoms

    @property
    def per_dof_eV(self) -> float:
        return self.mean_eV / (3 * self.n_atoms)

    @property
    def per_dof_se_eV(self) -> float:
        return self.se_eV / (3 * self.n_atoms)

    @property
    def classical_per_atom_eV(self) -> float | None:
        """3/2 k_B T, what K_cv is for P = 1 (and any P in the classical limit)."""
        return None if self.temperature_K is None else 1.5 * KB_EV_PER_K * self.temperature_K

    def as_dict(self) -> dict:
        d = asdict(self)
        d.update(per_atom_eV=self.per_atom_eV, per_atom_se_eV=self.per_atom_se_eV,
                 per_dof_eV=self.per_dof_eV, per_dof_se_eV=self.per_dof_se_eV,
                 classical_per_atom_eV=self.classical_per_atom_eV)
        return d


def _mean_se(x: np.ndarray, seed: int = 0) -> tuple[float, float, float]:
    """Mean, block-bootstrap standard error and τ_int (frames) of a series."""
    x = np.asarray(x, dtype=float)
    if len(x) < 2 or np.ptp(x) == 0:
        return float(x.mean()), 0.0, 0.5
    tau = integrated_autocorrelation_time(x)
    return float(x.mean()), float(block_bootstrap_mean_se(x, seed=seed) or 0.0), tau


def quantum_kinetic_energy(
    run_dir: str | Path, *, prefix: str = PREFIX, discard_fraction: float = 0.1
) -> dict[str, KineticEnergy]:
    """⟨K_cv⟩ (centroid-virial estimator) per species and for ``all`` atoms, from simulation.out.

    The first ``discard_fraction`` of the rows is dropped (the ring polymers start collapsed).
    Errors are block-bootstrap standard errors (:func:`dynamat.metrics.block_bootstrap_mean_se`).
    A run without ``kinetic_cv`` columns (a classical NVT template) gets the classical
    3/2 N k_B T, exact at P = 1, with zero error.
    """
    run_dir = Path(run_dir)
    props = read_properties(RunFolder(run_dir, prefix).properties)
    info = input_info(run_dir)
    counts = species_counts(run_dir, prefix)
    n_all = sum(counts.values())
    nbeads = info.get("nbeads") or max(1, len(bead_files(run_dir, "pos", prefix)))
    temp = info.get("temperature_K")
    keep = _discard(len(props.get("step", [])), discard_fraction)
    series: dict[str, np.ndarray] = {}
    if _KCV in props:
        series["all"] = props[_KCV][keep]
        for key, col in props.items():
            m = _KCV_SPECIES.match(key)
            if m:
                series[m.group(1)] = col[keep]
        if len(counts) == 1:
            series.setdefault(next(iter(counts)), series["all"])
    elif nbeads == 1 and temp is not None:
        n = len(props.get("step", [])[keep])
        series = {s: np.full(max(n, 1), 1.5 * c * KB_EV_PER_K * temp) for s, c in {"all": n_all, **counts}.items()}
    else:
        raise DynamatError(f"{run_dir}: no kinetic_cv column in {prefix}.out")
    out = {}
    for name, x in series.items():
        if len(x) == 0:
            raise DynamatError(f"{run_dir}: no properties rows left after discarding {discard_fraction:.0%}")
        mean, se, tau = _mean_se(x)
        out[name] = KineticEnergy(species=name, n_atoms=n_all if name == "all" else counts.get(name, 0),
                                  nbeads=nbeads, mean_eV=mean, se_eV=se, n_samples=len(x),
                                  tau_int_frames=tau, temperature_K=temp)
    return out


# ---------------------------------------------------------------------------------------------
# Quantum vs classical


def _kinetic_classical_sampled(traj: Trajectory, symbol: str | None) -> tuple[float, float] | None:
    """⟨½ m v²⟩ (eV) of one species (or all atoms) from stored velocities, with its error."""
    if traj.velocities is None:
        return None
    sel = np.ones(traj.n_atoms, bool) if symbol is None else traj.numbers == atomic_numbers[symbol]
    m = atomic_masses[traj.numbers[sel]]
    k = 0.5 * np.einsum("n,fnk->f", m, traj.velocities[:, sel] ** 2) * AMU_A2_PER_FS2_TO_EV
    mean, se, _ = _mean_se(k)
    return mean, se


def _kinetic_rows(kq: dict[str, KineticEnergy], cl: Trajectory) -> dict:
    """Per species and ``all``: ⟨K_cv⟩ per atom ± error, the classical 3/2 k_B T, the sampled classical
    ⟨½mv²⟩ where velocities exist, and the quantum excess in percent."""
    kin = {}
    for name, k in kq.items():
        sampled = _kinetic_classical_sampled(cl, None if name == "all" else name)
        row = {"n_atoms": k.n_atoms, "quantum_per_atom_eV": k.per_atom_eV, "quantum_per_atom_se_eV": k.per_atom_se_eV,
               "classical_per_atom_eV": k.classical_per_atom_eV}
        if sampled is not None:
            row["classical_sampled_per_atom_eV"] = sampled[0] / k.n_atoms
            row["classical_sampled_per_atom_se_eV"] = sampled[1] / k.n_atoms
        if k.classical_per_atom_eV:
            row["quantum_excess_pct"] = 100.0 * (k.per_atom_eV / k.classical_per_atom_eV - 1.0)
        kin[name] = row
    return kin


def _observable_differences(cl: Trajectory, qc: Trajectory, qb: Trajectory, n_bins: int, dims: int,
                            vdos_max_lag_fs: float | None) -> dict:
    """E_RDF, pressure and VDOS errors of the quantum run against the classical one, through the scoring
    pipeline's own steps (:mod:`dynamat.scoring.core`, matched durations, the classical run as reference),
    and both runs' mean pressure and potential energy over the same frames."""
    try:
        pair = matched_pair(cl, qc, dims, qb)
    except ValueError as exc:
        raise DynamatError(f"cannot compare the classical and quantum runs: {exc}") from None
    rdf, rdf_state = rdf_step(pair, n_bins)
    press, _ = pressure_step(pair)
    vd, _ = vdos_step(pair, vdos_max_lag_fs)
    curves = rdf_state["curves"]
    return {
        "rdf_r_max_A": float(rdf["rdf_r_max_A"]),
        "rdf_error_pct": rdf["rdf_error_pct"],
        "rdf_error_centroid_pct": rdf["rdf_error_centroid_pct"],
        "rdf": {"r_A": curves["rdf_r"], "g_classical": curves["rdf_ref"], "g_quantum_beads": curves["rdf_mlip"],
                "g_quantum_centroid": rdf_state["g_centroid"]},
        "pressure_mae_GPa": press.get("pressure_mae_GPa"),
        "pressure_hist_error_pct": press.get("pressure_hist_error_pct"),
        "vdos_error_pct": vd["vdos_error_pct"],
        "velocity_source": "stored" if pair.stored else "finite_difference",
        "matched_duration_fs": float(pair.ref.duration_fs),
        **_means(pair.ref, pair.mlip, pair.p),
    }


def _means(cl: Trajectory, qc: Trajectory, p: dict) -> dict:
    """Mean pressures (GPa) and potential energies per atom (eV) of both runs ± block-bootstrap errors."""
    out: dict = dict.fromkeys(("pressure_classical_GPa", "pressure_quantum_GPa", "pressure_difference_GPa"))
    if p:
        m_cl, se_cl, _ = _mean_se(p["ref"])
        m_q, se_q, _ = _mean_se(p["mlip"])
        out.update(pressure_classical_GPa=m_cl, pressure_classical_se_GPa=se_cl,
                   pressure_quantum_GPa=m_q, pressure_quantum_se_GPa=se_q, pressure_difference_GPa=m_q - m_cl)
    for key, t in (("classical", cl), ("quantum", qc)):
        if t.energies is not None:
            m, se, _ = _mean_se(t.energies)
            out[f"potential_{key}_eV_per_atom"] = m / t.n_atoms
            out[f"potential_{key}_se_eV_per_atom"] = se / t.n_atoms
    return out


def quantum_classical_differences(
    classical_dir: str | Path,
    quantum_dir: str | Path,
    *,
    prefix: str = PREFIX,
    discard_fraction: float = 0.1,
    n_bins: int = 200,
    dims: int = 3,
    vdos_max_lag_fs: float | None = None,
) -> dict:
    """Nuclear quantum effects on one model's observables: a P = 1 run against a P > 1 run.

    Both are i-PI run folders of the same model and system (the classical one from either
    template). After discarding the first ``discard_fraction`` of each, the result holds:

    * ``kinetic``: per species and ``all``, ⟨K_cv⟩ per atom of the quantum run ± error, the
      classical 3/2 k_B T, the sampled classical ⟨½mv²⟩ where velocities exist, and the quantum
      excess in percent;
    * the observable errors of the quantum run with the classical one as the reference, computed by
      the scoring pipeline's steps (``score_md``'s), so over matched durations:
      ``rdf_error_pct`` (Eq. 4) of the all-bead RDF, ``rdf_error_centroid_pct`` of the centroid RDF
      (``rdf`` holds r and the three g(r)); ``pressure_mae_GPa`` (Eq. 7) and
      ``pressure_hist_error_pct`` (Eq. 9) of the configurational pressure, the quantum side's from the
      bead-averaged virial (i-PI's ``virial_cv``, without the centroid-virial kinetic term 2ΔK_cv/3V,
      as the classical side has no kinetic term either); ``vdos_error_pct``
      (Eq. 10) of the centroid VDOS (meaningful for TRPMD; PILE-L's local centroid thermostat
      broadens it), from stored velocities or central differences as in scoring;
      ``matched_duration_fs``;
    * pressures (configurational, GPa; quantum from ``virial_cv``): the means ± error and their
      signed difference, and the potential energy per atom of both sides ± error, over the same
      matched durations (so |pressure_difference_GPa| is pressure_mae_GPa).
    """
    classical_dir, quantum_dir = Path(classical_dir), Path(quantum_dir)
    cl = read_run_trajectory(classical_dir, prefix)
    qc = read_centroid_trajectory(quantum_dir, prefix)
    qb = read_bead_trajectory(quantum_dir, prefix)
    if not np.array_equal(np.sort(cl.numbers), np.sort(qc.numbers)):
        raise DynamatError("the classical and quantum runs hold different compositions")
    qb = qb[np.flatnonzero(np.isin(qb.steps, qc.steps))]  # the steps both the centroid and every bead have
    qc = qc[np.flatnonzero(np.isin(qc.steps, qb.steps))]
    cl = cl[_discard(cl.n_frames, discard_fraction)]
    qc = qc[_discard(qc.n_frames, discard_fraction)]
    nb = len(bead_files(quantum_dir, "pos", prefix))
    qb = qb[_discard(qb.n_frames // nb, discard_fraction).start * nb:]
    out: dict = {
        "nbeads_classical": input_info(classical_dir).get("nbeads", 1),
        "nbeads_quantum": input_info(quantum_dir).get("nbeads", nb),
        "temperature_K": qc.temperature_K,
        "discard_fraction": discard_fraction,
        "n_frames_classical": cl.n_frames,
        "n_frames_quantum": qc.n_frames,
    }
    kq = quantum_kinetic_energy(quantum_dir, prefix=prefix, discard_fraction=discard_fraction)
    out["kinetic"] = _kinetic_rows(kq, cl)
    out.update(_observable_differences(cl, qc, qb, n_bins, dims, vdos_max_lag_fs))
    return out
