"""A rerun does what its arguments say: a changed --steps continues to (or stops at) the new target, or is
refused in one line naming both counts; --steps off the save stride works; a run that failed before its
first step does not block the corrected rerun. Frames are compared with an uninterrupted run of the same seed."""

import json
import os
import signal
import subprocess

import numpy as np
import pytest

from dynamat.io import read_ipi_run

from conftest import BIN, dynamat_cmd, wait_for_step

SYSTEM = "bulkCu_300K-demo_EMT"
SEED = "7"


def _run(out, steps, *extra):
    return dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", str(steps), "--out", str(out),
                       "--seed", SEED, *extra)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    res = _run(out, 1200)
    assert res.returncode == 0, res.stderr
    return read_ipi_run(out / "emt" / SYSTEM)


def _same_frames(a, b, upto):
    keep = a.steps <= upto
    np.testing.assert_array_equal(a.steps[keep], b.steps)
    np.testing.assert_allclose(a.positions[keep], b.positions, atol=1e-6)


def _killed_at(out, steps, at_least):
    """Starts `dynamat run --steps STEPS` and SIGKILLs the whole job once i-PI has saved step AT_LEAST."""
    proc = subprocess.Popen([str(BIN / "dynamat"), "run", "--model", "emt", "--system", SYSTEM, "--steps", str(steps),
                             "--out", str(out), "--seed", SEED], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step(out / "emt" / SYSTEM / "simulation.out", at_least)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    return _after_the_kill(out / "emt" / SYSTEM)


def _after_the_kill(run_dir):
    """Waits as a user's rerun does, through the harness's own lock: i-PI got SIGTERM when its supervisor
    died and its soft exit writes RESTART (seconds on a loaded machine); an i-PI that never got the signal
    (seen on loaded CI machines) is found as an orphan and sent it after the lock's grace. Returns the step
    of the newest complete restart point."""
    from dynamat import processes, runner

    processes.RunLock(run_dir, wait_s=120, notify=lambda line: None).release()
    assert processes.orphans_in(run_dir) == []
    return runner.restart_point(run_dir)[1]


def test_completed_run_extended_to_a_larger_steps(tmp_path, straight):
    assert _run(tmp_path, 600).returncode == 0
    res = _run(tmp_path, 1200)
    assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "emt" / SYSTEM / "run.json").read_text())
    assert rec["steps_requested"] == 1200 and rec["steps_done"] == 1200 and rec["status"] == "completed"
    _same_frames(straight, read_ipi_run(tmp_path / "emt" / SYSTEM), 1200)
    # i-PI's copy of the step-600 RESTART it rewrote is superseded by the complete step-1200 one: not kept
    assert not list((tmp_path / "emt" / SYSTEM).glob("#*#*#")), sorted(p.name for p in (tmp_path / "emt" / SYSTEM).iterdir())
    from dynamat import runner

    assert runner.restart_point(tmp_path / "emt" / SYSTEM)[1] == 1200


def test_completed_run_is_not_shortened(tmp_path):
    assert _run(tmp_path, 600).returncode == 0
    res = _run(tmp_path, 300)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "600" in res.stderr and "300" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_killed_run_shortened_stops_at_the_new_count(tmp_path, straight):
    at = _killed_at(tmp_path, 1200, 200)
    assert at is not None and at < 900, at
    res = _run(tmp_path, 900)
    assert res.returncode == 0, res.stderr
    assert "step 900/1200" not in res.stderr
    rec = json.loads((tmp_path / "emt" / SYSTEM / "run.json").read_text())
    assert rec["steps_requested"] == 900 and rec["steps_done"] == 900
    got = read_ipi_run(tmp_path / "emt" / SYSTEM)
    _same_frames(straight, got, 900)


def test_killed_run_past_the_new_count_is_refused(tmp_path):
    at = _killed_at(tmp_path, 1200, 400)
    assert at is not None and at > 100
    res = _run(tmp_path, 100)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and str(at) in err and "100" in err


def test_killed_run_lengthened_continues(tmp_path, straight):
    at = _killed_at(tmp_path, 600, 200)
    assert at is not None and at < 600
    res = _run(tmp_path, 1200)
    assert res.returncode == 0, res.stderr
    _same_frames(straight, read_ipi_run(tmp_path / "emt" / SYSTEM), 1200)


@pytest.mark.parametrize("steps", [15, 4])
def test_steps_off_the_save_stride(tmp_path, steps):
    res = _run(tmp_path, steps)
    assert res.returncode == 0, res.stderr
    rec = json.loads((tmp_path / "emt" / SYSTEM / "run.json").read_text())
    last = (steps // 10) * 10
    assert rec["status"] == "completed" and rec["steps_requested"] == steps and rec["steps_done"] == last
    assert any("stride" in n for n in rec["notes"]) and f"step {last}" in res.stdout
    assert read_ipi_run(tmp_path / "emt" / SYSTEM).steps[-1] == last


def test_failed_before_first_step_does_not_block_the_rerun(tmp_path):
    bad = _run(tmp_path, 20, "--driver-arg=--dtype=float13")
    assert bad.returncode != 0
    assert json.loads((tmp_path / "emt" / SYSTEM / "run.json").read_text())["status"] == "failed"
    res = _run(tmp_path, 20)
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "emt" / SYSTEM / "run.json").read_text())["status"] == "completed"


def test_orphaned_ipi_of_a_killed_job_is_stopped_by_the_rerun(tmp_path, straight):
    """An i-PI that outlives its SIGKILLed supervisor without the parent-death signal (seen twice on
    loaded CI machines: the driver got its signal and went, i-PI waited for a client for good, holding
    the folder's lock) is found by the rerun from the supervisor pid in its environment and sent
    SIGTERM; its soft exit writes RESTART and the rerun resumes from it, frames equal to a straight run."""
    from dynamat import processes

    run_dir = tmp_path / "emt" / SYSTEM
    no_pdeathsig = ("import sys, dynamat.processes as p; p._PRCTL = None; from dynamat.cli import main; "
                    "sys.argv[0] = 'dynamat'; main()")
    proc = subprocess.Popen([str(BIN / "python"), "-c", no_pdeathsig, "run", "--model", "emt", "--system", SYSTEM,
                             "--steps", "600", "--out", str(tmp_path), "--seed", SEED], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step(run_dir / "simulation.out", 200)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    survivors = [int(p) for p in os.listdir("/proc") if p.isdigit() and _cwd(p) == str(run_dir.resolve())]
    drivers = [p for p in survivors if b"dynamat-driver" in _cmdline(p)]
    assert drivers and len(survivors) == len(drivers) + 1  # the driver and i-PI both outlived it
    for p in drivers:  # the driver goes, as on CI; i-PI stays, waiting for a client
        os.kill(p, signal.SIGKILL)
    (ipi,) = processes.orphans_in(run_dir)
    assert b"dynamat.ipi_launch" in _cmdline(ipi)  # i-PI, as dynamat starts it
    res = _run(tmp_path, 600)
    assert res.returncode == 0, res.stderr
    assert not processes.pid_alive(ipi) and processes.orphans_in(run_dir) == []
    assert "SOFTEXIT" in (run_dir / "ipi.log").read_text()  # the orphan made its clean exit
    _same_frames(straight, read_ipi_run(run_dir), 600)


def _cwd(pid) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return ""


def _cmdline(pid) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""
