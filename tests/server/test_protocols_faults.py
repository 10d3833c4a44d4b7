"""Runs that explode, runs that are killed whole and rerun, bad inputs, and canonical sampling."""

import json
import os
import signal
import subprocess

import numpy as np
import pytest
from ase.build import bulk
from ase.data import atomic_masses

from dynamat.catalogue import Protocol, System
from dynamat.io import read_ipi_run, write_reference
from dynamat.report.tables import load_results
from dynamat.scoring.run import unfinished_run
from dynamat.runner import RunOptions, run_md
from dynamat.trajectory import Trajectory
from dynamat.units import AMU_A2_PER_FS2_TO_EV, KB_EV_PER_K

from conftest import BIN, dynamat_cmd, wait_for_step

SYSTEM = "bulkCu_300K-demo_EMT"


def _reference_with(atoms, tmp_path, name="custom_300K"):
    path = tmp_path / "ref.h5"
    write_reference(
        path,
        Trajectory(numbers=atoms.numbers, positions=atoms.positions[None], cells=atoms.cell.array,
                   dt_fs=2.5, temperature_K=300.0, name=name),
        {"system_class": "pure metal"},
    )
    return path


def test_overlapping_atoms_explode(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.positions[1] = atoms.positions[0] + [0.5, 0.0, 0.0]
    ref = _reference_with(atoms, tmp_path)
    res = dynamat_cmd("run", "--model", "lj", "--system", "custom_300K", "--reference", str(ref), "--steps", "400",
                      "--out", str(tmp_path / "runs"), "--driver-arg=-o", "--driver-arg=sigma=2.3")
    assert res.returncode != 0 and "exploded" in res.stderr and "Traceback" not in res.stderr
    run_dir = tmp_path / "runs" / "lj" / "custom_300K"
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "exploded" and rec["time_to_failure_fs"] is not None
    assert rec["steps_done"] < 400
    assert (run_dir / "simulation.pos_0.extxyz").stat().st_size > 0  # outputs kept for inspection
    # an exploded run is a result: rerunning does not silently replace it
    again = dynamat_cmd("run", "--model", "lj", "--system", "custom_300K", "--reference", str(ref), "--steps", "400",
                        "--out", str(tmp_path / "runs"))
    assert again.returncode != 0 and "exploded" in again.stderr


def test_nan_forces_explode(tmp_path):
    """Two atoms on the same site: Lennard-Jones returns non-finite forces at once."""
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.positions[1] = atoms.positions[0]
    ref = _reference_with(atoms, tmp_path)
    res = dynamat_cmd("run", "--model", "lj", "--system", "custom_300K", "--reference", str(ref), "--steps", "100",
                      "--out", str(tmp_path), "--driver-arg=-o", "--driver-arg=sigma=2.3")
    assert res.returncode != 0 and "Traceback" not in res.stderr
    rec = json.loads((tmp_path / "lj" / "custom_300K" / "run.json").read_text())
    assert rec["status"] == "exploded", rec
    assert "non-finite" in rec["error"]


def test_killed_job_resumes_on_rerun(tmp_path):
    """The whole `dynamat run` killed (pre-emption): rerunning the same command resumes, frames intact."""
    straight = tmp_path / "straight"
    assert dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "1500", "--out", str(straight),
                       "--seed", "5").returncode == 0
    out = tmp_path / "killed"
    proc = subprocess.Popen([str(BIN / "dynamat"), "run", "--model", "emt", "--system", SYSTEM, "--steps", "1500",
                             "--out", str(out), "--seed", "5"], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step(out / "emt" / SYSTEM / "simulation.out", 600, timeout=60)
    os.killpg(proc.pid, signal.SIGKILL)  # the job, i-PI and the driver all die at once
    proc.wait()
    # scored as it stands: unfinished (its run.json still says running), not a failure of the model
    res = dynamat_cmd("score", "--run", str(out / "emt" / SYSTEM))
    assert res.returncode == 0, res.stderr
    sc = json.loads((out / "emt" / SYSTEM / "score.json").read_text())
    assert sc["status"] == "incomplete" and 600 <= sc["last_frame_step"] < 1500, sc
    assert f"frames end at step {sc['last_frame_step']} of the 1500 steps" in res.stderr
    results = load_results(out)
    assert results.failures == [] and len(results.unfinished) == 1
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "1500", "--out", str(out), "--seed", "5")
    assert res.returncode == 0, res.stderr
    # the score made before the resume is named stale, at the step its frames reached
    assert any(f"up to step {sc['last_frame_step']}, and the run is now at step 1500" in n
               for n in load_results(out).notes)
    a = read_ipi_run(straight / "emt" / SYSTEM)
    b = read_ipi_run(out / "emt" / SYSTEM)
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
    # a completed run is never replaced without --overwrite: the same command again keeps it as it is
    before = (out / "emt" / SYSTEM / "simulation.out").read_bytes()
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "1500", "--out", str(out))
    assert res.returncode == 0 and "kept:" in res.stderr and "--overwrite" in res.stderr, res.stderr
    assert (out / "emt" / SYSTEM / "simulation.out").read_bytes() == before


