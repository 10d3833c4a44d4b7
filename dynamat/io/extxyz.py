"""extxyz trajectories from elsewhere (ASE, LAMMPS via ASE, ...), read one frame at a time.

Only arrays are kept, so memory grows with the numbers, not with ASE objects.
"""

from __future__ import annotations

from pathlib import Path

import ase.io
import numpy as np
from ase import units

from dynamat.errors import DynamatError
from dynamat.trajectory import Trajectory, full_to_voigt


def read_extxyz(path: str | Path, dt_fs: float, name: str = "") -> Trajectory:
    """Reads positions, cells and, where present, velocities, energies, forces and stress.

    ``dt_fs`` is the time between the frames in the file (fs); an extxyz carries no reliable time.
    Velocities are converted from ASE units (Å per ASE time unit) to Å/fs.
    """
    path = Path(path)
    if not path.exists():
        raise DynamatError(f"trajectory file not found: {path}")
    cols: dict[str, list] = {k: [] for k in ("pos", "cell", "vel", "e", "f", "s")}
    numbers = pbc = None
    try:
        frames = ase.io.iread(path, index=":", format="extxyz")
        for atoms in frames:
            if numbers is None:
                numbers, pbc = atoms.numbers.copy(), atoms.pbc.copy()
            elif len(atoms) != len(numbers) or (atoms.numbers != numbers).any():
                raise DynamatError(f"{path}: the atoms change between frames")
            cols["pos"].append(atoms.positions)
            cols["cell"].append(atoms.cell.array)
            if "momenta" in atoms.arrays or "velocities" in atoms.arrays:
                cols["vel"].append(atoms.get_velocities() * units.fs)
            calc = atoms.calc
            results = calc.results if calc is not None else {}
            if "energy" in results:
                cols["e"].append(results["energy"])
            if "forces" in results:
                cols["f"].append(results["forces"])
            if "stress" in results:
                s = np.asarray(results["stress"])
                cols["s"].append(full_to_voigt(s) if s.shape == (3, 3) else s)
    except DynamatError:
        raise
    except Exception as exc:  # ASE raises many kinds on malformed files
        raise DynamatError(f"cannot read {path} as extxyz: {exc}") from None
    if numbers is None:
        raise DynamatError(f"{path} holds no frames")
    m = len(cols["pos"])
    full = lambda key: np.array(cols[key]) if len(cols[key]) == m else None  # noqa: E731
    return Trajectory(
        numbers=numbers,
        positions=np.array(cols["pos"]),
        cells=np.array(cols["cell"]),
        pbc=pbc,
        dt_fs=dt_fs,
        velocities=full("vel"),
        energies=full("e"),
        forces=full("f"),
        stress=full("s"),
        name=name or path.stem,
    )
