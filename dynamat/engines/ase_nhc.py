"""The paper's exact MLIP protocol for metals, alloys, TMDs and perovskites: ASE's Nosé–Hoover chain.

ASE's socket server (``SocketIOCalculator``) sends each MD step's structure to the same
``dynamat-driver`` that serves i-PI, so only the thermostat differs between ``--engine ipi`` and
``--engine ase``. Outputs are written in i-PI's formats (properties file and extxyz trajectories
keyed by step), so every reader and metric works unchanged.

ASE's server only listens on ``/tmp/ipi_<name>``; the name carries a random token. ASE sends no
INIT parameters, so the driver gets the species from ``--template init.xyz``. Runs with this
engine are not resumable (ASE MD keeps no restart file): an interrupted one must be rerun with
``--overwrite``.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path
from typing import Callable

import ase
import ase.io
import numpy as np
from ase import units
from ase.calculators.socketio import SocketIOCalculator
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

from dynamat import processes
from dynamat.errors import DynamatError
from dynamat.engines.ipi_input import MDSettings
from dynamat.layout import PREFIX, RunFolder
from dynamat.trajectory import stress_to_ipi_virial

PROPS_HEADER = [
    "# column   1     --> step : written by dynamat.engines.ase_nhc (ASE Nose-Hoover chain)",
    "# column   2     --> time{femtosecond} : elapsed time",
    "# column   3     --> temperature{kelvin} : kinetic temperature, 3N-3 degrees of freedom",
    "# column   4     --> kinetic_md{electronvolt} : kinetic energy",
    "# column   5     --> potential{electronvolt} : potential energy",
    "# column   6     --> conserved{electronvolt} : NHC conserved quantity",
    "# cols.  7-12    --> virial_md{ev/ang3} : configurational virial / V, [xx yy zz xy xz yz]",
    "# column  13     --> volume{angstrom3} : cell volume",
]


class _Writer:
    """Appends frames in the i-PI output formats that dynamat.io.ipi_output reads."""

    def __init__(self, run_dir: Path, prefix: str):
        rf = RunFolder(run_dir, prefix)
        self.props = open(rf.properties, "w")
        self.pos = open(rf.positions(0), "w")
        self.vel = open(rf.velocities(0), "w")
        self.props.write("\n".join(PROPS_HEADER) + "\n")

    def frame(self, step: int, time_fs: float, atoms: ase.Atoms, conserved: float) -> None:
        n = len(atoms)
        ke = atoms.get_kinetic_energy()
        temp = 2 * ke / ((3 * n - 3) * units.kB)
        vir = stress_to_ipi_virial(atoms.get_stress(voigt=True))
        row = [step, time_fs, temp, ke, atoms.get_potential_energy(), conserved, *vir, atoms.get_volume()]
        self.props.write(" ".join(f"{x:.10e}" for x in row) + "\n")
        lattice = " ".join(f"{x:.10f}" for x in atoms.cell.array.reshape(-1))
        head = f'{n}\nLattice="{lattice}" Properties=species:S:1:pos:R:3 ipi_comment="Step: {step:11d}" pbc="T T T"\n'
        syms = atoms.get_chemical_symbols()
        self.pos.write(head + "".join(f"{a:<2} {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}\n" for a, p in zip(syms, atoms.positions)))
        v = atoms.get_velocities()  # Å per ASE time unit, as i-PI's velocities{ase}
        self.vel.write(head.replace("pos:R:3", "pos:R:3:velocities:R:3") + "".join(
            f"{a:<2} 0 0 0 {x[0]:.10e} {x[1]:.10e} {x[2]:.10e}\n" for a, x in zip(syms, v)))
        for fh in (self.props, self.pos, self.vel):
            fh.flush()

    def close(self) -> None:
        for fh in (self.props, self.pos, self.vel):
            fh.close()


def run_ase_nhc(
    model: str,
    initial: ase.Atoms,
    settings: MDSettings,
    run_dir: Path,
    driver_cmd: list[str],
    samples: list[tuple[float, int]],
    progress: Callable[[int, int], None] | None = None,
    timeout_s: float = 600.0,
    prefix: str = PREFIX,
    max_temperature_K: float = np.inf,
) -> None:
    """MD with ASE's NoseHooverChainNVT (tchain 3), forces from a dynamat-driver over ASE's socket."""
    name = f"dynamat-{secrets.token_hex(6)}"
    atoms = initial.copy()
    rng = np.random.default_rng(settings.seed)
    MaxwellBoltzmannDistribution(atoms, temperature_K=settings.temperature_K, rng=rng)
    Stationary(atoms)
    calc = SocketIOCalculator(unixsocket=name, timeout=timeout_s)
    rf = RunFolder(run_dir, prefix)
    driver = processes.start(
        driver_cmd + ["--model", model, "--unix", f"/tmp/ipi_{name}", "--template", rf.init_xyz.name,
                      "--timing-file", str(rf.driver_timing_json())],
        run_dir, rf.driver_log(),
    )
    calc.server.proc = driver  # ASE then notices a driver that dies before connecting
    atoms.calc = calc
    writer = _Writer(run_dir, prefix)
    try:
        md = NoseHooverChainNVT(atoms, timestep=settings.timestep_fs * units.fs,
                                temperature_K=settings.temperature_K, tdamp=settings.tau_fs * units.fs)
        for step in range(0, settings.steps + 1, settings.stride):
            if step:
                md.run(settings.stride)
            f = atoms.get_forces()
            if not np.isfinite(f).all():
                raise DynamatError(f"MD exploded: non-finite forces at step {step}")
            writer.frame(step, step * settings.timestep_fs, atoms, md.get_conserved_energy())
            temp = 2 * atoms.get_kinetic_energy() / ((3 * len(atoms) - 3) * units.kB)
            if temp > max_temperature_K:
                raise DynamatError(f"MD exploded: temperature {temp:.0f} K at step {step}")
            samples.append((time.monotonic(), step))
            if progress:
                progress(step, settings.steps)
    except (OSError, EOFError) as exc:
        msg = processes.last_line(rf.driver_log(), str(exc))
        raise DynamatError(f"the driver failed under the ASE engine: {msg}") from None
    finally:
        writer.close()
        close_socket_calculator(calc, driver)


def close_socket_calculator(calc: SocketIOCalculator, driver) -> None:
    """Ends ASE's socket session (EXIT to the driver, best effort) and stops the driver process."""
    try:
        calc.server.protocol and calc.server.protocol.end()
    except Exception:  # the driver may already be gone; stopping it below is what matters
        pass
    calc.close()
    processes.stop(driver, grace_s=5)
