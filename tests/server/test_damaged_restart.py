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

import ase.io
import numpy as np
import pytest

from dynamat import processes
from dynamat.io import read_ipi_run
from dynamat_driver.contract import FRAMES_HEADER_BYTES

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
    # i-PI holds the folder lock until its soft exit is done; one that never got the parent-death signal
    # (seen on loaded CI machines) is sent it by the lock, as a user's rerun would
    processes.RunLock(run_dir, wait_s=120, notify=lambda line: None).release()
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
    if not keep_step_tag:  # the way out the message gives that keeps the folder: remove the file, rerun
        (run_dir / "RESTART").unlink()
        res = _run(tmp_path, 400)
        assert res.returncode == 0, res.stderr
        assert (run_dir / "notes.txt").read_text() == "the user's own notes\n"
        assert read_ipi_run(run_dir).steps[-1] == 400


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    assert _run(out, 1500).returncode == 0
    return out / "emt" / SYSTEM


def _ase_steps(path):
    return [int(re.search(r"Step:\s*(\d+)", a.info["ipi_comment"]).group(1)) for a in ase.io.read(path, ":")]


@pytest.mark.parametrize("damaged, keep_step_tag, used", [
    (["RESTART"], False, "simulation.chk"),
    (["RESTART"], True, "simulation.chk"),
    (["RESTART", "simulation.chk"], False, "last_good.chk"),  # the supervisor's atomic copy of the checkpoint
])
def test_damaged_restart_resumes_from_the_checkpoint(tmp_path, straight, damaged, keep_step_tag, used):
    run_dir = _supervisor_killed_at(tmp_path, 1500, 1200)  # past the checkpoint at step 1000
    (run_dir / "notes.txt").write_text("the user's own notes\n")
    for name in damaged:
        _cut(run_dir / name, keep_step_tag)
    res = _run(tmp_path, 1500)
    assert res.returncode == 0, res.stderr
    assert f"resuming from {used} (step 1000" in res.stderr, res.stderr
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


def _xyz_frame(step: int, x: float) -> str:
    return ('2\nLattice="5.0 0.0 0.0 0.0 5.0 0.0 0.0 0.0 5.0" Properties=species:S:1:pos:R:3 '
            f'ipi_comment="Step:  {step:10d}  Bead:       0 positions{{ase}}  cell{{ase}}" pbc="T T T"\n'
            f"Cu {x:.8f} 0.0 0.0\nCu 2.5 2.5 {x:.8f}\n")


def test_trim_keeps_every_complete_frame_up_to_the_restart_step(tmp_path):
    from dynamat.engines.ipi_restart import trim_outputs

    frames = [_xyz_frame(s, 0.01 * s) for s in range(0, 60, 10)]
    pos = tmp_path / "simulation.pos_0.extxyz"
    pos.write_text("".join(frames) + frames[-1][:40])  # a frame cut short by a kill at the end
    head = "# column   1     --> step : The current simulation time step.\n# column   2     --> time{femtosecond}\n"
    rows = "".join(f"  {s:.8e}  {s * 0.25:.8e}\n" for s in range(0, 60, 10))
    props = tmp_path / "simulation.out"
    props.write_text(head + rows + "  6.0000e+01  1.5")  # a row cut short
    other = tmp_path / "simulation.notes"
    other.write_text("not an i-PI output\n")
    assert sorted(trim_outputs(tmp_path, "simulation", 30)) == ["simulation.out", "simulation.pos_0.extxyz"]
    assert pos.read_text() == "".join(frames[:4])
    assert [int(a.info["ipi_comment"].split()[1]) for a in ase.io.read(pos, ":")] == [0, 10, 20, 30]
    assert props.read_text() == head + "".join(rows.splitlines(keepends=True)[:4])
    assert other.read_text() == "not an i-PI output\n"
    assert trim_outputs(tmp_path, "simulation", 30) == []  # nothing past the step: files left as they are
    assert not list(tmp_path.glob("*.trim"))


def test_only_a_complete_restart_file_counts(tmp_path):
    from dynamat.engines.ipi_restart import checkpoint_step, is_damaged

    full = ("<!-- i-PI -->\n<simulation verbosity='low'>\n  <step>200</step>\n  <total_steps>400</total_steps>\n"
            "</simulation>\n")
    (tmp_path / "a").write_text(full)
    (tmp_path / "b").write_text(full[: full.index("<total_steps>")])  # cut after its <step>
    (tmp_path / "c").write_text(full.replace("  <step>200</step>\n", ""))  # i-PI's checkpoint before any step
    assert checkpoint_step(tmp_path / "a") == 200 and not is_damaged(tmp_path / "a")
    assert checkpoint_step(tmp_path / "b") is None and is_damaged(tmp_path / "b")
    assert checkpoint_step(tmp_path / "c") is None and not is_damaged(tmp_path / "c")
    assert checkpoint_step(tmp_path / "missing") is None and not is_damaged(tmp_path / "missing")


