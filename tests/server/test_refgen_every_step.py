"""Every-step (stride 1) references: ``reference generate`` stores the frames i-PI writes as float64 binary
frames (positions, and the forces it asks for), and ``reference import`` takes an every-step ``dynamat run``
folder (the driver's frame record). Real i-PI, dynamat-driver and EMT on 32 Cu atoms, ~100 steps."""

import json

import ase
import ase.build
import ase.io
import numpy as np
import pytest
from ase.calculators.emt import EMT

from dynamat.io.ipi_output import read_ipi_bin, read_properties
from dynamat.io.reference_h5 import read_reference
from dynamat.io.run_folder import read_run_trajectory
from dynamat.layout import RunFolder

from conftest import assert_same_frames, dynamat_cmd

NAME = "CuM_300K"


@pytest.fixture(scope="module")
def cu_cif(tmp_path_factory):
    path = tmp_path_factory.mktemp("structure") / "cu.cif"
    ase.io.write(path, ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2))
    return path


@pytest.fixture(scope="module")
def every_step_ref(tmp_path_factory, cu_cif):
    """The class protocol of a molecular crystal saves every step (0.5 fs): 0.05 ps = 100 steps."""
    out = tmp_path_factory.mktemp("gen") / "refm.h5"
    res = dynamat_cmd("reference", "generate", "--engine", "driver", "--model", "emt", "--structure", str(cu_cif),
                      "--name", NAME, "--temperature", "300", "--time-ps", "0.05", "--equilibrate-ps", "0",
                      "--class", "molecular crystal", "--out", str(out), "--seed", "5")
    assert res.returncode == 0, res.stderr
    return out


def test_every_step_reference_stores_the_frames_the_run_wrote(every_step_ref):
    got = read_reference(every_step_ref, NAME)
    rf = RunFolder(every_step_ref.parent / "refm.h5.work" / "emt" / NAME)
    # read independently of the store: i-PI's own binary trajectories and its properties
    pos, frc = read_ipi_bin(rf.binary_frames("pos")), read_ipi_bin(rf.binary_frames("frc"))
    props = read_properties(rf.properties)
    np.testing.assert_array_equal(got.steps, np.arange(101))
    np.testing.assert_array_equal(pos["steps"], got.steps)
    np.testing.assert_array_equal(frc["steps"], got.steps)
    np.testing.assert_array_equal(got.positions, pos["data"])
    np.testing.assert_array_equal(got.cells, pos["cells"])
    np.testing.assert_array_equal(got.forces, frc["data"])
    np.testing.assert_array_equal(got.energies, props["potential{electronvolt}"])
    assert got.stress.shape == (101, 6) and got.dt_fs == pytest.approx(0.5)
    # the forces are EMT's own on the stored positions
    for i in (0, 50, 100):
        atoms = ase.Atoms(numbers=got.numbers, positions=got.positions[i], cell=got.cells[i], pbc=True)
        atoms.calc = EMT()
        np.testing.assert_allclose(got.forces[i], atoms.get_forces(), atol=1e-6)
        assert got.energies[i] == pytest.approx(atoms.get_potential_energy(), abs=1e-6)
    assert np.abs(got.forces[-1]).max() > 1e-2  # the atoms moved: real forces, not the lattice's zeros


def test_stride_one_with_equilibration_stores_the_frames_after_it(tmp_path, cu_cif):
    out = tmp_path / "ref1.h5"
    res = dynamat_cmd("reference", "generate", "--engine", "driver", "--model", "emt", "--structure", str(cu_cif),
                      "--name", "Cu1_300K", "--temperature", "300", "--timestep-fs", "2", "--stride", "1",
                      "--time-ps", "0.1", "--equilibrate-ps", "0.02", "--out", str(out), "--seed", "7")
    assert res.returncode == 0, res.stderr
    got = read_reference(out, "Cu1_300K")
    run = read_run_trajectory(tmp_path / "ref1.h5.work" / "emt" / "Cu1_300K")
    np.testing.assert_array_equal(run.steps, np.arange(61))
    np.testing.assert_array_equal(got.steps, np.arange(51))  # the 10 equilibration steps dropped
    np.testing.assert_array_equal(got.positions, run.positions[10:])
    np.testing.assert_array_equal(got.forces, run.forces[10:])
    np.testing.assert_array_equal(got.energies, run.energies[10:])
    np.testing.assert_array_equal(got.stress, run.stress[10:])


def test_every_step_reference_scores_and_its_run_imports(tmp_path, every_step_ref):
    """The same system run by ``dynamat run`` (every step: the driver records the frames) from the reference's
    first frame with the same seed is the same trajectory; it scores against the generated reference, and its
    folder imports as a reference with the frames the run-folder reader gives."""
    ref = every_step_ref
    run = dynamat_cmd("run", "--model", "emt", "--system", NAME, "--reference", str(ref), "--steps", "100",
                      "--seed", "5", "--out", str(tmp_path / "runs"))
    assert run.returncode == 0, run.stderr
    run_dir = tmp_path / "runs" / "emt" / NAME
    assert RunFolder(run_dir).frame_record.exists() and not RunFolder(run_dir).trajectory("pos").exists()
    mlip, got = read_run_trajectory(run_dir), read_reference(ref, NAME)
    np.testing.assert_array_equal(mlip.steps, got.steps)
    np.testing.assert_allclose(mlip.positions, got.positions, atol=1e-6)  # init.xyz prints the start frame
    np.testing.assert_allclose(mlip.forces, got.forces, atol=1e-5)
    score = dynamat_cmd("score", "--system", NAME, "--reference", str(ref), "--run", str(run_dir))
    assert score.returncode == 0, score.stderr
    s = json.loads((run_dir / "score.json").read_text())
    assert s["n_frames_ref"] == s["n_frames_mlip"] == 101
    assert s["rdf_error_pct"] < 1e-3 and s["vdos_error_pct"] < 1e-3  # the same trajectory, to rounding
    imp = tmp_path / "imp.h5"
    res = dynamat_cmd("reference", "import", str(run_dir), "--out", str(imp), "--name", "CuI_300K")
    assert res.returncode == 0, res.stderr
    back = read_reference(imp, "CuI_300K")
    assert_same_frames(back, mlip, "steps", "positions", "forces", "energies", "stress")
    assert back.dt_fs == pytest.approx(0.5) and back.temperature_K == 300.0
