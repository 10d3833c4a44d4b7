"""Every-step protocols (stride 1) save i-PI's float64 binary frames (issue 25 §3): the same numbers as
i-PI's own extxyz output of the same run, and no frame lost, repeated or changed across a kill + resume."""

import os
import signal
import subprocess

import numpy as np
from ase.build import bulk

from dynamat.catalogue import Protocol, System
from dynamat.io import read_ipi_run, write_reference
from dynamat.io.ipi_output import read_ipi_bin, read_ipi_xyz
from dynamat.layout import RunFolder
from dynamat.runner import RunOptions, run_md
from dynamat.trajectory import Trajectory

from conftest import BIN, dynamat_cmd, wait_for_step

NAME = "custom_300K"
EXTXYZ_TOO = ("<trajectory filename='xpos' stride='1' format='ase' flush='1'> positions{ase} </trajectory>"
              "<trajectory filename='xvel' stride='1' format='ase' flush='1'> velocities{ase} </trajectory>")


def _printed(x: np.ndarray) -> np.ndarray:
    """``x`` as ASE's extxyz writer prints it ('%16.8f'), read back."""
    return np.array([float("%.8f" % v) for v in x.ravel()]).reshape(x.shape)


def test_binary_frames_are_ipis_own_numbers(tmp_path):
    """The same run writes both formats: every binary value, printed as extxyz prints it, is the extxyz value,
    at the same steps with the same cells; the run's Trajectory comes from the binary frames."""
    proto = Protocol("every_step", "n/a", "langevin", timestep_fs=0.5, tau_fs=10.0, stride=1, time_ps=0.02)
    system = System(NAME, "pure metal", 300.0, 3, proto)
    run_md("emt", system, bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2), "none", tmp_path,
           RunOptions(steps=40, seed=3, extra_outputs=EXTXYZ_TOO))
    rf = RunFolder(tmp_path / "emt" / NAME)
    assert rf.trajectory("pos").suffix == ".bin" and not rf.positions(0).exists()
    for what, extra in (("pos", "xpos"), ("vel", "xvel")):
        binary = read_ipi_bin(rf.binary_frames(what))
        text = read_ipi_xyz(rf.path / f"simulation.{extra}_0.extxyz")
        np.testing.assert_array_equal(binary["steps"], np.arange(41))
        np.testing.assert_array_equal(binary["steps"], text["steps"])
        np.testing.assert_array_equal(binary["cells"], text["cells"])
        assert binary["symbols"] == text["symbols"]
        assert np.abs(binary["data"]).max() > 1e-3  # real numbers, not zeros
        np.testing.assert_array_equal(_printed(binary["data"]), text["data"][..., -3:])
    traj = read_ipi_run(rf.path)
    np.testing.assert_array_equal(traj.positions, read_ipi_bin(rf.binary_frames("pos"))["data"])
    assert traj.velocities is not None and len(traj.energies) == 41 and traj.stress.shape == (41, 6)


def test_kill_and_resume_keeps_every_frame(tmp_path):
    """The whole job SIGKILLed after the step-1000 checkpoint: the rerun trims the binary frames to it and
    appends; frames up to it are bit-identical to an uninterrupted run, later ones agree to i-PI's restart
    precision (its checkpoint prints 9 significant digits), with every step exactly once."""
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
    left = os.path.getsize(RunFolder(run_dir).binary_frames("pos"))
    res = dynamat_cmd(*args, "--out", str(out))
    assert res.returncode == 0, res.stderr
    assert "step 1000" in res.stderr or "resuming" in res.stderr
    a, b = read_ipi_run(straight / "emt" / NAME), read_ipi_run(run_dir)
    np.testing.assert_array_equal(a.steps, np.arange(1201))
    np.testing.assert_array_equal(a.steps, b.steps)
    frame = os.path.getsize(RunFolder(run_dir).binary_frames("pos")) // 1201
    assert left > 1000 * frame  # the kill left frames past the restart point, which were trimmed
    np.testing.assert_array_equal(a.positions[:1001], b.positions[:1001])
    np.testing.assert_array_equal(a.velocities[:1001], b.velocities[:1001])
    np.testing.assert_allclose(a.positions[1001:], b.positions[1001:], rtol=0, atol=1e-6)
    assert os.path.getsize(RunFolder(run_dir).binary_frames("pos")) == 1201 * frame
