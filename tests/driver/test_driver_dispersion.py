"""``--dispersion d3-bj`` (dynamat_driver.models.dispersion): the model + D3(BJ) sum.

* The correction equals simple-dftd3's own ASE calculator (``dftd3.ase.DFTD3``) to 1e-8 in energy (eV),
  forces (eV/Å) and stress (eV/Å³), float64, on a periodic molecular crystal-like cell, fcc Cu and a
  molecule; and, for the molecule, tad-dftd3's independent PyTorch implementation (autograd forces).
* Forces and stress are the derivatives of the energy: central differences in positions and strain.
* The sum is the model's own result + the correction (EMT), through ``calculate`` and ``calculate_batch``.
* Errors are one line; a real ``dynamat run --dispersion d3-bj`` records it in run.json.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.calculators.emt import EMT
from ase.stress import full_3x3_to_voigt_6_stress

from dynamat_driver import DriverError

pytest.importorskip("dftd3.ase", reason="simple-dftd3 (pip install dftd3) is the D3 package the driver uses")
from dftd3.ase import DFTD3  # noqa: E402

from dynamat_driver.models import load_model  # noqa: E402
from dynamat_driver.models.dispersion import D3_MAX_Z, D3Correction, D3Model, check_dispersion  # noqa: E402

BIN = Path(sys.executable).parent
SYSTEM = "bulkCu_300K-demo_EMT"
TOL = 1e-8


def molecular_crystal() -> Atoms:
    """Water, methanol and ammonia in a triclinic periodic cell (a molecular-crystal-like packing)."""
    atoms = Atoms(cell=[[7.2, 0.0, 0.0], [0.6, 6.8, 0.0], [-0.4, 0.5, 7.5]], pbc=True)
    for name, at in (("H2O", (1.0, 1.2, 1.1)), ("CH3OH", (4.3, 3.9, 2.4)), ("NH3", (2.2, 4.6, 5.3))):
        m = molecule(name)
        m.translate(np.array(at) - m.get_center_of_mass())
        atoms += m
    atoms.rattle(0.03, seed=4)
    return atoms


def copper() -> Atoms:
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=1)
    atoms.set_cell(atoms.cell.array @ np.array([[1.0, 0.02, 0.0], [0.0, 0.99, 0.01], [0.0, 0.0, 1.01]]),
                   scale_atoms=True)
    return atoms


def ethanol() -> Atoms:
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.05, seed=2)
    return atoms


STRUCTURES = {"molecular_crystal": molecular_crystal, "fcc_Cu": copper, "molecule": ethanol}


def reference(atoms: Atoms, functional: str = "pbe"):
    a = atoms.copy()
    a.calc = DFTD3(method=functional, damping="d3bj")
    stress = a.get_stress() if a.pbc.any() else None
    return a.get_potential_energy(), a.get_forces(), stress


# ---------------------------------------------------------------------------- the package's own calculator
@pytest.mark.parametrize("functional", ["pbe", "b3lyp"])
@pytest.mark.parametrize("name", sorted(STRUCTURES))
def test_correction_equals_simple_dftd3_calculator(name, functional):
    atoms = STRUCTURES[name]()
    e, f, s = D3Correction(functional)(atoms)
    e_ref, f_ref, s_ref = reference(atoms, functional)
    assert e < 0 and abs(e - e_ref) <= TOL, (e, e_ref)
    assert np.abs(f - f_ref).max() <= TOL
    if s_ref is None:
        assert s is None  # no cell, no stress
    else:
        assert np.abs(full_3x3_to_voigt_6_stress(s) - s_ref).max() <= TOL
        assert np.abs(s).max() > 1e-5  # a stress that matters, not two zeros agreeing


def test_functional_changes_the_correction():
    atoms = molecular_crystal()
    assert abs(D3Correction("pbe")(atoms)[0] - D3Correction("b3lyp")(atoms)[0]) > 1e-3


def test_correction_equals_tad_dftd3_on_a_molecule():
    """An independent implementation (PyTorch, autograd gradient) of the same model and parameters;
    tad-dftd3 has no periodic boundary conditions, so a molecule only. Its default PBE parameters
    carry the three-body term (s9 = 1); the driver's, like DFTD3(damping="d3bj"), do not."""
    torch = pytest.importorskip("torch")
    d3 = pytest.importorskip("tad_dftd3")
    from ase.units import Bohr, Hartree

    atoms = ethanol()
    param = d3.param.get_functional_params("pbe", damping="bj", dtype=torch.float64)
    param["s9"] = torch.tensor(0.0, dtype=torch.float64)
    pos = torch.tensor(atoms.positions / Bohr, dtype=torch.float64, requires_grad=True)
    energy = d3.dftd3(torch.tensor(atoms.numbers), pos, param).sum()
    (grad,) = torch.autograd.grad(energy, pos)
    e, f, _ = D3Correction("pbe")(atoms)
    assert abs(e - energy.item() * Hartree) <= TOL
    assert np.abs(f + grad.numpy() * Hartree / Bohr).max() <= TOL


