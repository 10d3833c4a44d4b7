"""Every-step protocols (stride 1): the driver records the frames, i-PI writes binary velocities (issue 25 §3).
The same numbers as i-PI's own outputs of the same run, and no frame lost, repeated or changed across a kill +
resume."""

import os
import signal
import subprocess

import numpy as np
import pytest
from ase.build import bulk

from dynamat.catalogue import Protocol, System
from dynamat.errors import DynamatError
from dynamat.io import read_ipi_run, write_reference
from dynamat.io.ipi_output import read_frame_record, read_ipi_bin, read_ipi_xyz, read_properties
from dynamat.layout import RunFolder
from dynamat.runner import RunOptions, run_md
from dynamat.trajectory import Trajectory

from dynamat_driver.contract import FRAMES_HEADER_BYTES, frame_record_floats
from dynamat_driver.units import HARTREE_PER_BOHR_PER_EV_PER_ANGSTROM

from conftest import BIN, dynamat_cmd, wait_for_step

NAME = "custom_300K"
#: i-PI's own outputs of the same run: positions and forces as float64, velocities as extxyz text
IPI_TOO = ("<trajectory filename='xpos' stride='1' format='bin' cell_units='ase'> positions{ase} </trajectory>"
           "<trajectory filename='xfrc' stride='1' format='bin'> forces </trajectory>"
           "<trajectory filename='xvel' stride='1' format='ase' flush='1'> velocities{ase} </trajectory>")


def _printed(x: np.ndarray) -> np.ndarray:
    """``x`` as ASE's extxyz writer prints it ('%16.8f'), read back."""
    return np.array([float("%.8f" % v) for v in x.ravel()]).reshape(x.shape)


def test_recorded_frames_are_ipis_own_numbers(tmp_path):
    """The driver's record of an every-step run against i-PI's own outputs of the same run: positions and
    cells bit for bit (i-PI's float64 trajectory), forces bit for bit (i-PI's, in atomic units, converted the
    same way), energies and virials to the digits i-PI prints; velocities in i-PI's binary frames are, printed
    as extxyz prints them, i-PI's extxyz values. Every step 0..40 once, and ``read_ipi_run`` returns these."""
    proto = Protocol("every_step", "n/a", "langevin", timestep_fs=0.5, tau_fs=10.0, stride=1, time_ps=0.02)
    system = System(NAME, "pure metal", 300.0, 3, proto)
    run_md("emt", system, bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2), "none", tmp_path,
           RunOptions(steps=40, seed=3, extra_outputs=IPI_TOO))
    rf = RunFolder(tmp_path / "emt" / NAME)
    assert rf.frame_record.exists() and not rf.trajectory("pos").exists()  # i-PI wrote no positions of its own
    rec = read_frame_record(rf.frame_record)
    pos, frc = read_ipi_bin(rf.binary_frames("xpos")), read_ipi_bin(rf.binary_frames("xfrc"))
    np.testing.assert_array_equal(rec["steps"], np.arange(41))
    np.testing.assert_array_equal(rec["steps"], pos["steps"])
    np.testing.assert_array_equal(rec["cells"], pos["cells"])
    np.testing.assert_array_equal(rec["data"], pos["data"])
    np.testing.assert_array_equal(rec["extra"]["forces"], frc["data"] / HARTREE_PER_BOHR_PER_EV_PER_ANGSTROM)
    assert np.abs(rec["extra"]["forces"]).max() > 1e-2  # real forces, not zeros
    props = read_properties(rf.properties)
    np.testing.assert_allclose(rec["extra"]["energies"], props["potential{electronvolt}"], rtol=1e-8, atol=1e-9)
    vol = np.abs(np.linalg.det(rec["cells"]))
    v = rec["extra"]["virials"] / vol[:, None, None]
    voigt = np.stack([v[:, 0, 0], v[:, 1, 1], v[:, 2, 2], v[:, 0, 1], v[:, 0, 2], v[:, 1, 2]], axis=1)
    # i-PI prints 9 digits, and its ev/ang3 table entry differs from its eV/bohr^3 ratio by ~1.1e-7 (as ev/ang)
    np.testing.assert_allclose(voigt, props["virial_md{ev/ang3}"], rtol=2.5e-7, atol=1e-12)
    vel, text = read_ipi_bin(rf.trajectory("vel")), read_ipi_xyz(rf.path / "simulation.xvel_0.extxyz")
    np.testing.assert_array_equal(vel["steps"], text["steps"])
    assert np.abs(vel["data"]).max() > 1e-3
    np.testing.assert_array_equal(_printed(vel["data"]), text["data"][..., -3:])
    traj = read_ipi_run(rf.path)
    np.testing.assert_array_equal(traj.positions, pos["data"])
    np.testing.assert_array_equal(traj.forces, rec["extra"]["forces"])
    assert traj.velocities is not None and len(traj.energies) == 41 and traj.stress.shape == (41, 6)
    # continuing it with two drivers (which cannot tell the steps apart) is refused before anything changes
    before = {p.name: p.read_bytes() for p in rf.path.iterdir() if p.is_file()}
    with pytest.raises(DynamatError, match="one driver"):
        run_md("emt", system, bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2), "none", tmp_path,
               RunOptions(steps=80, seed=3, n_drivers=2))
    assert {p.name: p.read_bytes() for p in rf.path.iterdir() if p.is_file()} == before


