"""A damaged restart file never costs a run folder (issue 24, hole 1): a supervisor SIGKILLed mid-run, its
RESTART cut short afterwards, and the same command rerun. With no other complete restart point the rerun
is refused in one line naming the file, every file in the folder kept byte for byte; with a complete
checkpoint it resumes from that, the outputs trimmed back to it first, and the trajectory equals an
uninterrupted run of the same seed, read by ASE with every step once."""

import hashlib
import os
import re
import signal
import subprocess
import time

import ase.io
import numpy as np
import pytest

from dynamat import processes
from dynamat.io import read_ipi_run

from conftest import BIN, dynamat_cmd, wait_for_step

SYSTEM = "bulkCu_300K-demo_EMT"
SEED = "7"


def _run(out, steps):
    return dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", str(steps), "--out", str(out),
                       "--seed", SEED)


def _supervisor_killed_at(out, steps, at_least):
    """SIGKILLs the `dynamat run` process alone once step AT_LEAST is saved; its i-PI gets the parent-death
    SIGTERM and writes RESTART on its way out."""
    run_dir = out / "emt" / SYSTEM
    proc = subprocess.Popen([str(BIN / "dynamat"), "run", "--model", "emt", "--system", SYSTEM, "--steps", str(steps),
                             "--out", str(out), "--seed", SEED], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step(run_dir / "simulation.out", at_least)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.time() + 90
    rj = run_dir / "RESTART"
    while time.time() < deadline and not (rj.exists() and "</simulation>" in rj.read_text()):
        time.sleep(0.2)
    processes.RunLock(run_dir).release()  # i-PI holds the folder lock until it has gone
    return run_dir


def _cut(path, keep_step_tag: bool) -> None:
    data = path.read_bytes()
    end_of_tag = data.index(b"</step>") + len(b"</step>")
    size = end_of_tag + 200 if keep_step_tag else len(data) // 2
    assert (b"</step>" in data[:size]) == keep_step_tag and size < len(data)
    path.write_bytes(data[:size])


def _hashes(run_dir):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(run_dir.iterdir()) if p.is_file()}


@pytest.mark.parametrize("keep_step_tag", [False, True])
def test_damaged_restart_without_another_is_refused_and_nothing_removed(tmp_path, keep_step_tag):
    run_dir = _supervisor_killed_at(tmp_path, 400, 200)
    assert not re.search(rb"<step>", (run_dir / "simulation.chk").read_bytes() if (run_dir / "simulation.chk").exists()
                         else b"")  # no checkpoint of a step yet: RESTART is the only restart point
    (run_dir / "notes.txt").write_text("the user's own notes\n")
    _cut(run_dir / "RESTART", keep_step_tag)
    before = _hashes(run_dir)
    assert len(read_ipi_run(run_dir).steps) >= 21
    res = _run(tmp_path, 400)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    err = res.stderr.strip().splitlines()
    assert len(err) == 1 and "RESTART" in err[0] and "--overwrite" in err[0], res.stderr
    assert _hashes(run_dir) == before


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    assert _run(out, 1500).returncode == 0
    return out / "emt" / SYSTEM


def _ase_steps(path):
    return [int(re.search(r"Step:\s*(\d+)", a.info["ipi_comment"]).group(1)) for a in ase.io.read(path, ":")]


@pytest.mark.parametrize("keep_step_tag", [False, True])
def test_damaged_restart_resumes_from_the_checkpoint(tmp_path, straight, keep_step_tag):
    run_dir = _supervisor_killed_at(tmp_path, 1500, 1200)  # past the checkpoint at step 1000
    (run_dir / "notes.txt").write_text("the user's own notes\n")
    _cut(run_dir / "RESTART", keep_step_tag)
    res = _run(tmp_path, 1500)
    assert res.returncode == 0, res.stderr
    assert "step 1000" in res.stderr
    assert (run_dir / "notes.txt").read_text() == "the user's own notes\n"
    a, b = read_ipi_run(straight), read_ipi_run(run_dir)
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
    for name in ("simulation.pos_0.extxyz", "simulation.vel_0.extxyz"):
        steps = _ase_steps(run_dir / name)  # any reader sees each step once: i-PI's repeats were trimmed
        assert steps == _ase_steps(straight / name)
        np.testing.assert_allclose([x.positions for x in ase.io.read(run_dir / name, ":")],
                                   [x.positions for x in ase.io.read(straight / name, ":")], atol=1e-6)
    rows = [ln.split()[0] for ln in (run_dir / "simulation.out").read_text().splitlines() if not ln.startswith("#")]
    assert len(rows) == len(set(rows)) == len(a.steps)