# ---------------------------------------------------------------------------- derivatives of the energy
def _strained(atoms: Atoms, eps: np.ndarray) -> Atoms:
    a = atoms.copy()
    a.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
    return a


def _check_derivatives(atoms, energy, forces, stress, *, h_pos, h_strain, force_tol, stress_tol):
    """Central differences: position steps ``h_pos`` Å on 4 atoms, symmetric strains ``h_strain``."""
    for i in np.random.default_rng(0).choice(len(atoms), 4, replace=False):
        for k in range(3):
            plus, minus = atoms.copy(), atoms.copy()
            plus.positions[i, k] += h_pos
            minus.positions[i, k] -= h_pos
            assert -(energy(plus) - energy(minus)) / (2 * h_pos) == pytest.approx(forces[i, k], abs=force_tol)
    if stress is None:
        return
    vol = atoms.get_volume()
    for i, j in ((0, 0), (1, 1), (2, 2), (1, 2), (0, 2), (0, 1)):
        eps = np.zeros((3, 3))
        eps[i, j] = eps[j, i] = h_strain / 2 if i != j else h_strain
        d = (energy(_strained(atoms, eps)) - energy(_strained(atoms, -eps))) / (2 * h_strain) / vol
        assert d == pytest.approx(stress[i, j], abs=stress_tol), (i, j)


@pytest.mark.parametrize("name", ["molecular_crystal", "fcc_Cu"])
def test_forces_and_stress_are_energy_derivatives(name):
    """F = -dE/dr and σ = (1/V) dE/dε (ASE's sign) of the EMT + D3 sum, central differences.

    Forces: the sum as served. Stress: with the D3 two-body cutoff switched off smoothly over 5 Bohr,
    since simple-dftd3's default hard cutoff (60 Bohr, what the driver serves, equal to the package's
    calculator above) makes the energy jump where a pair crosses it under strain (by up to 4e-5
    eV/Å³ × 2h·V in fcc Cu, whose equidistant shells cross together) and the analytic stress rightly
    leaves the jumps out; the smooth cutoff changes nothing else."""
    atoms = STRUCTURES[name]()
    model = D3Model(load_model("emt"))
    _, forces, _ = model.calculate(atoms, True)
    smooth = D3Model(load_model("emt"))
    smooth.d3 = D3Correction("pbe", realspace_cutoff={"width2": 5.0})
    _, _, stress = smooth.calculate(atoms, True)
    assert np.abs(stress - load_model("emt").calculate(atoms, True)[2][[0, 5, 4, 5, 1, 3, 4, 3, 2]].reshape(3, 3)
                  ).max() > 1e-4  # D3's share of the stress matters
    _check_derivatives(atoms, lambda a: model.calculate(a, True)[0], forces, None,
                       h_pos=1e-4, h_strain=None, force_tol=1e-6, stress_tol=None)
    _check_derivatives(atoms, lambda a: smooth.calculate(a, True)[0], smooth.calculate(atoms, True)[1], stress,
                       h_pos=1e-4, h_strain=1e-5, force_tol=1e-6, stress_tol=1e-8)


