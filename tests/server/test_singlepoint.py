"""`dynamat singlepoint`: Eq. 1-2 over reference frames, with forces served by a driver over the socket."""

import json

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.lj import LennardJones

from dynamat.io import read_reference, reference_attrs

from conftest import DEMO, dynamat_cmd

SYSTEM = "bulkCu3Au_500K-demo_EMT"


def test_model_against_its_own_labels_is_exact(tmp_path):
    out = tmp_path / "sp.json"
    res = dynamat_cmd("singlepoint", "--model", "emt", "--system", SYSTEM, "--every", "200", "--json", str(out))
    assert res.returncode == 0, res.stderr
    s = json.loads(out.read_text())
    assert s["n_frames_singlepoint"] == 9
    assert s["energy_rmse_eV_per_atom"] < 1e-10 and s["force_rmse_eV_per_A"] < 1e-10


def test_isolated_atom_referencing_matches_an_independent_computation(tmp_path):
    out = tmp_path / "sp.json"
    res = dynamat_cmd("singlepoint", "--model", "lj", "--system", SYSTEM, "--every", "400", "--batch-size", "3",
                      "--json", str(out), "--driver-arg=-o", "--driver-arg=sigma=2.3")
    assert res.returncode == 0, res.stderr
    s = json.loads(out.read_text())
    ref = read_reference(DEMO, SYSTEM, frames=slice(None, None, 400))
    e_iso_ref = json.loads(reference_attrs(DEMO, SYSTEM)["isolated_atom_energies_eV"])
    syms = Atoms(numbers=ref.numbers).get_chemical_symbols()
    shift_ref = sum(e_iso_ref[x] for x in syms)  # LJ's isolated atom has zero energy
    e_lj, f_lj = [], []
    for pos, cell in zip(ref.positions, ref.cells):
        a = Atoms(numbers=ref.numbers, positions=pos, cell=cell, pbc=True)
        a.calc = LennardJones(epsilon=0.1, sigma=2.3, rc=6.9, smooth=True)
        e_lj.append(a.get_potential_energy())
        f_lj.append(a.get_forces())
    d_e = np.array(e_lj) - (ref.energies - shift_ref)
    expected_e = np.sqrt(np.mean(d_e**2)) / ref.n_atoms  # Eq. 1: RMSE of totals over N
    expected_f = np.sqrt(np.sum((np.array(f_lj) - ref.forces) ** 2) / (ref.n_frames * ref.n_atoms))  # Eq. 2
    assert s["energy_rmse_eV_per_atom"] == pytest.approx(expected_e, rel=1e-6)
    assert s["force_rmse_eV_per_A"] == pytest.approx(expected_f, rel=1e-6)
    assert s["force_rmse_eV_per_A"] > 0.05  # LJ is not EMT: the metric can tell
