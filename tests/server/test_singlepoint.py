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


def _one_line_error(res):
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1, res.stderr
    return lines[0]


def test_a_mean_subtracted_energy_over_one_frame_is_refused_not_zero(tmp_path):
    """Fluctuation mode subtracts each side's mean: over one frame the energy RMSE is 0 by construction, which
    was printed as a perfect score. One frame is refused in one line (explicit, or auto falling back to it on a
    file without isolated-atom energies); two frames score, and the card says how many frames were used."""
    import shutil

    import h5py

    lj = ("--model", "lj", "--driver-arg=-o", "--driver-arg=sigma=2.3")  # not EMT: energies differ from the labels
    for few in (("--every", "100000"), ("--max-frames", "1")):
        line = _one_line_error(dynamat_cmd("singlepoint", *lj, "--system", SYSTEM, "--energy-reference",
                                           "fluctuation", *few))
        assert "at least 2 frames" in line and "0 by construction" in line, line
    bare = tmp_path / "no_isolated.h5"  # the demo file without isolated-atom energies: auto is fluctuation
    shutil.copy(DEMO, bare)
    with h5py.File(bare, "r+") as f:
        del f[SYSTEM].attrs["isolated_atom_energies_eV"]
    line = _one_line_error(dynamat_cmd("singlepoint", *lj, "--system", SYSTEM, "--reference", str(bare),
                                       "--max-frames", "1"))
    assert "auto is fluctuation" in line and "at least 2 frames" in line, line
    out = tmp_path / "two.json"
    res = dynamat_cmd("singlepoint", *lj, "--system", SYSTEM, "--reference", str(bare), "--max-frames", "2",
                      "--json", str(out))
    assert res.returncode == 0, res.stderr
    s = json.loads(out.read_text())
    assert s["energy_reference"] == "fluctuation" and s["n_frames_singlepoint"] == 2
    assert s["energy_rmse_eV_per_atom"] > 0
    assert "single-point frames" in res.stdout and res.stdout.split("single-point frames")[1].split()[0] == "2"
    # isolated-atom referencing is meaningful over one frame; its mean-subtracted companions are not
    out = tmp_path / "one.json"
    res = dynamat_cmd("singlepoint", *lj, "--system", SYSTEM, "--max-frames", "1", "--json", str(out))
    assert res.returncode == 0, res.stderr
    s = json.loads(out.read_text())
    assert s["energy_reference"] == "isolated" and s["energy_rmse_eV_per_atom"] > 0
    assert s["energy_fluctuation_rmse_eV_per_atom"] is None and s["matbench_singlepoint"]["energy_rmse"] is None


def test_a_forces_only_reference_scores_eq2_and_says_why_eq1_is_missing(tmp_path):
    """A LAMMPS dump holds forces but no total energy (a large model run as teacher in LAMMPS, say): the import
    keeps the forces, and the single point scores Eq. 2 against an independent computation instead of refusing
    the whole system; Eq. 1 is n/a with the reason, never a number."""
    ref = read_reference(DEMO, SYSTEM, frames=slice(0, 16))
    syms = Atoms(numbers=ref.numbers).get_chemical_symbols()
    lines = []
    for i, (pos, cell, frc) in enumerate(zip(ref.positions, ref.cells, ref.forces)):  # as LAMMPS dumps them
        lines += ["ITEM: TIMESTEP", str(i), "ITEM: NUMBER OF ATOMS", str(len(pos)), "ITEM: BOX BOUNDS pp pp pp"]
        lines += [f"0.0 {cell[k, k]:.12f}" for k in range(3)] + ["ITEM: ATOMS id element x y z fx fy fz"]
        lines += [f"{j + 1} {syms[j]} {' '.join(f'{x:.12f}' for x in (*pos[j], *frc[j]))}" for j in range(len(pos))]
    dump = tmp_path / "dump.lammpstrj"
    dump.write_text("\n".join(lines) + "\n")
    h5 = tmp_path / "lmp.h5"
    imp = dynamat_cmd("reference", "import", str(dump), "--out", str(h5), "--name", "Cu3Au_500K",
                      "--dt-fs", str(ref.dt_fs))
    assert imp.returncode == 0, imp.stderr
    assert "labels: forces (no energies: force errors, Eq. 2, only)" in imp.stdout, imp.stdout
    out = tmp_path / "sp.json"
    res = dynamat_cmd("singlepoint", "--model", "lj", "--driver-arg=-o", "--driver-arg=sigma=2.3",
                      "--system", "Cu3Au_500K", "--reference", str(h5), "--json", str(out))
    assert res.returncode == 0, res.stderr
    s = json.loads(out.read_text())
    f_lj = []
    for pos, cell in zip(ref.positions, ref.cells):
        a = Atoms(numbers=ref.numbers, positions=pos, cell=cell, pbc=True)
        a.calc = LennardJones(epsilon=0.1, sigma=2.3, rc=6.9, smooth=True)
        f_lj.append(a.get_forces())
    expected_f = np.sqrt(np.sum((np.array(f_lj) - ref.forces) ** 2) / (ref.n_frames * ref.n_atoms))  # Eq. 2
    assert s["force_rmse_eV_per_A"] == pytest.approx(expected_f, rel=1e-6) and s["n_frames_singlepoint"] == 16
    assert s["energy_rmse_eV_per_atom"] is None and s["matbench_singlepoint"]["energy_rmse"] is None
    assert s["energy_rmse_eV_per_atom_note"] == "the reference holds no energies"
    assert "n/a  (the reference holds no energies)" in res.stdout, res.stdout
    line = _one_line_error(dynamat_cmd("singlepoint", "--model", "lj", "--system", "Cu3Au_500K", "--reference",
                                       str(h5), "--energy-reference", "isolated"))
    assert "holds forces but no energies" in line, line


def test_score_singlepoint_gives_the_error_its_labels_allow():
    """Energies without forces give Eq. 1 (and the fluctuation RMSE) with Eq. 2 None, and the reverse."""
    from dynamat.scoring import score_singlepoint

    rng = np.random.default_rng(4)
    m, n = 6, 5
    e_ref, e_pred = rng.normal(size=m), rng.normal(size=m)
    f_ref, f_pred = rng.normal(size=(m, n, 3)), rng.normal(size=(m, n, 3))
    only_e = score_singlepoint(e_ref, None, e_pred, f_pred, n)
    assert only_e["force_rmse_eV_per_A"] is None
    assert only_e["energy_rmse_eV_per_atom"] == pytest.approx(np.sqrt(np.mean((e_pred - e_ref) ** 2)) / n)
    d = (e_pred - e_pred.mean()) - (e_ref - e_ref.mean())
    assert only_e["energy_fluctuation_rmse_eV_per_atom"] == pytest.approx(np.sqrt(np.mean(d**2)) / n)
    only_f = score_singlepoint(None, f_ref, e_pred, f_pred, n)
    assert only_f["energy_rmse_eV_per_atom"] is None and only_f["energy_fluctuation_rmse_eV_per_atom"] is None
    assert only_f["force_rmse_eV_per_A"] == pytest.approx(np.sqrt(np.sum((f_pred - f_ref) ** 2) / (m * n)))
