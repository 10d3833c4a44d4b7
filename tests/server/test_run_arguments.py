"""What a run's arguments mean (issue 24): every run has a recorded non-negative seed that reproduces it,
--time-ps errors name --time-ps, and a second run on a folder in use says at once for whom it waits."""

import json
import re
import shutil
import subprocess
import time

import numpy as np
import pytest

from dynamat.io import read_ipi_run

from conftest import BIN, DEMO, assert_one_line_error, dynamat_cmd, wait_for_step, wait_until

SYSTEM = "bulkCu_300K-demo_EMT"


def _lock_free(run_dir) -> bool:
    """No process holds the run folder's lock (the flock dynamat's supervisor, and its i-PI, hold)."""
    import fcntl

    with open(run_dir / ".lock", "a") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return False
        fcntl.flock(fh, fcntl.LOCK_UN)
        return True


def _killed_at(out, seed: int, step: int):
    """A `dynamat run --steps 100000` into ``out`` SIGKILLed (the supervisor alone) once i-PI reached ``step``;
    returns the run folder."""
    run_dir = out / "emt" / SYSTEM
    proc = subprocess.Popen([str(BIN / "dynamat"), "run", "--model", "emt", "--system", SYSTEM, "--steps", "100000",
                             "--out", str(out), "--seed", str(seed)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for_step(run_dir / "simulation.out", step)
    finally:
        proc.kill()
        proc.wait(timeout=60)
    return run_dir


def _run(out, *args):
    return dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--out", str(out), *args)


@pytest.mark.parametrize("seed", ["-1", "-2", str(2**32)])
def test_seed_outside_the_reproducible_range_is_one_line(tmp_path, seed):
    res = _run(tmp_path, "--steps", "10", f"--seed={seed}")
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "--seed" in res.stderr
    assert not (tmp_path / "emt").exists()


def test_drawn_seed_is_recorded_and_reproduces_the_run(tmp_path):
    first = _run(tmp_path / "a", "--steps", "100")
    assert first.returncode == 0 and re.search(r"\d ms per MD step", first.stdout)
    rec = json.loads((tmp_path / "a" / "emt" / SYSTEM / "run.json").read_text())
    seed = rec["seed"]
    assert isinstance(seed, int) and seed >= 0
    assert re.search(rf"<seed>\s*{seed}\s*</seed>", (tmp_path / "a" / "emt" / SYSTEM / "input.xml").read_text())
    assert _run(tmp_path / "b", "--steps", "100", "--seed", str(seed)).returncode == 0
    a, b = read_ipi_run(tmp_path / "a" / "emt" / SYSTEM), read_ipi_run(tmp_path / "b" / "emt" / SYSTEM)
    np.testing.assert_array_equal(a.steps, b.steps)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-6)
    # extended without --seed: the recorded seed goes on; another --seed is refused in one line
    other = _run(tmp_path / "a", "--steps", "200", "--seed", str(seed + 1))
    assert other.returncode != 0 and len(other.stderr.strip().splitlines()) == 1 and str(seed) in other.stderr
    assert _run(tmp_path / "a", "--steps", "200").returncode == 0
    assert json.loads((tmp_path / "a" / "emt" / SYSTEM / "run.json").read_text())["seed"] == seed
    # a continuation shorter than the output stride has no two timed rows: it says so, not a bare "n/a"
    short = _run(tmp_path / "a", "--steps", "205")
    assert short.returncode == 0 and "time per MD step n/a (too few steps timed)" in short.stdout


def test_time_ps_too_short_names_time_ps(tmp_path):
    res = _run(tmp_path, "--time-ps", "1e-9")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1
    assert "--time-ps" in res.stderr and "--steps" not in res.stderr


def test_second_run_on_a_folder_in_use_says_at_once_for_whom_it_waits(tmp_path):
    run_dir = tmp_path / "emt" / SYSTEM
    first = subprocess.Popen([str(BIN / "dynamat"), "run", "--model", "emt", "--system", SYSTEM, "--steps", "100000",
                              "--out", str(tmp_path), "--seed", "3"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    second = None
    try:
        wait_for_step(run_dir / "simulation.out", 50)
        second = subprocess.Popen([str(BIN / "dynamat"), "run", "--model", "emt", "--system", SYSTEM, "--steps",
                                   "100000", "--out", str(tmp_path), "--seed", "3"],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        t0 = time.monotonic()
        line = second.stderr.readline()
        assert time.monotonic() - t0 < 20, "no word before the wait"
        assert f"pid {first.pid}" in line and "dynamat run" in line and "wait" in line, line
    finally:
        for p in (second, first):
            if p is not None:
                p.terminate()
                p.wait(timeout=60)


def test_model_identity_reads_the_driver_arguments_as_the_driver_does():
    from dynamat.runner import model_identity

    ident = model_identity("ase.calculators.lj:LennardJones", (
        "--device", "cuda", "-o", "sigma=2.3", "--option=epsilon= 0.4", "--threads=2", "--option", "sigma=2.5",
        "--dispersion=d3-bj", "--dispersion-functional=R2SCAN", "--label=mine", "--stress-stride", "10"))
    assert ident == {"model": "ase.calculators.lj:LennardJones", "model_path": None, "dtype": None,
                     "options": {"epsilon": "0.4", "sigma": "2.5"}, "dispersion": "d3-bj(r2scan)"}
    # a --model among the driver arguments comes after the served one on the driver's command line: it wins
    assert model_identity("emt", ("--model=lj", "--dtype", "float32"))["model"] == "lj"
    assert model_identity("emt", ("--model=lj", "--dtype", "float32"))["dtype"] == "float32"


def test_a_run_is_continued_only_by_the_model_it_started_with(tmp_path):
    """The folder is named by the model's name alone: other options of a MODULE:CALLABLE, or a models-file
    entry that now names another calculator, are refused in one line and leave the run as it was; the
    same model with other device-side flags continues it."""
    lj = ("--model", "ase.calculators.lj:LennardJones", "--model-option", "epsilon=0.4", "--model-option", "rc=6.0")
    base = ("run", "--system", SYSTEM, "--out", str(tmp_path), "--seed", "5")
    assert dynamat_cmd(*base, *lj, "--model-option", "sigma=2.3", "--steps", "20").returncode == 0
    run_json = tmp_path / "ase.calculators.lj@LennardJones" / SYSTEM / "run.json"
    before = run_json.read_text()
    res = dynamat_cmd(*base, *lj, "--model-option", "sigma=2.5", "--steps", "40")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "sigma=2.3" in res.stderr and "sigma=2.5" in res.stderr and "mix two models" in res.stderr
    assert run_json.read_text() == before
    ok = dynamat_cmd(*base, *lj, "--model-option", "sigma=2.3", "--steps", "40", "--driver-arg=--threads=1")
    assert ok.returncode == 0, ok.stderr
    assert json.loads(run_json.read_text())["served"]["options"] == {"epsilon": "0.4", "rc": "6.0", "sigma": "2.3"}

    toml = tmp_path / "models.toml"
    toml.write_text('[mine]\ncalculator = "ase.calculators.emt:EMT"\n')
    mine = ("--model", "mine", "--models-file", str(toml))
    assert dynamat_cmd(*base, *mine, "--steps", "20").returncode == 0
    toml.write_text('[mine]\ncalculator = "ase.calculators.lj:LennardJones"\noptions = {sigma = 2.3}\n')
    res = dynamat_cmd(*base, *mine, "--steps", "40")
    assert res.returncode == 2 and "model ase.calculators.emt:EMT" in res.stderr, res.stderr
    assert "model ase.calculators.lj:LennardJones" in res.stderr and "Traceback" not in res.stderr


def test_a_run_killed_before_its_end_is_resumed_only_as_it_started(tmp_path):
    """run.json is written when a run starts, not only when it ends: after a SIGKILL of `dynamat run`, a
    rerun with another seed or ensemble is refused in one line (it resumed from the RESTART's own seed and
    ensemble, and run.json then recorded arguments the trajectory never used)."""
    run_dir = _killed_at(tmp_path, 3, 150)
    # its i-PI, told by the parent-death signal, ends with a soft exit; until then a rerun says it waits
    wait_until(lambda: _lock_free(run_dir), 60, "the killed run's i-PI to let go of the folder")
    assert json.loads((run_dir / "run.json").read_text())["status"] == "running"
    res = _run(tmp_path, "--steps", "100000", "--seed", "4")
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1 and "--seed 3" in res.stderr, res.stderr
    res = _run(tmp_path, "--steps", "100000", "--ensemble", "npt", "--pressure-GPa", "5")
    assert res.returncode == 2 and "--ensemble nvt" in res.stderr, res.stderr
    # the protocol too: i-PI takes it from the restart file, whatever the rerun's input says
    res = _run(tmp_path, "--steps", "100000", "--seed", "3", "--tau-fs", "20", "--timestep-fs", "1.0")
    assert_one_line_error(res, "--timestep-fs 0.25 fs (asked 1)", "--tau-fs 254.5 fs (asked 20)",
                          "which a resume continues from its restart file")
    assert json.loads((run_dir / "run.json").read_text())["protocol"]["tau_fs"] == 254.5  # nothing recorded


def test_a_completed_run_is_extended_only_with_its_protocol(tmp_path):
    """A larger --steps continues a completed run from its restart point: a new --tau-fs or --thermostat would
    be recorded, and not run (i-PI keeps the restart file's)."""
    assert _run(tmp_path, "--steps", "100", "--seed", "2").returncode == 0
    for extra, says in ((("--tau-fs", "20"), "--tau-fs 254.5 fs (asked 20)"),
                        (("--thermostat", "langevin"), "--thermostat svr (asked langevin)")):
        assert_one_line_error(_run(tmp_path, "--steps", "200", "--seed", "2", *extra), says)
    res = _run(tmp_path, "--steps", "200", "--seed", "2")
    assert res.returncode == 0, res.stderr
    assert json.loads((tmp_path / "emt" / SYSTEM / "run.json").read_text())["steps_done"] == 200


def test_an_extension_killed_is_never_recorded_completed_at_the_old_length(tmp_path):
    """run.json is rewritten when a resume starts: an extension (a larger --steps on a completed run) killed
    outright left run.json 'completed' at the old length beside longer trajectories, which a score then
    read as the short run's, and a replica set kept."""
    assert _run(tmp_path, "--steps", "100", "--seed", "5").returncode == 0
    run_dir = _killed_at(tmp_path, 5, 200)
    rec = json.loads((run_dir / "run.json").read_text())
    assert (rec["status"], rec["steps_requested"], rec["steps_done"]) == ("running", 100000, 100)


def test_a_run_is_scored_as_it_ran_and_kept_only_of_the_system_asked(tmp_path):
    """`dynamat run --dims 2 --class C` recorded both in run.json and was scored as the file's 3D pure metal: the
    score now takes the run's own (Eq. 7 over xx and yy). A rerun asking another class, dims or start structure
    (another --reference whose system starts elsewhere) was kept, or resumed and recorded as asked: refused in
    one line, the folder untouched; the same frames from another file are the same run."""
    import h5py

    from dynamat.units import EV_PER_A3_TO_GPA

    assert _run(tmp_path, "--steps", "100", "--seed", "2", "--dims", "2", "--class", "semiconductor").returncode == 0
    run_dir = tmp_path / "emt" / SYSTEM
    res = dynamat_cmd("score", "--run", str(run_dir))
    assert res.returncode == 0, res.stderr
    assert json.loads((run_dir / "score.json").read_text())["system_class"] == "semiconductor"
    s = read_ipi_run(run_dir).stress
    p_run = np.load(run_dir / "curves.npz")["p_mlip_GPa"]
    np.testing.assert_allclose(p_run, -(s[:, 0] + s[:, 1])[: len(p_run)] / 2 * EV_PER_A3_TO_GPA, rtol=1e-12)
    assert not np.allclose(p_run, -s[: len(p_run), :3].sum(1) / 3 * EV_PER_A3_TO_GPA, rtol=1e-3)

    before = (run_dir / "run.json").read_bytes()
    assert_one_line_error(_run(tmp_path, "--steps", "100", "--seed", "2", "--class", "semiconductor"),
                          "holds a run with --dims 2 (asked 3), which its score takes")
    assert_one_line_error(_run(tmp_path, "--steps", "200", "--seed", "2", "--dims", "2"),
                          "--class semiconductor (asked 'pure metal')")
    moved, strained = tmp_path / "moved.h5", tmp_path / "strained.h5"
    for path, scale in ((moved, 1.0), (strained, 1.03)):
        shutil.copy(DEMO, path)
        with h5py.File(path, "r+") as f:
            for key in ("positions", "cell"):
                f[SYSTEM][key][...] = f[SYSTEM][key][...] * scale
    same = ("--steps", "100", "--seed", "2", "--dims", "2", "--class", "semiconductor")
    for steps in ("100", "200"):  # kept, and extended
        res = _run(tmp_path, *same[:1], steps, *same[2:], "--reference", str(strained))
        assert_one_line_error(res, "holds a run started from another structure than frame 0 of the reference asked",
                              "give the --reference it was made from")
    assert (run_dir / "run.json").read_bytes() == before
    res = _run(tmp_path, *same, "--reference", str(moved))
    assert res.returncode == 0 and "kept:" in res.stderr, res.stderr