@pytest.mark.parametrize("name", ["molecular_crystal", "fcc_Cu"])
def test_d3_alone_is_the_exact_derivative_with_a_smooth_cutoff(name):
    """The correction alone, tighter: its forces and stress are the derivatives of its energy to
    finite-difference precision."""
    atoms = STRUCTURES[name]()
    d3 = D3Correction("pbe", realspace_cutoff={"width2": 5.0})
    _, forces, stress = d3(atoms)
    assert np.abs(stress).max() > 1e-4
    _check_derivatives(atoms, lambda a: d3(a)[0], forces, stress,
                       h_pos=1e-4, h_strain=1e-5, force_tol=1e-8, stress_tol=1e-9)


# ---------------------------------------------------------------------------- the sum, the wrapper
def test_sum_is_model_plus_correction_one_by_one_and_batched():
    structures = [copper(), copper()]
    structures[1].positions += 0.03 * np.random.default_rng(1).standard_normal(structures[1].positions.shape)
    wrapped = load_model("emt", dispersion="d3-bj")
    assert isinstance(wrapped, D3Model)
    ones = [wrapped.calculate(atoms, k == 0) for k, atoms in enumerate(structures)]
    batch = wrapped.calculate_batch(structures)
    for k, atoms in enumerate(structures):
        one = ones[k]
        a = atoms.copy()
        a.calc = EMT()
        e_d3, f_d3, s_d3 = reference(atoms)
        for e, f, s in (one, batch[k]):
            assert abs(e - (a.get_potential_energy() + e_d3)) <= TOL
            assert np.abs(f - (a.get_forces() + f_d3)).max() <= TOL
            assert np.abs(full_3x3_to_voigt_6_stress(s) - (a.get_stress() + s_d3)).max() <= TOL


def test_stress_left_out_when_not_asked():
    class Skips(D3Model):
        pass

    base = load_model("emt")
    base.skips_stress = True
    base.calculate = lambda atoms, first, stress=True: (1.0, np.zeros((len(atoms), 3)),
                                                        np.zeros(6) if stress else None)
    model = Skips(base)
    atoms = copper()
    assert model.skips_stress and model.calculate(atoms, True, stress=False)[2] is None
    e, f, s = model.calculate(atoms, True, stress=True)
    assert np.abs(full_3x3_to_voigt_6_stress(s) - reference(atoms)[2]).max() <= TOL


def test_describe_and_versions_name_the_correction():
    model = load_model("emt", dispersion="d3-bj", dispersion_functional="PBE0")
    d = model.describe()
    assert d["dispersion"] == "d3-bj(pbe0)" and d["human_name"].endswith("+D3") and d["model"] == "emt"
    assert "dftd3" in model.versions()
    assert "dispersion" not in load_model("emt").describe()


def test_species_beyond_d3_refused():
    model = D3Model(load_model("lj"))
    model.check_species([1, 6, 103])
    with pytest.raises(DriverError, match="no D3 parameters for element.* Rf"):
        model.check_species([1, 104])
    covered = D3Model(load_model("emt")).covered_numbers
    assert covered == load_model("emt").covered_numbers and max(covered) <= D3_MAX_Z


