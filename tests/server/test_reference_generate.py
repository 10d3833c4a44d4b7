"""``dynamat reference generate``: a reference is a run with another force client (issue 22 §1, §3, §4).

Real i-PI, real dynamat-driver, real ASE EMT. The identity proof: ``--engine driver --model emt`` stores
exactly the frames ``dynamat run --model emt`` writes with the same seed and protocol; the forces stored
are EMT's own on the stored positions; a kill resumes to the frames of a straight run.
"""

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

import ase.build
import ase.io
import h5py
import numpy as np
import pytest
from ase.calculators.emt import EMT

from dynamat.io.reference_h5 import read_reference, reference_attrs
from dynamat.io.run_folder import read_run_trajectory
from dynamat.metrics.equilibration import kinetic_temperature_settled
from dynamat.metrics.frame_interval import check_frame_interval
from dynamat.reference import initial_atoms
from dynamat.scoring.core import score_md

from conftest import BIN, DEMO, assert_one_line_error, assert_same_frames, dynamat_cmd, wait_for_step

SYSTEM = "bulkCu_300K-demo_EMT"
COMMON = ("--name", SYSTEM, "--temperature", "300", "--timestep-fs", "2", "--seed", "11")


@pytest.fixture(scope="module")
def structure(tmp_path_factory):
    path = tmp_path_factory.mktemp("structure") / "cu.extxyz"
    ase.io.write(path, initial_atoms(DEMO, SYSTEM), format="extxyz")
    return path


def _generate(out, structure, *extra):
    return dynamat_cmd("reference", "generate", "--structure", str(structure), "--out", str(out), *COMMON, *extra)


@pytest.fixture(scope="module")
def straight(tmp_path_factory, structure):
    """A straight 0.4 ps reference with two replicas, after 0.04 ps of equilibration."""
    out = tmp_path_factory.mktemp("straight") / "ref.h5"
    res = _generate(out, structure, "--engine", "driver", "--model", "emt", "--time-ps", "0.4",
                    "--equilibrate-ps", "0.04", "--replicas", "2")
    assert res.returncode == 0, res.stderr
    return out


@pytest.fixture(scope="module")
def emt_ref(tmp_path_factory, structure):
    """0.1 ps of EMT through ``--engine driver``, no equilibration."""
    ref = tmp_path_factory.mktemp("emt_ref") / "ref.h5"
    res = _generate(ref, structure, "--engine", "driver", "--model", "emt", "--time-ps", "0.1", "--equilibrate-ps", "0")
    assert res.returncode == 0, res.stderr
    return ref


def test_driver_engine_stores_exactly_the_frames_of_dynamat_run(tmp_path, emt_ref):
    ref = emt_ref
    run = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--reference", str(DEMO), "--time-ps", "0.1",
                      "--timestep-fs", "2", "--seed", "11", "--out", str(tmp_path / "runs"))
    assert run.returncode == 0, run.stderr
    mlip = read_run_trajectory(tmp_path / "runs" / "emt" / SYSTEM)
    got = read_reference(ref, SYSTEM)
    assert got.n_frames == mlip.n_frames == 6
    assert_same_frames(got, mlip, "steps", "positions", "cells", "energies", "stress")
    assert got.dt_fs == pytest.approx(20.0) and got.temperature_K == 300.0
    # the forces are EMT's own on the stored positions (an independent evaluation, in-process)
    for i in (0, got.n_frames - 1):
        atoms = ase.Atoms(numbers=got.numbers, positions=got.positions[i], cell=got.cells[i], pbc=True)
        atoms.calc = EMT()
        np.testing.assert_allclose(got.forces[i], atoms.get_forces(), atol=2e-5)
    attrs = reference_attrs(ref, SYSTEM)
    assert attrs["engine"] == "driver" and attrs["model"] == "emt" and attrs["seed"] == 11
    assert attrs["replica_of"] == SYSTEM and attrs["replica_index"] == 0 and attrs["md_timestep_fs"] == 2.0
    assert (ref.parent / "ref.h5.work" / "emt" / SYSTEM / "run.json").is_file()
    assert sorted(p.name for p in ref.parent.iterdir()) == ["ref.h5", "ref.h5.work"]  # nothing else written


