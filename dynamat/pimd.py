"""Path-integral MD (PIMD) with i-PI: runs, readers and analysis of nuclear quantum effects.

A PIMD run (``MDSettings.nbeads = P > 1``) uses ``ipi_inputs/pimd_pile_l.xml`` (PILE-L, statics)
or ``pimd_trpmd.xml`` (thermostatted RPMD, centroid dynamics) and leaves, besides the NVT outputs:

* ``simulation.out`` with ``kinetic_cv`` (centroid-virial quantum kinetic energy, total and per
  species, e.g. ``kinetic_cv{electronvolt}(Cu)``), ``kinetic_td`` (primitive estimator) and
  ``virial_cv`` (the bead-averaged configurational virial; for P > 1 i-PI's ``virial_md`` is the
  *sum* over beads);
* ``simulation.pos_<b>.extxyz`` / ``vel_<b>`` per bead (``b`` zero-padded to the digits of P);
* ``simulation.xc.extxyz`` / ``vc`` with the centroid positions and velocities.

Readers here turn these into :class:`~dynamat.trajectory.Trajectory` objects — the centroid
trajectory (positions, velocities, configurational stress from ``virial_cv``) and the full-bead
trajectory (every bead of every saved step as one frame, which is what the quantum RDF averages
over) — and estimate ⟨K_cv⟩ per species with a block-bootstrap error. The comparisons reuse
:mod:`dynamat.metrics`; nothing here reimplements a metric.

:func:`run_pimd` starts i-PI and one or several ``dynamat-driver`` processes on a private unix
socket and supervises them to the end (for tests, benchmarks and :func:`bead_convergence`);
``dynamat run`` will do the same through :func:`dynamat.runner.run_md` once it passes ``nbeads``.
"""

from __future__ import annotations

import json
import re
import shutil
import signal
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import ase
import ase.io
import click
import numpy as np
from ase import units
from ase.data import atomic_masses, atomic_numbers

from dynamat import processes
from dynamat.errors import DynamatError
from dynamat.io.ipi_output import last_properties_row, read_ipi_run, read_ipi_xyz, read_properties
from dynamat.ipi_input import MDSettings, write_inputs
from dynamat.metrics.pressure import pressure_GPa, pressure_hist_error, pressure_mae
from dynamat.metrics.rdf import rdf_error, rdf_from_histogram, rdf_histogram, rdf_r_max
from dynamat.metrics.uncertainty import block_bootstrap_mean_se, integrated_autocorrelation_time
from dynamat.metrics.vdos import vdos, vdos_error
from dynamat.trajectory import Trajectory
from dynamat.units import AMU_A2_PER_FS2_TO_EV, KB_EV_PER_K

__all__ = [
    "BeadConvergence",
    "KineticEnergy",
    "PIMDRun",
    "bead_convergence",
    "bead_files",
    "beads_convergence_command",
    "full_bead_rdf",
    "quantum_classical_differences",
    "quantum_kinetic_energy",
    "read_bead_trajectory",
    "read_centroid_trajectory",
    "read_run_trajectory",
    "run_pimd",
]

PREFIX = "simulation"
_KCV = "kinetic_cv{electronvolt}"
_KTD = "kinetic_td{electronvolt}"
_KCV_SPECIES = re.compile(r"^kinetic_cv\{electronvolt\}\((\w+)\)$")


# ---------------------------------------------------------------------------------------------
# Running i-PI with one or several drivers


@dataclass
class PIMDRun:
    """What :func:`run_pimd` did. Seconds per step exclude the warm-up steps."""

    run_dir: Path
    model: str
    nbeads: int
    batch_size: int
    n_drivers: int
    steps: int
    wall_seconds: float
    seconds_per_step_mean: float | None = None
    seconds_per_step_median: float | None = None
    driver_timings: list = field(default_factory=list)  # the drivers' timing files, parsed


def _last_step(props: Path) -> int | None:
    row = last_properties_row(props)
    return None if row is None else int(row[0])


