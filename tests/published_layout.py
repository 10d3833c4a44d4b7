"""Test helper: an HDF5 file in exactly the layout of the public DynaMat v1.0 reference.

That file is written by Matbench-discovery's ``md.py::write_reference_h5`` through
``trajectory.py::Trajectory.write_to_h5_group``: one group per system; group attribute ``schema`` = 1;
datasets ``atomic_numbers`` (N,) and ``pbc`` (3,), then per frame, each only when present and in this
order, ``positions`` (M, N, 3) Å, ``cell`` (M, 3, 3) Å row vectors, ``energy``, ``forces``,
``stress`` (M, 6) Voigt xx yy zz yz xz xy eV/Å³ (ASE sign), ``md_step`` (M,), each gzip-compressed
with frame-major chunks of min(M, 512) frames; then group attributes ``dt_fs`` (time between saved
frames) and ``temperature_kelvin``. Written to ``<path>.tmp`` and renamed. Nothing else: no energies or
forces (label-free), no class, no dimensionality, no isolated-atom energies.

The frames are small ASE-built cells whose atoms oscillate harmonically about their lattice sites,
each Cartesian component with its own frequency and phase and an amplitude set by equipartition
at the system's temperature, so finite-difference velocities give that temperature back.

    from published_layout import PUBLISHED, write_published_file
    write_published_file(tmp_path / "dynamat_v1.h5")
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
from ase import Atoms, units
from ase.build import bulk, molecule, mx2


@dataclass(frozen=True)
class Published:
    """One system of the helper file and what dynamat must make of it."""

    make: object  # () -> ase.Atoms
    temperature_K: float
    dt_fs: float  # interval between saved frames in the file
    stress: bool  # the public file has stress for most systems, not all
    nu_THz: tuple[float, float]  # range of the oscillators' frequencies
    # expected
    system_class: str
    dims: int
    protocol: str
    timestep_fs: float
    tau_fs: float
    stride: int
    in_catalogue: bool


def _cu() -> Atoms:
    return bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))


def _cuau() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 2, 2))
    atoms.symbols[::2] = "Au"  # 16 Cu + 16 Au
    return atoms


def _pt3co() -> Atoms:
    atoms = bulk("Pt", "fcc", a=3.85, cubic=True)
    atoms[0].symbol = "Co"  # L1_2 Pt3Co
    return atoms.repeat((2, 2, 2))


def _cssni3() -> Atoms:
    a = 6.2
    atoms = Atoms(
        "CsSnI3",
        scaled_positions=[(0, 0, 0), (0.5, 0.5, 0.5), (0.5, 0.5, 0), (0.5, 0, 0.5), (0, 0.5, 0.5)],
        cell=np.eye(3) * a,
        pbc=True,
    )
    return atoms.repeat((2, 1, 1))


def _tise2_slab() -> Atoms:
    """A 1T-TiSe2 monolayer 2x2 with 8 Å of vacuum on each side along z, periodic in all three."""
    atoms = mx2("TiSe2", kind="1T", a=3.54, thickness=3.17, size=(2, 2, 1), vacuum=8.0)
    atoms.pbc = True  # as a plane-wave code stores it: periodic, with a vacuum gap
    return atoms


def _acene_crystal() -> Atoms:
    """Two benzene molecules, one in the xy and one in the xz plane, in a 6.6 Å cube: a dense
    C/H molecular crystal with no vacuum gap (a stand-in for the acenes; ASE has no anthracene)."""
    a = molecule("C6H6")
    a.positions -= a.get_center_of_mass()
    b = a.copy()
    b.rotate(90, "x")
    a.translate((0.0, 0.0, 0.0))
    b.translate((3.3, 3.3, 3.3))
    crystal = a + b
    crystal.cell = np.eye(3) * 6.6
    crystal.pbc = True
    crystal.wrap()
    return crystal


#: name -> system; the names follow the paper's (``<system>_<T>K`` plus a suffix after ``_``/``-``).
PUBLISHED: dict[str, Published] = {
    "bulkCu_300K-Artrith_VASP": Published(
        _cu, 300.0, 2.0, True, (3.0, 7.0), "pure metal", 3, "nhc", 0.25, 254.5, 10, True),
    "bulkCuAu_500K-Artrith_VASP": Published(
        _cuau, 500.0, 2.0, True, (2.0, 6.0), "alloy", 3, "nhc", 0.25, 254.5, 10, True),
    "Pt3Co_800K_VASP": Published(
        _pt3co, 800.0, 2.0, True, (2.0, 7.0), "alloy", 3, "nhc", 0.25, 254.5, 10, False),
    "CsSnI3_500K_Ivor_VASP": Published(
        _cssni3, 500.0, 2.0, False, (0.5, 4.0), "perovskite", 3, "nhc", 0.25, 254.5, 10, True),
    "TiSe2_400K": Published(
        _tise2_slab, 400.0, 2.0, True, (1.0, 8.0), "TMD", 2, "nhc", 0.25, 254.5, 10, True),
    "anthracene_293K": Published(
        _acene_crystal, 293.0, 0.5, True, (1.0, 30.0), "molecular crystal", 3, "langevin_10fs", 0.5, 10.0, 1, True),
    "pentacene_300K": Published(
        _acene_crystal, 300.0, 0.5, False, (1.0, 30.0), "molecular crystal", 3, "langevin_500fs", 0.5, 500.0, 1, False),
}


def oscillating_frames(atoms: Atoms, temperature_K: float, dt_fs: float, n_frames: int,
                       nu_THz: tuple[float, float], seed: int = 0) -> np.ndarray:
    """(M, N, 3) positions in Å: each coordinate x0 + A sin(2πνt + φ), ν uniform in ``nu_THz``,
    ½ m ω² A² / 2 = ½ k_B T (equipartition of the kinetic energy on average)."""
    rng = np.random.default_rng(seed)
    n = len(atoms)
    nu = rng.uniform(*nu_THz, size=(n, 3)) * 1e-3  # 1/fs
    phi = rng.uniform(0, 2 * np.pi, size=(n, 3))
    omega = 2 * np.pi * nu  # rad/fs
    m_kg_per_amu = atoms.get_masses()[:, None]
    # <½ m v²> = ¼ m ω² A² = ½ kT  ->  A = sqrt(2 kT / (m ω²)); m in amu, ω in 1/fs, kT in eV
    kT = units.kB * temperature_K
    amu_A2_fs2_in_eV = units._amu * 1e-20 / 1e-30 / units._e
    amp = np.sqrt(2 * kT / (m_kg_per_amu * omega**2 * amu_A2_fs2_in_eV))
    t = np.arange(n_frames)[:, None, None] * dt_fs
    return atoms.positions[None] + amp[None] * np.sin(omega[None] * t + phi[None])


def write_group(group: h5py.Group, numbers, pbc, positions, cell, stress=None, md_step=None,
                energy=None, forces=None) -> None:
    """``Trajectory.write_to_h5_group``'s layout: schema attr, atomic_numbers, pbc, per-frame fields."""
    n_frames, n_atoms = positions.shape[:2]
    chunk = min(n_frames, 512) or 1
    shapes = {"positions": (chunk, n_atoms, 3), "cell": (chunk, 3, 3), "energy": (chunk,),
              "forces": (chunk, n_atoms, 3), "stress": (chunk, 6), "md_step": (chunk,)}
    group.attrs["schema"] = 1
    group.create_dataset("atomic_numbers", data=np.asarray(numbers))
    group.create_dataset("pbc", data=np.asarray(pbc, dtype=bool))
    fields = {"positions": positions, "cell": cell, "energy": energy, "forces": forces, "stress": stress,
              "md_step": md_step}
    for name, arr in fields.items():
        if arr is not None:
            group.create_dataset(name, data=arr, chunks=shapes[name], compression="gzip")


def write_published_file(path: str | Path, names=None, n_frames: int = 80, seed: int = 0) -> Path:
    """Writes the systems ``names`` (default: all of :data:`PUBLISHED`) as the published file does."""
    path = Path(path)
    tmp = f"{path}.tmp"
    with h5py.File(tmp, "w") as f:
        for k, name in enumerate(names or PUBLISHED):
            spec = PUBLISHED[name]
            atoms = spec.make()
            pos = oscillating_frames(atoms, spec.temperature_K, spec.dt_fs, n_frames, spec.nu_THz, seed + k)
            rng = np.random.default_rng(100 + seed + k)
            cells = np.broadcast_to(atoms.cell.array, (n_frames, 3, 3)).copy()
            stress = rng.normal(scale=2e-4, size=(n_frames, 6)) if spec.stress else None
            g = f.create_group(name)
            write_group(g, atoms.numbers, atoms.pbc, pos, cells, stress=stress,
                        md_step=np.arange(n_frames, dtype=np.int64))
            g.attrs["dt_fs"] = float(spec.dt_fs)
            g.attrs["temperature_kelvin"] = float(spec.temperature_K)
    os.replace(tmp, path)
    return path