def test_only_a_run_stopped_part_way_is_unfinished():
    assert unfinished_run({"status": "running"})
    assert unfinished_run({"status": "failed", "error": "interrupted; rerun the same command to resume"})
    assert not unfinished_run({"status": "failed", "error": "the driver failed: out of memory"})
    assert not unfinished_run({"status": "exploded"}) and not unfinished_run({"status": "completed"})


def test_corrupt_restart_is_a_clear_error(tmp_path):
    run_dir = tmp_path / "emt" / SYSTEM
    run_dir.mkdir(parents=True)
    (run_dir / "RESTART").write_text("<simulation><step>10</step><broken")
    (run_dir / "run.json").write_text(json.dumps({"status": "failed"}))
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "100", "--out", str(tmp_path))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()[-1]) > 0 and "i-PI" in res.stderr
    assert (run_dir / "RESTART").exists()  # earlier results are not destroyed


def test_unwritable_output(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "10", "--out", str(blocker / "sub"))
    assert res.returncode != 0 and "cannot write" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.slow
def test_svr_samples_the_canonical_ensemble(tmp_path):
    """Mean kinetic temperature within 2% of target; Var(K) = (f/2)(kT)^2 within its error (f = 3N - 3)."""
    proto = Protocol("test", "n/a", "svr", timestep_fs=2.0, tau_fs=20.0, stride=5, time_ps=1.0)
    system = System(SYSTEM, "pure metal", 300.0, 3, proto)
    atoms = bulk("Cu", "fcc", a=3.5898, cubic=True).repeat(2)
    run_md("emt", system, atoms, "none", tmp_path, RunOptions(steps=12000, seed=9))
    traj = read_ipi_run(tmp_path / "emt" / SYSTEM)[200:]  # drop 2 ps of equilibration
    m = atomic_masses[traj.numbers]
    ke = 0.5 * np.einsum("i,fij->f", m, traj.velocities**2) * AMU_A2_PER_FS2_TO_EV
    f = 3 * traj.n_atoms - 3
    kt = KB_EV_PER_K * 300.0
    t_mean = 2 * ke.mean() / (f * KB_EV_PER_K)
    assert abs(t_mean / 300.0 - 1) < 0.02, t_mean
    # block averages give the statistical error of the variance
    blocks = np.array_split(ke, 20)
    var_blocks = np.array([b.var() for b in blocks])
    expected = 0.5 * f * kt**2
    err = var_blocks.std(ddof=1) / np.sqrt(len(blocks))
    assert abs(ke.var() - expected) < 3 * err + 0.05 * expected, (ke.var(), expected, err)
    # and a microcanonical-like variance (no thermostat) would be far smaller: the test can fail
    assert expected > 3 * err


def test_relaxed_cell_protocol(tmp_path):
    """Fig. S5: FIRE + Frechet cell filter at P = 0 with the model, then NVT; burn-in dropped when scoring."""
    from dynamat.catalogue import get_system, with_protocol

    strained = bulk("Cu", "fcc", a=3.5898 * 1.03, cubic=True).repeat(2)
    strained.rattle(0.02, seed=1)
    system = with_protocol(get_system(SYSTEM), "relaxed_nhc")
    assert (system.protocol.timestep_fs, system.protocol.tau_fs, system.protocol.burn_in_ps) == (1.0, 20.0, 10.0)
    rec = run_md("emt", system, strained, "none", tmp_path, RunOptions(steps=300, seed=2))
    relax = rec.relaxation
    assert relax["converged"] and relax["fmax_eV_per_A"] <= 0.01 and relax["steps"] <= 500
    assert relax["volume_change_pct"] == pytest.approx(100 * (1 / 1.03**3 - 1), abs=0.3)  # back to EMT's a0
    from ase.io import read

    init = read(tmp_path / "emt" / SYSTEM / "init.xyz")
    assert init.cell.lengths() == pytest.approx([2 * 3.5898] * 3, abs=0.01)
    # scoring drops the burn-in: pretend it was 100 fs long
    rj = tmp_path / "emt" / SYSTEM / "run.json"
    meta = json.loads(rj.read_text())
    meta["protocol"]["burn_in_ps"] = 0.1
    rj.write_text(json.dumps(meta))
    out = tmp_path / "s.json"
    res = dynamat_cmd("score", "--system", SYSTEM, "--run", str(rj.parent), "--json", str(out))
    assert res.returncode == 0, res.stderr
    assert json.loads(out.read_text())["n_frames_mlip"] == 201  # steps 100..300 of 0..300
