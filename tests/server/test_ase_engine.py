"""--engine ase: ASE's Nosé–Hoover chain as the socket server, fed by the same dynamat-driver."""

import json

import numpy as np
from ase import Atoms, units
from ase.calculators.emt import EMT
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

from dynamat.io import read_ipi_run, read_reference

from conftest import DEMO, dynamat_cmd

SYSTEM = "bulkCu_300K-demo_EMT"


def test_ase_engine_equals_in_process_ase_md(tmp_path):
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "300", "--out", str(tmp_path),
                      "--engine", "ase", "--seed", "4")
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "emt" / SYSTEM
    proto = json.loads((run_dir / "run.json").read_text())["protocol"]
    # what ran: ASE's Nose-Hoover chain (it was recorded as i-PI's svr, which never ran)
    assert (proto["engine"], proto["thermostat"], proto["ipi_thermostat"]) == ("ase", "nhc", None)
    res = dynamat_cmd("score", "--system", SYSTEM, "--run", str(run_dir))
    assert res.returncode == 0, res.stderr
    assert json.loads((run_dir / "score.json").read_text())["engine"] == "ase"  # the report's emt+ASE entry
    traj = read_ipi_run(run_dir)
    assert traj.n_frames == 31 and traj.dt_fs == 2.5
    # the same integrator, thermostat and seed in-process, with EMT called directly
    ref0 = read_reference(DEMO, SYSTEM, frames=slice(0, 1))
    atoms = Atoms(numbers=ref0.numbers, positions=ref0.positions[0], cell=ref0.cells[0], pbc=True)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300.0, rng=np.random.default_rng(4))
    Stationary(atoms)
    atoms.calc = EMT()
    md = NoseHooverChainNVT(atoms, timestep=0.25 * units.fs, temperature_K=300.0, tdamp=254.5 * units.fs)
    md.run(300)
    np.testing.assert_allclose(traj.positions[-1], atoms.positions, atol=1e-7)
    np.testing.assert_allclose(traj.velocities[-1], atoms.get_velocities() * units.fs, atol=1e-9)
    # the driver speaks i-PI's units, ASE's server converts back with ASE's CODATA constants: they
    # differ by 3e-6 relative, far below any observable's noise
    np.testing.assert_allclose(traj.stress[-1], atoms.get_stress(), rtol=1e-5, atol=1e-9)


def test_ase_engine_refuses_langevin_protocols(tmp_path):
    from dynamat.catalogue import get_system
    from dynamat.errors import DynamatError
    from dynamat.runner import RunOptions, run_md
    import pytest

    mol = get_system("anthracene_293K")
    with pytest.raises(DynamatError, match="Nose-Hoover"):
        run_md("emt", mol, Atoms("Cu", cell=[5, 5, 5], pbc=True), "x", tmp_path, RunOptions(steps=10, engine="ase"))


def test_a_killed_ase_engine_run_says_it_starts_again(tmp_path):
    """The ASE engine writes no restart point: a rerun after a kill runs from step 0 again, and says so (it
    printed a plain 'running:' and redid every step unannounced)."""
    import subprocess

    from conftest import BIN, wait_for_step

    args = ["run", "--model", "emt", "--system", SYSTEM, "--out", str(tmp_path), "--engine", "ase", "--seed", "4"]
    first = subprocess.Popen([str(BIN / "dynamat"), *args, "--steps", "100000"], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        wait_for_step(tmp_path / "emt" / SYSTEM / "simulation.out", 50)
    finally:
        first.kill()
        first.wait(timeout=60)
    res = dynamat_cmd(*args, "--steps", "60")
    assert res.returncode == 0, res.stderr
    assert "holds an unfinished run with no restart point to resume from (the ASE engine writes none): " \
           "starting it again at step 0" in res.stderr
