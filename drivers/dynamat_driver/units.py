"""Unit conversions between i-PI's atomic units and ASE's (Å, eV).

The constants are i-PI's own (``ipi/utils/units.py``), copied rather than imported so that the
driver runs without i-PI installed:

* length: 1 Å = 1.8897261 bohr
* energy: 1 eV = 0.036749326 hartree

Forces use the ratio of the two (1 eV/Å = 0.036749326/1.8897261 hartree/bohr), which makes the
forces sent to i-PI exactly the derivative of the energy sent to i-PI with respect to the
positions i-PI sent. i-PI's own table lists ``ev/ang`` as 0.019446904, which differs from that
ratio by 1.1e-7 (relative); i-PI uses it only to print forces in eV/Å, never for dynamics.

i-PI conventions (see ``ipi/pes/_ase.py``): the cell ``h`` holds the lattice vectors as
*columns*, in bohr (ASE holds them as rows, in Å); the virial is ``-stress * volume`` in hartree,
where ``stress`` is ASE's (positive = tensile, eV/Å³), transposed.
"""

from __future__ import annotations

import numpy as np

#: bohr per Å (i-PI: UnitMap["length"]["angstrom"]).
BOHR_PER_ANGSTROM = 1.8897261
#: hartree per eV (i-PI: UnitMap["energy"]["electronvolt"]).
HARTREE_PER_EV = 0.036749326
#: (hartree/bohr) per (eV/Å), consistent with the two constants above.
HARTREE_PER_BOHR_PER_EV_PER_ANGSTROM = HARTREE_PER_EV / BOHR_PER_ANGSTROM
#: i-PI's printed-output factor for forces (UnitMap["force"]["ev/ang"]); not used for dynamics.
IPI_EV_PER_ANG_TABLE = 0.019446904

ANGSTROM_PER_BOHR = 1.0 / BOHR_PER_ANGSTROM
EV_PER_HARTREE = 1.0 / HARTREE_PER_EV


def cell_ipi_to_ase(h_bohr: np.ndarray) -> np.ndarray:
    """i-PI cell (columns = lattice vectors, bohr) → ASE cell (rows, Å)."""
    return np.asarray(h_bohr, dtype=np.float64).reshape(3, 3).T * ANGSTROM_PER_BOHR


def cell_ase_to_ipi(cell_ang: np.ndarray) -> np.ndarray:
    """ASE cell (rows, Å) → i-PI cell (columns, bohr)."""
    return np.ascontiguousarray(np.asarray(cell_ang, dtype=np.float64).reshape(3, 3).T * BOHR_PER_ANGSTROM)


def positions_ipi_to_ase(pos_bohr: np.ndarray) -> np.ndarray:
    """Flat or (n, 3) positions in bohr → (n, 3) in Å."""
    return np.asarray(pos_bohr, dtype=np.float64).reshape(-1, 3) * ANGSTROM_PER_BOHR


def positions_ase_to_ipi(pos_ang: np.ndarray) -> np.ndarray:
    return np.asarray(pos_ang, dtype=np.float64).reshape(-1, 3) * BOHR_PER_ANGSTROM


def stress_to_3x3(stress) -> np.ndarray:
    """ASE stress, Voigt (xx, yy, zz, yz, xz, xy) or 3×3 → symmetric 3×3 float64 array.

    A 3×3 stress is symmetrised (½(σ + σᵀ)), as ASE's ``Atoms.get_stress`` does: CHGNet, for one,
    returns a 3×3 tensor whose off-diagonal pairs differ by float32 round-off.
    """
    s = np.asarray(stress, dtype=np.float64)
    if s.shape == (6,):
        xx, yy, zz, yz, xz, xy = s
        return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])
    if s.size == 9:
        s = s.reshape(3, 3)
        return 0.5 * (s + s.T)
    raise ValueError(f"stress has shape {s.shape}; expected (6,) or (3, 3)")


def energy_to_ipi(energy_ev: float) -> float:
    return float(energy_ev) * HARTREE_PER_EV


def forces_to_ipi(forces_ev_ang: np.ndarray) -> np.ndarray:
    """Forces in eV/Å → (n, 3) float64 in hartree/bohr."""
    return np.asarray(forces_ev_ang, dtype=np.float64).reshape(-1, 3) * HARTREE_PER_BOHR_PER_EV_PER_ANGSTROM


def virial_to_ipi(stress, volume_ang3: float) -> np.ndarray:
    """ASE stress (eV/Å³, Voigt or 3×3) and volume (Å³) → i-PI virial (3×3, hartree).

    ``virial = -stress * V`` (transposed, as ``ipi/pes/_ase.py`` does; the stress is symmetric).
    """
    if stress is None:
        return np.zeros((3, 3))
    s = stress_to_3x3(stress)
    return np.ascontiguousarray((-s * float(volume_ang3)).T * HARTREE_PER_EV)


def virial_from_ipi(virial_hartree: np.ndarray, volume_ang3: float) -> np.ndarray:
    """Inverse of :func:`virial_to_ipi`: i-PI virial (hartree) → ASE 3×3 stress (eV/Å³)."""
    w = np.asarray(virial_hartree, dtype=np.float64).reshape(3, 3).T * EV_PER_HARTREE
    return -w / float(volume_ang3)