def test_ase_engine_is_the_driver_with_a_calculator(tmp_path, structure, emt_ref):
    """``--engine ase --calculator ase.calculators.emt:EMT`` runs the same physics as the driver's emt."""
    ref = tmp_path / "ref.h5"
    res = _generate(ref, structure, "--engine", "ase", "--calculator", "ase.calculators.emt:EMT", "--time-ps", "0.1",
                    "--equilibrate-ps", "0")
    assert res.returncode == 0, res.stderr
    a, b = read_reference(ref, SYSTEM), read_reference(emt_ref, SYSTEM)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-7)
    np.testing.assert_allclose(a.forces, b.forces, atol=1e-6)
    assert reference_attrs(ref, SYSTEM)["model"] == "ase.calculators.emt:EMT"


def test_ase_engine_with_tblite_gfn_xtb(tmp_path):
    """A semi-empirical engine through the same door: tblite's GFN1-xTB on 8-atom Si, 2 steps; the stored
    forces and stress are tblite's own on the stored positions."""
    tblite_ase = pytest.importorskip("tblite.ase", reason="tblite (PyPI) is not installed")
    atoms = ase.build.bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions += np.random.default_rng(1).normal(0.0, 0.03, atoms.positions.shape)
    ase.io.write(tmp_path / "si8.extxyz", atoms, format="extxyz")
    ref = tmp_path / "ref.h5"
    res = dynamat_cmd("reference", "generate", "--engine", "ase", "--calculator", "tblite.ase:TBLite",
                      "--model-option", "method=GFN1-xTB", "--model-option", "verbosity=0", "--model-option",
                      "accuracy=0.001", "--structure",
                      str(tmp_path / "si8.extxyz"), "--name", "Si_600K", "--temperature", "600", "--timestep-fs", "1",
                      "--stride", "2", "--time-ps", "0.002", "--equilibrate-ps", "0", "--seed", "5", "--out", str(ref))
    assert res.returncode == 0, res.stderr
    got = read_reference(ref, "Si_600K")
    assert list(got.steps) == [0, 2]
    frame = ase.Atoms(numbers=got.numbers, positions=got.positions[-1], cell=got.cells[-1], pbc=True)
    frame.calc = tblite_ase.TBLite(method="GFN1-xTB", verbosity=0, accuracy=0.001)  # tight SCC on both sides
    np.testing.assert_allclose(got.forces[-1], frame.get_forces(), atol=1e-5)
    np.testing.assert_allclose(got.stress[-1], frame.get_stress(), atol=1e-6)
    assert "method=GFN1-xTB" in reference_attrs(ref, "Si_600K")["model_options"]


def test_replicas_are_stored_by_convention_with_their_seeds(straight):
    with h5py.File(straight) as f:
        assert sorted(f) == [SYSTEM, f"{SYSTEM}_r1"]
        a0, a1 = dict(f[SYSTEM].attrs), dict(f[f"{SYSTEM}_r1"].attrs)
    assert a0["replica_of"] == a1["replica_of"] == SYSTEM
    assert (a0["replica_index"], a1["replica_index"]) == (0, 1) and (a0["seed"], a1["seed"]) == (11, 12)
    r0, r1 = read_reference(straight, SYSTEM), read_reference(straight, f"{SYSTEM}_r1")
    assert r0.n_frames == r1.n_frames == 21 and r0.steps[0] == 0  # 0.4 ps / 20 fs + 1, equilibration dropped
    assert not np.allclose(r0.positions[-1], r1.positions[-1], atol=1e-3)  # independent trajectories
    # the stored frame interval passes the import's equipartition check (dt_fs is the time between frames)
    check = check_frame_interval(r0.positions, r0.cells, r0.pbc, r0.numbers, r0.dt_fs, 300.0)
    assert check.ok, (check.temperature_K, check.implied_dt_fs)
    # the reference scored against itself: zero observable errors (Eq. 4, 7, 10)
    same = score_md(r0, r0, n_boot=0)
    assert same["rdf_error_pct"] == 0.0 and same["pressure_mae_GPa"] == 0.0 and same["vdos_error_pct"] == 0.0
    # equilibration was run and dropped: the first stored frame is not the start structure
    assert a0["equilibrate_ps"] == pytest.approx(0.04) and a0["equilibrated"]  # started from an equilibrated frame
    assert not np.allclose(r0.positions[0], initial_atoms(DEMO, SYSTEM).positions, atol=1e-3)