def run_pimd(
    model: str,
    atoms: ase.Atoms,
    settings: MDSettings,
    run_dir: str | Path,
    *,
    batch_size: int | None = None,
    n_drivers: int = 1,
    driver_args: Sequence[str] = (),
    driver_cmd: str | None = None,
    driver_threads: int | None = None,
    extra_outputs: str = "",
    overwrite: bool = False,
    timeout_s: float = 3600.0,
    start_timeout_s: float = 120.0,
    warmup_steps: int | None = None,
) -> PIMDRun:
    """Runs i-PI (``settings``, ``settings.nbeads`` beads) with ``n_drivers`` drivers of ``model``.

    ``batch_size``: structures per socket request (default: the bead count, i.e. all beads in
    one request). With ``n_drivers > 1`` i-PI hands requests to whichever driver is free, so
    ``batch_size=1, n_drivers=P`` evaluates the beads in parallel processes. ``driver_threads``
    is passed as ``--threads`` to every driver. ``extra_outputs``: i-PI ``<output>`` elements
    appended to the template's (e.g. a forces trajectory). i-PI runs in ``run_dir`` on a private
    unix socket; the run fails with :class:`DynamatError` if a process dies, i-PI stops early or
    ``timeout_s`` passes. No process is left behind.
    """
    run_dir = Path(run_dir)
    if run_dir.exists() and any(run_dir.iterdir()):
        if not overwrite:
            raise DynamatError(f"{run_dir} is not empty; pass overwrite=True to replace it")
        shutil.rmtree(run_dir)
    if n_drivers < 1:
        raise DynamatError(f"n_drivers must be >= 1, got {n_drivers}")
    nbeads = int(settings.nbeads)
    batch = int(batch_size or nbeads)
    sock_dir = Path(tempfile.mkdtemp(prefix="dm"))  # 0700, short: unix socket paths are limited
    xml = write_inputs(atoms, settings, run_dir, mode="unix", address="s",
                       sockets_prefix=f"{sock_dir}/", prefix=PREFIX, batch_size=batch)
    if extra_outputs:
        text = xml.read_text()
        xml.write_text(text.replace("</output>", f"  {extra_outputs.strip()}\n  </output>", 1))
    props = run_dir / f"{PREFIX}.out"
    ipi = None
    drivers: list = []
    samples: list[tuple[float, int]] = []
    t0 = time.monotonic()
    clean = False
    try:
        ipi = processes.start([processes.executable("i-pi"), xml.name], run_dir, run_dir / "ipi.log")
        sock = sock_dir / "s"
        while not sock.exists():
            if ipi.poll() is not None:
                raise DynamatError(f"i-PI stopped before opening its socket: {processes.last_line(run_dir / 'ipi.log')}")
            if time.monotonic() - t0 > start_timeout_s:
                raise DynamatError("i-PI did not open its socket within the start timeout")
            time.sleep(0.02)
        for i in range(n_drivers):
            tag = "" if n_drivers == 1 else f"_{i}"
            cmd = processes.driver_command(driver_cmd) + [
                "--model", model, "--unix", str(sock),
                "--timing-file", str(run_dir / f"driver_timing{tag}.json"), *driver_args,
            ]
            if driver_threads:
                cmd += ["--threads", str(int(driver_threads))]
            drivers.append(processes.start(cmd, run_dir, run_dir / f"driver{tag}.log"))
        while ipi.poll() is None:
            time.sleep(0.05)
            now = time.monotonic()
            step = _last_step(props)
            if step is not None and (not samples or step > samples[-1][1]):
                samples.append((now, step))
            for i, d in enumerate(drivers):
                if d.poll() is not None:
                    time.sleep(1.0)  # a driver that got EXIT leaves just before i-PI does
                    if ipi.poll() is None:
                        tag = "" if n_drivers == 1 else f"_{i}"
                        msg = processes.last_line(run_dir / f"driver{tag}.log", "no message")
                        raise DynamatError(f"driver {i} exited (code {d.returncode}): {msg}")
            if now - t0 > timeout_s:
                raise DynamatError(f"PIMD run in {run_dir} exceeded {timeout_s:.0f} s")
        if ipi.returncode != 0:
            raise DynamatError(f"i-PI stopped (code {ipi.returncode}): {processes.last_line(run_dir / 'ipi.log')}")
        done = _last_step(props) or 0
        if done < settings.steps:
            raise DynamatError(f"i-PI ended at step {done} of {settings.steps}")
        samples.append((time.monotonic(), done))
        clean = True
        for d in drivers:
            try:
                d.wait(timeout=30)
            except Exception:
                pass
    finally:
        if not clean:
            processes.stop(ipi, signal.SIGTERM, grace_s=10)
        processes.stop(ipi)
        for d in drivers:
            processes.stop(d, signal.SIGTERM, grace_s=5)
        shutil.rmtree(sock_dir, ignore_errors=True)
    from dynamat.runner import step_timing

    warm = max(settings.stride, settings.steps // 10) if warmup_steps is None else warmup_steps
    mean, median = step_timing(samples, warmup_steps=warm)
    timings = []
    for f in sorted(run_dir.glob("driver_timing*.json")):
        try:
            timings.append(json.loads(f.read_text()))
        except (OSError, ValueError):
            pass
    return PIMDRun(run_dir=run_dir, model=model, nbeads=nbeads, batch_size=batch, n_drivers=n_drivers,
                   steps=settings.steps, wall_seconds=time.monotonic() - t0,
                   seconds_per_step_mean=mean, seconds_per_step_median=median, driver_timings=timings)


# ---------------------------------------------------------------------------------------------
# Readers


def bead_files(run_dir: str | Path, what: str = "pos", prefix: str = PREFIX) -> list[Path]:
    """The per-bead trajectory files ``<prefix>.<what>_<b>.extxyz``, in bead order.

    i-PI zero-pads the bead index to the number of digits of P (``pos_00`` … ``pos_15``).
    """
    pat = re.compile(rf"^{re.escape(prefix)}\.{re.escape(what)}_(\d+)\.extxyz$")
    found = [(int(m.group(1)), p) for p in Path(run_dir).iterdir() if (m := pat.match(p.name))]
    return [p for _, p in sorted(found)]


def _input_info(run_dir: Path) -> dict:
    """nbeads, temperature (K) and time step (fs) from the run's input.xml, where present."""
    out: dict = {}
    try:
        root = ET.parse(run_dir / "input.xml").getroot()
    except (OSError, ET.ParseError):
        return out
    init = root.find("system/initialize")
    if init is not None and init.get("nbeads"):
        out["nbeads"] = int(init.get("nbeads"))
    temp = root.find("system/ensemble/temperature")
    if temp is not None and (temp.get("units") or "kelvin") == "kelvin":
        out["temperature_K"] = float(temp.text)
    return out


def _species_counts(run_dir: Path, prefix: str) -> dict[str, int]:
    """Atoms per element, from init.xyz or else the first frame of a trajectory."""
    for cand in [run_dir / "init.xyz", run_dir / f"{prefix}.xc.extxyz", *bead_files(run_dir, "pos", prefix)[:1]]:
        if cand.exists():
            try:
                symbols = ase.io.read(cand, index=0).get_chemical_symbols()
            except Exception:
                continue
            return {s: symbols.count(s) for s in dict.fromkeys(symbols)}
    raise DynamatError(f"cannot tell the species of the run in {run_dir} (no init.xyz or trajectory)")


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
    props = read_properties(run_dir / f"{prefix}.out")
    info = _input_info(run_dir)
    counts = _species_counts(run_dir, prefix)
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


def _props_at(run_dir: Path, prefix: str, steps: np.ndarray) -> tuple[dict, np.ndarray | None]:
    props_file = run_dir / f"{prefix}.out"
    if not props_file.exists():
        return {}, None
    props = read_properties(props_file)
    if "step" not in props or not len(props["step"]):
        return {}, None
    p_steps = props["step"].astype(int)
    if len(np.intersect1d(steps, p_steps)) != len(steps):
        return {}, None
    return props, np.searchsorted(p_steps, steps)


def read_centroid_trajectory(run_dir: str | Path, prefix: str = PREFIX, name: str = "") -> Trajectory:
    """The ring-polymer centroids of a PIMD run as a Trajectory.

    Positions from ``x_centroid`` (Å), velocities from ``v_centroid`` (Å/fs), energies the
    bead-averaged potential (eV), stress minus ``virial_cv`` (bead-averaged configurational
    virial, ASE sign and Voigt order); frames are the steps present in both files.
    """
    run_dir = Path(run_dir)
    xc_file = run_dir / f"{prefix}.xc.extxyz"
    if not xc_file.exists():
        raise DynamatError(f"no centroid trajectory in {run_dir} (expected {xc_file.name})")
    xc = read_ipi_xyz(xc_file)
    if xc["data"] is None or not len(xc["steps"]):
        raise DynamatError(f"{xc_file} holds no frames")
    steps = xc["steps"]
    velocities = None
    vc_file = run_dir / f"{prefix}.vc.extxyz"
    if vc_file.exists():
        vc = read_ipi_xyz(vc_file)
        if vc["data"] is not None:
            steps = np.intersect1d(steps, vc["steps"])
            # i-PI's ase format writes pos (zeros here) then the quantity: take the last 3 columns
            velocities = vc["data"][np.searchsorted(vc["steps"], steps), :, -3:] * units.fs
    idx = np.searchsorted(xc["steps"], steps)
    props, j = _props_at(run_dir, prefix, steps)
    stress = energies = dt_fs = None
    if j is not None:
        nb = _input_info(run_dir).get("nbeads", 1)
        if "virial_cv{ev/ang3}" in props:
            vir = props["virial_cv{ev/ang3}"][j]
        elif "virial_md{ev/ang3}" in props:
            vir = props["virial_md{ev/ang3}"][j] / nb  # virial_md sums the beads
        else:
            vir = None
        if vir is not None:
            stress = -vir[:, [0, 1, 2, 5, 4, 3]]  # i-PI xx yy zz xy xz yz -> ASE Voigt
        if "potential{electronvolt}" in props:
            energies = props["potential{electronvolt}"][j]
        if "time{femtosecond}" in props and len(steps) > 1:
            dt_fs = float(np.median(np.diff(props["time{femtosecond}"][j])))
    numbers = np.array([atomic_numbers[s] for s in xc["symbols"]])
    return Trajectory(
        numbers=numbers, positions=xc["data"][idx, :, -3:], cells=xc["cells"][idx], dt_fs=dt_fs,
        velocities=velocities, energies=energies, stress=stress, steps=steps,
        temperature_K=_input_info(run_dir).get("temperature_K"), name=name or f"{run_dir.name}:centroid",
    )


def read_bead_positions(run_dir: str | Path, prefix: str = PREFIX) -> dict:
    """All beads: steps (M,), symbols, cells (M, 3, 3) and positions (M, P, N, 3) Å."""
    files = bead_files(run_dir, "pos", prefix)
    if not files:
        raise DynamatError(f"no per-bead position files {prefix}.pos_<b>.extxyz in {run_dir}")
    beads = [read_ipi_xyz(f) for f in files]
    steps = beads[0]["steps"]
    for b in beads[1:]:
        steps = np.intersect1d(steps, b["steps"])
    if not len(steps):
        raise DynamatError(f"the bead trajectories in {run_dir} share no step")
    pos = np.stack([b["data"][np.searchsorted(b["steps"], steps), :, :3] for b in beads], axis=1)
    cells = beads[0]["cells"][np.searchsorted(beads[0]["steps"], steps)]
    return {"steps": steps, "symbols": beads[0]["symbols"], "cells": cells, "positions": pos}


def read_bead_trajectory(run_dir: str | Path, prefix: str = PREFIX, name: str = "") -> Trajectory:
    """Every bead of every saved step as one frame (step-major: step 0 beads 0…P−1, step 1 …).

    Bead b of atom i interacts only with bead b of the other atoms, so the quantum pair
    distribution is the average over beads of each bead's g(r) — exactly the RDF of these
    frames (:func:`full_bead_rdf`). The frames are not equally spaced in time (``dt_fs`` is
    None): use it for structural averages, and the centroid trajectory for dynamics.
    """
    d = read_bead_positions(run_dir, prefix)
    m, p, n, _ = d["positions"].shape
    numbers = np.array([atomic_numbers[s] for s in d["symbols"]])
    return Trajectory(
        numbers=numbers, positions=d["positions"].reshape(m * p, n, 3),
        cells=np.repeat(d["cells"], p, axis=0), steps=np.repeat(d["steps"], p),
        temperature_K=_input_info(Path(run_dir)).get("temperature_K"),
        name=name or f"{Path(run_dir).name}:beads",
    )


def read_run_trajectory(run_dir: str | Path, prefix: str = PREFIX) -> Trajectory:
    """The physical trajectory of a run: the centroids of a PIMD-template run (any P, P = 1
    included), else the classical NVT outputs (:func:`dynamat.io.ipi_output.read_ipi_run`)."""
    run_dir = Path(run_dir)
    if (run_dir / f"{prefix}.xc.extxyz").exists():
        return read_centroid_trajectory(run_dir, prefix)
    traj = read_ipi_run(run_dir, prefix)
    traj.temperature_K = _input_info(run_dir).get("temperature_K")
    return traj


def full_bead_rdf(traj: Trajectory, *, n_bins: int = 200, r_max: float | None = None):
    """(r, g) of a full-bead trajectory (:func:`read_bead_trajectory`), by :func:`dynamat.metrics.rdf_histogram`."""
    hist = rdf_histogram(traj.positions, traj.cells, n_bins=n_bins, r_max=r_max, pbc=traj.pbc)
    return rdf_from_histogram(hist)


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
    * ``rdf_error_pct``: E_RDF (Eq. 4, :func:`~dynamat.metrics.rdf_error`) of the quantum
      full-bead RDF against the classical RDF (classical as reference), and
      ``rdf_error_centroid_pct`` for the centroid RDF; ``rdf`` holds r and both g(r);
    * pressures (configurational, GPa; quantum from ``virial_cv``): the means ± error, their
      signed difference, ``pressure_mae_GPa`` (Eq. 7) and ``pressure_hist_error_pct`` (Eq. 9);
    * ``vdos_error_pct``: E_VDOS (Eq. 10) of the centroid VDOS against the classical one over
      matched durations (meaningful for TRPMD; PILE-L's local centroid thermostat broadens it);
    * potential energy per atom, both sides ± error.
    """
    classical_dir, quantum_dir = Path(classical_dir), Path(quantum_dir)
    cl = read_run_trajectory(classical_dir, prefix)
    qc = read_centroid_trajectory(quantum_dir, prefix)
    qb = read_bead_trajectory(quantum_dir, prefix)
    if not np.array_equal(np.sort(cl.numbers), np.sort(qc.numbers)):
        raise DynamatError("the classical and quantum runs hold different compositions")
    cl = cl[_discard(cl.n_frames, discard_fraction)]
    qc = qc[_discard(qc.n_frames, discard_fraction)]
    nb = len(bead_files(quantum_dir, "pos", prefix))
    qb = qb[_discard(qb.n_frames // nb, discard_fraction).start * nb:]
    out: dict = {
        "nbeads_classical": _input_info(classical_dir).get("nbeads", 1),
        "nbeads_quantum": _input_info(quantum_dir).get("nbeads", nb),
        "temperature_K": qc.temperature_K,
        "discard_fraction": discard_fraction,
        "n_frames_classical": cl.n_frames,
        "n_frames_quantum": qc.n_frames,
    }
    # kinetic energies
    kq = quantum_kinetic_energy(quantum_dir, prefix=prefix, discard_fraction=discard_fraction)
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
    out["kinetic"] = kin
    # RDF: classical reference vs full-bead and centroid quantum RDFs on one grid
    r_max = min(rdf_r_max(cl.cells, cl.pbc), rdf_r_max(qb.cells, qb.pbc))
    hist = {key: rdf_histogram(t.positions, t.cells, n_bins=n_bins, r_max=r_max, pbc=t.pbc)
            for key, t in (("classical", cl), ("beads", qb), ("centroid", qc))}
    r, g_cl = rdf_from_histogram(hist["classical"])
    _, g_q = rdf_from_histogram(hist["beads"])
    _, g_c = rdf_from_histogram(hist["centroid"])
    out["rdf_r_max_A"] = float(r_max)
    out["rdf_error_pct"] = rdf_error(g_cl, g_q, r)
    out["rdf_error_centroid_pct"] = rdf_error(g_cl, g_c, r)
    out["rdf"] = {"r_A": r, "g_classical": g_cl, "g_quantum_beads": g_q, "g_quantum_centroid": g_c}
    # pressure
    for key in ("pressure_classical_GPa", "pressure_quantum_GPa", "pressure_difference_GPa",
                "pressure_mae_GPa", "pressure_hist_error_pct"):
        out[key] = None
    if cl.stress is not None and qc.stress is not None:
        p_cl, p_q = pressure_GPa(cl.stress, dims), pressure_GPa(qc.stress, dims)
        m_cl, se_cl, _ = _mean_se(p_cl)
        m_q, se_q, _ = _mean_se(p_q)
        out.update(pressure_classical_GPa=m_cl, pressure_classical_se_GPa=se_cl,
                   pressure_quantum_GPa=m_q, pressure_quantum_se_GPa=se_q,
                   pressure_difference_GPa=m_q - m_cl,
                   pressure_mae_GPa=pressure_mae(p_cl, p_q),
                   pressure_hist_error_pct=pressure_hist_error(p_cl, p_q))
    # potential energy per atom
    for key, t in (("classical", cl), ("quantum", qc)):
        if t.energies is not None:
            m, se, _ = _mean_se(t.energies)
            out[f"potential_{key}_eV_per_atom"] = m / t.n_atoms
            out[f"potential_{key}_se_eV_per_atom"] = se / t.n_atoms
    # VDOS of the centroid against the classical one, matched durations
    out["vdos_error_pct"] = None
    if cl.velocities is not None and qc.velocities is not None and cl.dt_fs and qc.dt_fs:
        dur = min(cl.duration_fs, qc.duration_fs)
        a, b = cl.truncated_to(dur), qc.truncated_to(dur)
        if min(a.n_frames, b.n_frames) >= 8:
            lag_fs = vdos_max_lag_fs or dur / 2
            nu_a, f_a = vdos(a.velocities, atomic_masses[a.numbers], a.dt_fs, max_lag=max(1, int(lag_fs / a.dt_fs)))
            nu_b, f_b = vdos(b.velocities, atomic_masses[b.numbers], b.dt_fs, max_lag=max(1, int(lag_fs / b.dt_fs)))
            out["vdos_error_pct"] = vdos_error(nu_a, f_a, nu_b, f_b)
            out["vdos_matched_duration_fs"] = float(dur)
    return out


# ---------------------------------------------------------------------------------------------
# Convergence with the number of beads


@dataclass
class BeadConvergence:
    """⟨K_cv⟩ per atom against P, and whether successive P agree within ``z`` standard errors."""

    model: str
    system: str
    temperature_K: float
    z: float
    rows: list[dict] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        """The two largest P agree within error."""
        return len(self.rows) >= 2 and bool(self.rows[-1]["agrees_with_previous"])

    def as_dict(self) -> dict:
        return {**asdict(self), "converged": self.converged}

    def table(self) -> str:
        lines = [f"{'P':>4} {'<K_cv>/atom (meV)':>20} {'+-':>8} {'vs previous':>14}  {'s/step':>8}"]
        for r in self.rows:
            agree = r["agrees_with_previous"]
            prev = "" if agree is None else f"{r['difference_sigma']:.1f} sd " + ("ok" if agree else "DIFFERS")
            sps = r.get("seconds_per_step")
            lines.append(f"{r['nbeads']:>4} {1e3 * r['kinetic_cv_eV_per_atom']:>20.3f} "
                         f"{1e3 * r['kinetic_cv_se_eV_per_atom']:>8.3f} {prev:>14}  "
                         f"{'n/a' if sps is None else f'{sps:.4f}':>8}")
        lines.append(f"classical 3/2 kT = {1e3 * 1.5 * KB_EV_PER_K * self.temperature_K:.3f} meV/atom; "
                     f"{'converged' if self.converged else 'NOT converged'} (|dK| <= {self.z:g} sd between the two largest P)")
        return "\n".join(lines)


def _agreement(rows: list[dict], z: float) -> None:
    prev = None
    for r in rows:
        if prev is None:
            r["agrees_with_previous"] = None
            r["difference_sigma"] = None
        else:
            diff = r["kinetic_cv_eV_per_atom"] - prev["kinetic_cv_eV_per_atom"]
            sd = float(np.hypot(r["kinetic_cv_se_eV_per_atom"], prev["kinetic_cv_se_eV_per_atom"]))
            sig = abs(diff) / sd if sd > 0 else (0.0 if diff == 0 else float("inf"))
            r["difference_sigma"] = sig
            r["agrees_with_previous"] = bool(sig <= z)
        prev = r


def bead_convergence(
    model: str,
    system,
    initial: ase.Atoms,
    out: str | Path,
    *,
    beads: Sequence[int] = (1, 2, 4, 8),
    steps: int | None = None,
    seed: int = 12345,
    discard_fraction: float = 0.1,
    z: float = 2.0,
    driver_args: Sequence[str] = (),
    driver_cmd: str | None = None,
    overwrite: bool = False,
    timeout_s: float = 24 * 3600.0,
    progress=None,
) -> BeadConvergence:
    """Runs ``model`` on ``system`` (a :class:`dynamat.catalogue.System`) for each P in ``beads``
    and reports ⟨K_cv⟩ per atom (and per species) with its block-bootstrap error.

    Every P uses the PILE-L template (P = 1 included, where K_cv = 3/2 k_B T exactly), the
    protocol's time step, tau, stride and temperature, ``steps`` MD steps (default: the
    protocol's length) and the same seed, all beads in one batched request. Runs go to
    ``<out>/<model>/<system>/beads_<P>/``; the summary to ``bead_convergence.json`` beside them.
    Successive P agree when |ΔK| ≤ z·sqrt(σ₁² + σ₂²).
    """
    base = Path(out) / model / system.name
    beads = sorted({int(p) for p in beads})
    if not beads or beads[0] < 1:
        raise DynamatError(f"bead counts must be positive integers, got {beads}")
    conv = BeadConvergence(model=model, system=system.name, temperature_K=system.temperature_K, z=z)
    for p in beads:
        settings = replace(system.md_settings(steps=steps, seed=seed, nbeads=p), thermostat="pile_l")
        if progress:
            progress(p)
        run = run_pimd(model, initial, settings, base / f"beads_{p}", driver_args=driver_args,
                       driver_cmd=driver_cmd, overwrite=overwrite, timeout_s=timeout_s)
        kin = quantum_kinetic_energy(run.run_dir, discard_fraction=discard_fraction)
        row = {"nbeads": p, "kinetic_cv_eV_per_atom": kin["all"].per_atom_eV,
               "kinetic_cv_se_eV_per_atom": kin["all"].per_atom_se_eV,
               "n_samples": kin["all"].n_samples, "steps": settings.steps,
               "seconds_per_step": run.seconds_per_step_median, "run_dir": str(run.run_dir),
               "species": {s: {"per_atom_eV": k.per_atom_eV, "per_atom_se_eV": k.per_atom_se_eV}
                           for s, k in kin.items() if s != "all"}}
        conv.rows.append(row)
        _agreement(conv.rows, z)
        (base / "bead_convergence.json").write_text(json.dumps(conv.as_dict(), indent=2) + "\n")
    return conv


def _parse_beads(text: str) -> list[int]:
    try:
        vals = [int(x) for x in text.replace(" ", "").split(",") if x]
    except ValueError:
        raise click.BadParameter(f"--beads wants comma-separated integers, got {text!r}") from None
    if not vals or min(vals) < 1:
        raise click.BadParameter(f"--beads wants positive integers, got {text!r}")
    return vals


@click.command("beads-convergence")
@click.option("--model", required=True, help="Model name as dynamat-driver knows it.")
@click.option("--system", "system", required=True, help="System name (group in the reference file).")
@click.option("--reference", type=click.Path(path_type=Path), default=None,
              help="DynaMat v1.0 reference HDF5 (initial structure) [default: as `dynamat run`].")
@click.option("--beads", "beads_text", default="1,2,4,8", show_default=True, help="Bead counts P to run.")
@click.option("--steps", type=int, default=None, help="MD steps per P [default: the protocol's full length].")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@click.option("--seed", type=int, default=12345, show_default=True)
@click.option("--discard", "discard_fraction", type=float, default=0.1, show_default=True,
              help="Fraction of each run dropped as equilibration.")
@click.option("--z", type=float, default=2.0, show_default=True, help="Agreement threshold in standard errors.")
@click.option("--overwrite", is_flag=True, help="Replace existing beads_<P> run folders.")
@click.option("--json", "json_out", type=click.Path(path_type=Path), default=None, help="Also write the summary here.")
@click.option("--driver-cmd", default=None, help="Driver command line from another environment.")
@click.option("--driver-arg", "driver_args", multiple=True, help="Extra driver argument (repeatable).")
def beads_convergence_command(model, system, reference, beads_text, steps, out, seed, discard_fraction, z,
                              overwrite, json_out, driver_cmd, driver_args):
    """Run MODEL on SYSTEM with P = 1, 2, 4, 8 … beads (PILE-L) and report <K_cv> against P."""
    from dynamat.cli import _initial_atoms, _load_system

    beads = _parse_beads(beads_text)
    reference, sys_entry, _ = _load_system(reference, system)
    conv = bead_convergence(
        model, sys_entry, _initial_atoms(reference, system), out, beads=beads, steps=steps, seed=seed,
        discard_fraction=discard_fraction, z=z, driver_args=driver_args, driver_cmd=driver_cmd,
        overwrite=overwrite, progress=lambda p: click.echo(f"  {model}/{system}: P = {p}", err=True),
    )
    click.echo(conv.table())
    if json_out:
        Path(json_out).write_text(json.dumps(conv.as_dict(), indent=2) + "\n")