@pytest.mark.parametrize("method, functional, message", [
    ("d3-zero", None, "--dispersion must be one of d3-bj"),
    ("d3-bj", "nonsense", "no D3(BJ) parameters for it"),
    (None, "pbe", "only matters with --dispersion"),
])
def test_bad_options_are_one_line(method, functional, message):
    with pytest.raises(DriverError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_dispersion(method, functional)


def _driver(args, env=None, cwd=None):
    return subprocess.run([str(BIN / "dynamat-driver"), *args], capture_output=True, text=True, timeout=120,
                          env=env, cwd=cwd)


def test_driver_says_missing_package_and_bad_functional_in_one_line(tmp_path):
    import os

    hidden = tmp_path / "hide"
    (hidden / "dftd3").mkdir(parents=True)
    (hidden / "dftd3" / "__init__.py").write_text("raise ImportError('No module named dftd3')\n")
    env = dict(os.environ, PYTHONPATH=str(hidden))
    sock = ["--unix", str(tmp_path / "nosock"), "--connect-timeout", "1"]
    for args, env_, expected in ((["--dispersion", "d3-bj"], env, "pip install dftd3"),
                                 (["--dispersion", "d3-bj", "--dispersion-functional", "nope"], None,
                                  "no D3(BJ) parameters")):
        res = _driver(["--model", "emt", *args, *sock], env=env_, cwd=tmp_path)
        assert res.returncode == 1 and len(res.stderr.strip().splitlines()) == 1, res.stderr
        assert res.stderr.startswith("dynamat-driver: error: ") and expected in res.stderr, res.stderr


# ---------------------------------------------------------------------------- the server's side
def test_server_options_become_driver_arguments(tmp_path):
    from dynamat.models_file import dispersion_args
    from dynamat.errors import DynamatError

    assert dispersion_args(None, None) == ()
    assert dispersion_args("d3-bj", None) == ("--dispersion=d3-bj",)
    assert dispersion_args("d3-bj", "r2scan") == ("--dispersion=d3-bj", "--dispersion-functional=r2scan")
    for bad in ((None, "pbe"), ("d3-bj", "pbe; rm -rf"), ("d3-bj", "")):
        with pytest.raises(DynamatError):
            dispersion_args(*bad)
    res = subprocess.run([str(BIN / "dynamat"), "inputs", "--system", SYSTEM, "--out", str(tmp_path / "in"),
                          "--model", "emt", "--dispersion", "d3-bj", "--steps", "10"],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "dynamat-driver --model emt --dispersion=d3-bj --unix" in res.stdout


def test_report_labels_the_model_plus_d3(tmp_path):
    """run.json's dispersion (or, for an older run.json, its driver timing's) reaches score.json's
    model facts only when set, and the report names that model <name>+D3."""
    from dynamat.report.tables import _normalise_row
    from dynamat.scoring.run import model_facts

    assert model_facts({"dispersion": "d3-bj(pbe)"})["dispersion"] == "d3-bj(pbe)"
    timing = {"driver_timings": [{"model": {"dispersion": "d3-bj(r2scan)", "human_name": "ASE EMT+D3"}}]}
    assert model_facts(timing)["dispersion"] == "d3-bj(r2scan)"
    assert "dispersion" not in model_facts({"dispersion": None, "model_label": "ASE EMT"})

    path = tmp_path / "emt" / SYSTEM / "score.json"
    assert _normalise_row({"model": "emt", "dispersion": "d3-bj(pbe)"}, path)["model"] == "emt+D3"
    assert _normalise_row({"model": "emt"}, path)["model"] == "emt"


@pytest.mark.slow
@pytest.mark.parametrize("pack", [(), ("--pack", "1")], ids=["driver", "pack_driver"])
def test_real_run_serves_and_records_the_correction(tmp_path, pack):
    """A real i-PI run: the potential energy i-PI reports at step 0 is EMT + D3 of the start structure
    (the package's own calculators), and run.json records the correction."""
    from ase.io import read

    out = tmp_path / "runs"
    res = subprocess.run([str(BIN / "dynamat"), "run", "--model", "emt", "--dispersion", "d3-bj", "--system", SYSTEM,
                          "--steps", "20", "--seed", "3", "--out", str(out), *pack],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    folder = out / "emt" / SYSTEM
    rec = json.loads((folder / "run.json").read_text())
    assert rec["status"] == "completed" and rec["steps_done"] == 20
    assert rec["dispersion"] == "d3-bj(pbe)" and rec["model_label"].endswith("+D3")
    assert rec["versions"].get("driver:dftd3")
    assert rec["driver_timings"][0]["model"]["dispersion"] == "d3-bj(pbe)"
    start = read(folder / "init.xyz")
    e_d3 = reference(start)[0]
    start.calc = EMT()
    assert "# column   5     --> potential{electronvolt}" in (folder / "simulation.out").read_text()
    step0 = np.loadtxt(folder / "simulation.out", ndmin=2)[0]
    assert step0[0] == 0 and abs(e_d3) > 1.0
    assert step0[4] == pytest.approx(start.get_potential_energy() + e_d3, abs=1e-5)  # column 5: potential, eV


@pytest.mark.slow
def test_a_run_is_not_continued_with_another_correction(tmp_path):
    """The run folder is named by the model alone: extending an EMT run with --dispersion is refused in
    one line and leaves the run as it was."""
    out = tmp_path / "runs"
    base = [str(BIN / "dynamat"), "run", "--model", "emt", "--system", SYSTEM, "--seed", "3", "--out", str(out)]
    first = subprocess.run([*base, "--steps", "10"], capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    run_json = out / "emt" / SYSTEM / "run.json"
    before = run_json.read_text()
    res = subprocess.run([*base, "--steps", "20", "--dispersion", "d3-bj"], capture_output=True, text=True,
                         timeout=600, cwd=tmp_path)
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "no --dispersion" in res.stderr and "--dispersion d3-bj(pbe)" in res.stderr and "mix two models" in res.stderr
    assert run_json.read_text() == before


@pytest.mark.slow
def test_singlepoint_error_is_the_correction_on_an_emt_reference(tmp_path):
    """The demo reference is EMT-labelled, so EMT + D3 misses it (Eq. 1, isolated-atom referenced) by
    exactly the D3 energy per atom of the frame less the isolated atom's D3 energy, which dynamat
    computes in a periodic 20 Å cube: -1.2e-5 eV for Cu, from its images."""
    from ase.io import read

    subprocess.run([str(BIN / "dynamat"), "inputs", "--system", SYSTEM, "--out", str(tmp_path / "in"), "--steps", "10"],
                   check=True, capture_output=True, timeout=120)
    frame0 = read(tmp_path / "in" / "init.xyz")
    res = subprocess.run([str(BIN / "dynamat"), "singlepoint", "--model", "emt", "--dispersion", "d3-bj",
                          "--system", SYSTEM, "--max-frames", "1", "--json", str(tmp_path / "sp.json")],
                         capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    sp = json.loads((tmp_path / "sp.json").read_text())
    assert sp["dispersion"] == "d3-bj(pbe)"
    e_iso = reference(Atoms("Cu", positions=[[10.0, 10.0, 10.0]], cell=[20.0, 20.0, 20.0], pbc=True))[0]
    assert -2e-5 < e_iso < -1e-6
    expected = abs(reference(frame0)[0] / len(frame0) - e_iso)
    assert sp["energy_rmse_eV_per_atom"] == pytest.approx(expected, abs=1e-7)


def test_scored_and_reported_as_its_own_model(tmp_path):
    """The golden EMT run, once as recorded and once as if served with --dispersion: score.json
    carries the correction only for the second, and the report's tables list emt and emt+D3."""
    import shutil

    golden = Path(__file__).resolve().parents[1] / "data" / "golden" / "runs" / "emt_classical"
    for out, dispersion in (("plain", None), ("d3", "d3-bj(pbe)")):
        folder = tmp_path / out / "emt" / SYSTEM
        shutil.copytree(golden, folder)
        rec = json.loads((folder / "run.json").read_text())
        rec["dispersion"] = dispersion
        (folder / "run.json").write_text(json.dumps(rec))
        res = subprocess.run([str(BIN / "dynamat"), "score", "--system", SYSTEM, "--run", str(folder)],
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr
        score = json.loads((folder / "score.json").read_text())
        assert score.get("dispersion") == dispersion
    res = subprocess.run([str(BIN / "dynamat"), "report", str(tmp_path / "plain"), str(tmp_path / "d3"),
                          "--out", str(tmp_path / "report")], capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    table = json.loads((tmp_path / "report" / "tables" / "per_model.json").read_text())
    models = {row["model"] for row in table["rows"]}
    assert models == {"emt", "emt+D3"}
