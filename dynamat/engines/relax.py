"""The paper's relaxed-cell protocol (Fig. S5): FIRE on positions and cell with forces from the driver.

ASE's socket server (``SocketIOCalculator``) talks to the same ``dynamat-driver`` that serves
i-PI; the structure it ends on is where the NVT run then starts.
"""

from __future__ import annotations

import secrets
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase.calculators.socketio import SocketIOCalculator

from dynamat import processes
from dynamat.engines.ase_nhc import close_socket_calculator
from dynamat.errors import DynamatError
from dynamat.layout import RunFolder


def relax_cell(
    model: str,
    atoms: ase.Atoms,
    run_dir: Path,
    driver_cmd: list[str],
    *,
    fmax: float = 0.01,
    max_steps: int = 500,
    timeout_s: float = 600.0,
) -> tuple[ase.Atoms, dict]:
    """The paper's relaxed-cell protocol (Fig. S5): FIRE on positions and cell (Fréchet cell filter,
    zero pressure) until max force ≤ ``fmax`` eV/Å or ``max_steps``, with forces from the driver.

    Returns the relaxed structure and a summary (steps, final fmax in eV/Å, volume change in %).
    """
    from ase.filters import FrechetCellFilter
    from ase.optimize import FIRE

    name = f"dynamat-{secrets.token_hex(6)}"
    work = atoms.copy()
    rf = RunFolder(run_dir)
    ase.io.write(rf.relax_template_xyz, work, format="extxyz")
    calc = SocketIOCalculator(unixsocket=name, timeout=timeout_s)
    driver = processes.start(
        driver_cmd + ["--model", model, "--unix", f"/tmp/ipi_{name}", "--template", rf.relax_template_xyz.name],
        run_dir, rf.relax_driver_log,
    )
    calc.server.proc = driver
    work.calc = calc
    try:
        opt = FIRE(FrechetCellFilter(work, scalar_pressure=0.0), logfile=str(rf.relax_log))
        converged = bool(opt.run(fmax=fmax, steps=max_steps))
        forces = work.get_forces()
        summary = {
            "converged": converged,
            "steps": int(opt.nsteps),
            "fmax_eV_per_A": float(np.linalg.norm(forces, axis=1).max()),
            "volume_change_pct": 100.0 * (work.get_volume() / atoms.get_volume() - 1.0),
            "fmax_target_eV_per_A": fmax,
            "max_steps": max_steps,
        }
    except (OSError, EOFError) as exc:
        msg = processes.last_line(rf.relax_driver_log, str(exc))
        raise DynamatError(f"relaxation failed: {msg}") from None
    finally:
        close_socket_calculator(calc, driver)
    relaxed = ase.Atoms(numbers=work.numbers, positions=work.positions, cell=work.cell, pbc=work.pbc)
    return relaxed, summary
