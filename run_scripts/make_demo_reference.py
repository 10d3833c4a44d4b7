#!/usr/bin/env python
"""Makes the bundled demo reference file ``dynamat/data/demo_reference.h5`` reproducibly.

NOT DFT. Both systems are run with ASE's EMT potential (Al Ni Cu Pd Ag Pt Au only), using the
paper's MLIP protocol for metals and alloys: ASE Nose-Hoover chain, dt 0.25 fs, tau 254.5 fs,
a frame every 10 steps. Each run is equilibrated for ``--equil-ps`` (not stored), then ``--time-ps``
are stored with energies, forces and stress, in the DynaMat v1.0 schema.

    python run_scripts/make_demo_reference.py [--out FILE] [--time-ps 4] [--equil-ps 1]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from ase import units
from scipy.optimize import brentq

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from dynamat.io.reference_h5 import write_reference  # noqa: E402
from dynamat.trajectory import Trajectory  # noqa: E402

DT_FS, TAU_FS, STRIDE = 0.25, 254.5, 10


def zero_pressure_cell(make, a_lo: float, a_hi: float):
    """The cubic lattice constant (Å) at which EMT's static pressure vanishes."""

    def pressure(a):
        atoms = make(a)
        atoms.calc = EMT()
        return -atoms.get_stress()[:3].mean()

    a0 = brentq(pressure, a_lo, a_hi, xtol=1e-6)
    return make(a0), a0


def cu(a):
    return bulk("Cu", "fcc", a=a, cubic=True).repeat((2, 2, 2))


def cu3au(a):
    atoms = bulk("Cu", "fcc", a=a, cubic=True)
    atoms[0].symbol = "Au"  # L1_2: Au on the cube corner, Cu on the face centres
    return atoms.repeat((2, 2, 2))


SYSTEMS = {
    "bulkCu_300K-demo_EMT": dict(make=cu, bounds=(3.4, 3.8), T=300.0, cls="pure metal", seed=1),
    "bulkCu3Au_500K-demo_EMT": dict(make=cu3au, bounds=(3.5, 3.9), T=500.0, cls="alloy", seed=2),
}


def isolated_atom_energies(atoms) -> dict[str, float]:
    """EMT energy of each element alone in a 20 Å box (eV): the reference side of Eq. 1's referencing."""
    from ase import Atoms

    out = {}
    for sym in sorted(set(atoms.get_chemical_symbols())):
        single = Atoms(sym, positions=[[10.0, 10.0, 10.0]], cell=np.eye(3) * 20.0, pbc=True)
        single.calc = EMT()
        out[sym] = float(single.get_potential_energy())
    return out


def run(name: str, spec: dict, time_ps: float, equil_ps: float) -> tuple[Trajectory, dict]:
    atoms, a0 = zero_pressure_cell(spec["make"], *spec["bounds"])
    atoms.calc = EMT()
    rng = np.random.default_rng(spec["seed"])
    MaxwellBoltzmannDistribution(atoms, temperature_K=spec["T"], rng=rng)
    Stationary(atoms)
    md = NoseHooverChainNVT(
        atoms, timestep=DT_FS * units.fs, temperature_K=spec["T"], tdamp=TAU_FS * units.fs
    )
    md.run(int(round(equil_ps * 1000 / DT_FS)))
    n_frames = int(round(time_ps * 1000 / DT_FS / STRIDE)) + 1
    cols = {k: [] for k in ("pos", "e", "f", "s", "step")}
    for i in range(n_frames):
        if i:
            md.run(STRIDE)
        cols["pos"].append(atoms.get_positions())
        cols["e"].append(atoms.get_potential_energy())
        cols["f"].append(atoms.get_forces())
        cols["s"].append(atoms.get_stress())
        cols["step"].append(i * STRIDE)
    traj = Trajectory(
        numbers=atoms.numbers,
        positions=np.array(cols["pos"]),
        cells=atoms.cell.array,
        pbc=atoms.pbc,
        dt_fs=DT_FS * STRIDE,
        energies=np.array(cols["e"]),
        forces=np.array(cols["f"]),
        stress=np.array(cols["s"]),
        steps=np.array(cols["step"]),
        temperature_K=spec["T"],
        name=name,
    )
    attrs = {
        "system_class": spec["cls"],
        "dims": 3,
        "lattice_constant_A": a0,
        "provenance": (
            "DEMO DATA, NOT DFT: ASE EMT potential, ASE Nose-Hoover chain NVT "
            f"(dt {DT_FS} fs, tdamp {TAU_FS} fs, frame every {STRIDE} steps), "
            f"{equil_ps} ps equilibration discarded, zero-pressure EMT lattice constant {a0:.5f} A; "
            "made by run_scripts/make_demo_reference.py"
        ),
        "reference_code": "ASE EMT",
        # EMT's energy zero differs from any MLIP's, as FHI-aims' does from VASP's in the paper: both
        # sides of Eq. 1 are referenced to isolated atoms
        "isolated_atom_energies_eV": json.dumps(isolated_atom_energies(atoms)),
    }
    return traj, attrs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(Path(__file__).resolve().parents[1] / "dynamat/data/demo_reference.h5"))
    ap.add_argument("--time-ps", type=float, default=4.0)
    ap.add_argument("--equil-ps", type=float, default=1.0)
    args = ap.parse_args()
    out = Path(args.out)
    tmp = out.with_suffix(".tmp.h5")
    tmp.unlink(missing_ok=True)
    for name, spec in SYSTEMS.items():
        traj, attrs = run(name, spec, args.time_ps, args.equil_ps)
        write_reference(tmp, traj, attrs)
        print(f"{name}: {traj.n_frames} frames of {traj.n_atoms} atoms, a0 = {attrs['lattice_constant_A']:.4f} A")
    tmp.replace(out)  # never leave a half-written reference behind
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB)")


if __name__ == "__main__":
    main()