def test_kill_and_resume_keeps_every_frame(tmp_path):
    """The whole job SIGKILLed after the step-1000 checkpoint: the rerun trims the frame record and i-PI's
    outputs to it and appends; frames up to it are bit-identical to an uninterrupted run, later ones agree to round-off (the
    checkpoint holds float64 to the bit), with every step exactly once."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    ref = tmp_path / "ref.h5"
    write_reference(ref, Trajectory(numbers=atoms.numbers, positions=atoms.positions[None], cells=atoms.cell.array,
                                    dt_fs=0.5, temperature_K=300.0, name=NAME), {"system_class": "pure metal"})
    args = ["run", "--model", "emt", "--system", NAME, "--reference", str(ref), "--protocol", "langevin_10fs",
            "--steps", "1200", "--seed", "5"]
    straight = tmp_path / "straight"
    res = dynamat_cmd(*args, "--out", str(straight))
    assert res.returncode == 0, res.stderr
    out = tmp_path / "killed"
    proc = subprocess.Popen([str(BIN / "dynamat"), *args, "--out", str(out)], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = out / "emt" / NAME
    wait_for_step(run_dir / "simulation.out", 1060, timeout=120)
    os.killpg(proc.pid, signal.SIGKILL)  # the job, i-PI and the driver all die at once
    proc.wait()
    left = os.path.getsize(RunFolder(run_dir).frame_record)
    res = dynamat_cmd(*args, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "step 1000" in res.stderr or "resuming" in res.stderr
    a, b = read_ipi_run(straight / "emt" / NAME), read_ipi_run(run_dir)
    np.testing.assert_array_equal(a.steps, np.arange(1201))
    np.testing.assert_array_equal(a.steps, b.steps)
    frame = 8 * frame_record_floats(32)
    assert left > FRAMES_HEADER_BYTES + 1001 * frame  # the kill left frames past the restart point: trimmed
    assert os.path.getsize(RunFolder(run_dir).frame_record) == FRAMES_HEADER_BYTES + 1201 * frame
    for key in ("positions", "velocities", "forces"):
        np.testing.assert_array_equal(getattr(a, key)[:1001], getattr(b, key)[:1001])
    # i-PI's restart file holds float64 to the bit (17 digits, FLOAT_FORMAT; its default 9 put the resumed run
    # 1e-8 Å off at once): what is left is round-off (i-PI removes the centre of mass's momentum afresh)
    np.testing.assert_allclose(a.positions[1001:], b.positions[1001:], rtol=0, atol=1e-11)


def test_packed_every_step_runs_record_their_own_frames(tmp_path):
    """Two every-step runs served by one pack driver: each folder holds its own frame record, frame for
    frame the solo run's (the same seed: positions, velocities and forces bit for bit)."""
    systems = ("bulkCu_300K-demo_EMT", "bulkCu3Au_500K-demo_EMT")
    common = ["--model", "emt", "--protocol", "langevin_10fs", "--steps", "30", "--seed", "11"]
    res = dynamat_cmd("run", *common, "--system", ",".join(systems), "--pack", "2", "--out", str(tmp_path / "packed"))
    assert res.returncode == 0, res.stderr
    for name in systems:
        solo = dynamat_cmd("run", *common, "--system", name, "--out", str(tmp_path / "solo"))
        assert solo.returncode == 0, solo.stderr
        packed_dir = tmp_path / "packed" / "emt" / name
        assert RunFolder(packed_dir).frame_record.exists()
        a, b = read_ipi_run(packed_dir), read_ipi_run(tmp_path / "solo" / "emt" / name)
        np.testing.assert_array_equal(a.steps, np.arange(31))
        assert a.n_atoms != 0 and a.numbers.tolist() == b.numbers.tolist()
        for key in ("positions", "cells", "velocities", "forces"):
            np.testing.assert_array_equal(getattr(a, key), getattr(b, key))