def test_killed_generation_resumes_to_the_frames_of_a_straight_run(tmp_path, structure, straight):
    out = tmp_path / "ref.h5"
    cmd = [str(BIN / "dynamat"), "reference", "generate", "--structure", str(structure), "--out", str(out), *COMMON,
           "--engine", "driver", "--model", "emt", "--time-ps", "0.4", "--equilibrate-ps", "0.04"]
    proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step(tmp_path / "ref.h5.work" / "emt" / SYSTEM / "simulation.out", 120)  # past i-PI's first safe point (step 100)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert not out.exists()  # nothing is stored before the run is complete
    res = dynamat_cmd(*cmd[1:])
    assert res.returncode == 0, res.stderr
    assert "resuming" in res.stderr
    a, b = read_reference(straight, SYSTEM), read_reference(out, SYSTEM)
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
    np.testing.assert_allclose(a.forces, b.forces, atol=1e-5)


def test_bad_requests_are_one_line_and_touch_nothing(tmp_path, structure, straight):
    before = straight.read_bytes()
    res = _generate(straight, structure, "--engine", "driver", "--model", "emt", "--time-ps", "0.1")
    assert_one_line_error(res, "already holds", "--overwrite")
    assert straight.read_bytes() == before
    res = _generate(tmp_path / "x.h5", structure, "--engine", "driver", "--time-ps", "0.1")
    assert_one_line_error(res, "--model")
    res = _generate(tmp_path / "x.h5", tmp_path / "missing.cif", "--engine", "driver", "--model", "emt",
                    "--time-ps", "0.1")
    assert_one_line_error(res, "structure file not found")
    res = _generate(tmp_path / "x.h5", structure, "--engine", "driver", "--model", "emt", "--time-ps", "0.1",
                    "--pressure-GPa", "2")  # no file's barostat to adjust: NPT is asked for by name
    assert_one_line_error(res, "--pressure-GPa only matters with --ensemble npt (add --ensemble npt to generate")
    assert list(tmp_path.iterdir()) == []


def test_unsettled_equilibration_is_said_and_recorded(tmp_path):
    """From the ideal lattice, equipartition halves the kinetic temperature at once; with a thermostat far
    too slow (tau 100 ps) it stays near 150 K through a 0.04 ps equilibration: a warning, and the group says so."""
    ase.io.write(tmp_path / "cu108.extxyz", ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3), format="extxyz")
    ref = tmp_path / "ref.h5"
    res = dynamat_cmd("reference", "generate", "--engine", "driver", "--model", "emt", "--structure",
                      str(tmp_path / "cu108.extxyz"), "--name", "Cu_300K", "--temperature", "300", "--timestep-fs", "2",
                      "--tau-fs", "100000", "--stride", "2", "--equilibrate-ps", "0.04", "--time-ps", "0.01",
                      "--seed", "1", "--out", str(ref))
    assert res.returncode == 0, res.stderr
    assert "dynamat: warning: Cu_300K: the kinetic temperature has not settled" in res.stderr
    assert not reference_attrs(ref, "Cu_300K")["equilibrated"]


def test_kinetic_temperature_settled_follows_the_canonical_spread():
    rng = np.random.default_rng(3)
    n_dof, target = 93, 300.0
    # canonical kinetic temperatures: T0 * chi2(n_dof) / n_dof
    canonical = target * rng.chisquare(n_dof, size=400) / n_dof
    assert kinetic_temperature_settled(canonical, target, n_dof)[0]
    heating = np.linspace(0.0, 200.0, 400)  # a start from rest, still heating at the end
    ok, why = kinetic_temperature_settled(heating, target, n_dof)
    assert not ok and "K" in why
    assert not kinetic_temperature_settled(canonical + 150.0, target, n_dof)[0]


def test_a_replica_folder_is_not_continued_as_another_system(tmp_path, structure, straight):
    """Replica 1 of X lives in the folder a system named X_r1 would use: as for `dynamat run`, generating
    X_r1 there is refused in one line (a kill before the store leaves such a folder), and nothing changes."""
    work = tmp_path / "ref.h5.work"
    shutil.copytree(Path(f"{straight}.work"), work)
    r1 = work / "emt" / f"{SYSTEM}_r1"
    assert json.loads((r1 / "run.json").read_text())["replica"] == 1
    before = {p: p.read_bytes() for p in r1.iterdir() if p.is_file()}
    res = dynamat_cmd("reference", "generate", "--structure", str(structure), "--out", str(tmp_path / "ref.h5"),
                      "--name", f"{SYSTEM}_r1", "--temperature", "300", "--timestep-fs", "2", "--seed", "11",
                      "--engine", "driver", "--model", "emt", "--time-ps", "0.4", "--equilibrate-ps", "0.04")
    assert_one_line_error(res, "replica 1", "--overwrite")
    assert {p: p.read_bytes() for p in r1.iterdir() if p.is_file()} == before
    assert not (tmp_path / "ref.h5").exists()