def test_campaign_keeps_a_folder_whose_restart_is_damaged(tmp_path):
    """The campaign's retry of an unresumable pair used to pass --overwrite: the same folder loss."""
    run_dir = _supervisor_killed_at(tmp_path, 400, 200)
    (run_dir / "notes.txt").write_text("the user's own notes\n")
    _cut(run_dir / "RESTART", keep_step_tag=False)
    before = _hashes(run_dir)
    res = dynamat_cmd("campaign", "--models", "emt", "--systems", SYSTEM, "--out", str(tmp_path), "--steps", "400",
                      "--seed", SEED, "--max-retries", "0")
    assert "Traceback" not in res.stderr
    after = _hashes(run_dir)
    assert {k: after.get(k) for k in before} == before, res.stderr  # the campaign adds its score.json only
    assert "RESTART is damaged" in res.stderr + "".join(p.read_text() for p in (tmp_path / "_campaign").rglob("*.json"))


def test_an_output_that_does_not_reach_the_restart_point_is_refused_untouched(tmp_path):
    """i-PI appends after the restart step: a trajectory or properties file cut short (or blanked, or with
    garbage over a row) before it would leave a gap that no reader sees. Refused, nothing trimmed."""
    from dynamat.engines.ipi_restart import trim_outputs
    from dynamat.errors import DynamatError

    head = "# column   1     --> step : The current simulation time step.\n"
    props = tmp_path / "simulation.out"
    pos = tmp_path / "simulation.pos_0.extxyz"
    whole = "".join(_xyz_frame(s, 0.01 * s) for s in range(0, 60, 10))
    cases = [
        (head + "".join(f"  {s:.8e}\n" for s in range(0, 30, 10)), whole, "simulation.out", "end at step 20"),
        (head + "".join(f"  {s:.8e}\n" for s in range(0, 60, 10)), "", "pos_0.extxyz", "no complete frame"),
        (head + "  0.0\n  1.0e+01\n garbage\n  3.0e+01\n  4.0e+01\n", whole, "simulation.out", "end at step 10"),
        (head + "".join(f"  {s:.8e}\n" for s in range(0, 60, 10)),
         "".join(_xyz_frame(s, 0.0) for s in (0, 10, 30, 40, 50)), "pos_0.extxyz", "end at step 10"),
    ]
    for text, xyz, name, says in cases:
        props.write_text(text)
        pos.write_text(xyz)
        with pytest.raises(DynamatError, match=f"{name} is damaged: its frames {says}|{name} is damaged: it holds {says}"):
            trim_outputs(tmp_path, "simulation", 40)
        assert props.read_text() == text and pos.read_text() == xyz
    props.write_text(head + "".join(f"  {s:.8e}\n" for s in range(0, 60, 10)))
    pos.write_text(whole)
    assert sorted(trim_outputs(tmp_path, "simulation", 40)) == ["simulation.out", "simulation.pos_0.extxyz"]


def test_a_frame_record_that_does_not_reach_the_restart_point_is_refused_untouched(tmp_path):
    """The driver's frame record (every-step protocols keep positions there, not in i-PI's trajectories) is
    checked like i-PI's outputs: a record lost in the middle or a file cut short before the restart step
    is one line, nothing trimmed; a whole one is trimmed back to the step, header kept."""
    from dynamat.engines.ipi_restart import trim_outputs
    from dynamat.errors import DynamatError
    from dynamat_driver.frames import FrameRecorder

    path = tmp_path / "simulation.frames.f64"

    def record(steps):
        path.unlink(missing_ok=True)
        rec = FrameRecorder(str(path), 2)
        for s in steps:
            rec.record(s, np.eye(3) * 7.0, np.full((2, 3), 0.1 * s), (-1.0, np.zeros((2, 3)), np.zeros((3, 3)), ""))
        rec.close()
        return path.read_bytes()

    for steps, says in (((0, 10, 30, 40, 50), "end at step 10"), ((0, 10, 20), "end at step 20")):
        data = record(steps)
        with pytest.raises(DynamatError, match=f"simulation.frames.f64 is damaged: its frames {says}"):
            trim_outputs(tmp_path, "simulation", 40)
        assert path.read_bytes() == data
    whole = record(range(0, 60, 10))
    assert trim_outputs(tmp_path, "simulation", 40) == ["simulation.frames.f64"]
    assert path.read_bytes() == whole[: len(whole) - (len(whole) - FRAMES_HEADER_BYTES) // 6]


def test_a_resume_over_a_truncated_trajectory_is_refused(tmp_path):
    run_dir = _supervisor_killed_at(tmp_path, 1000, 300)
    pos = run_dir / "simulation.pos_0.extxyz"
    pos.write_bytes(pos.read_bytes()[: pos.stat().st_size // 3])
    before = _hashes(run_dir)
    res = _run(tmp_path, 1000)
    assert res.returncode == 2 and "simulation.pos_0.extxyz is damaged" in res.stderr, res.stderr
    assert {k: v for k, v in _hashes(run_dir).items() if k != "run.json"} == \
        {k: v for k, v in before.items() if k != "run.json"}
