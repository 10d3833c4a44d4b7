"""`dynamat run` end to end: real i-PI, a real dynamat-driver over a real unix socket, EMT forces."""

import json
import os
import subprocess

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.emt import EMT
from ase.data import atomic_masses

from dynamat.io import read_ipi_run, read_reference
from dynamat.units import AMU_A2_PER_FS2_TO_EV, KB_EV_PER_K

from conftest import BIN, DEMO, assert_no_leftovers, dynamat_cmd, wait_for_step, wait_until

SYSTEM = "bulkCu_300K-demo_EMT"


@pytest.fixture(scope="module")
def emt_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "1200", "--out", str(out), "--seed", "3")
    assert res.returncode == 0, res.stderr
    return out / "emt" / SYSTEM, res


def test_a_runs_frame_interval_is_its_protocols_and_matbench_keys_are_computed(emt_run, tmp_path):
    """i-PI's time column, written to the bit, is spaced 2.4999999999999996 fs for 0.25 fs x 10 (i-PI sums time
    in atomic units): read as the interval given, or Matbench's time matching (the decimal's fraction) found one
    common frame and the score's six Matbench keys were all None."""
    from dynamat.io.ipi_output import read_properties

    run_dir, _ = emt_run
    p = json.loads((run_dir / "run.json").read_text())["protocol"]
    t = read_properties(run_dir / "simulation.out")["time{femtosecond}"]
    assert not np.all(np.diff(t) == 2.5)  # the column itself is not the decimal
    assert read_ipi_run(run_dir).dt_fs == p["timestep_fs"] * p["stride"] == 2.5
    res = dynamat_cmd("score", "--run", str(run_dir), "--json", str(tmp_path / "s.json"))
    assert res.returncode == 0, res.stderr
    mb = json.loads((tmp_path / "s.json").read_text())["matbench"]
    assert "note" not in mb and all(mb[k] is not None for k in ("rdf_error", "adf_error", "vdos_error")), mb


def test_run_completes_and_records(emt_run):
    run_dir, res = emt_run
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "completed" and rec["error"] is None
    assert rec["steps_done"] == 1200 and rec["steps_requested"] == 1200
    assert rec["protocol"]["ipi_thermostat"] == "svr" and rec["protocol"]["timestep_fs"] == 0.25
    assert 0 < rec["seconds_per_step_median"] < 1.0
    assert rec["versions"]["ipi"]
    for name in ("input.xml", "init.xyz", "simulation.out", "ipi.log", "driver.log"):
        assert (run_dir / name).exists(), name
    assert "step" in res.stderr  # progress was shown


def test_trajectory_parses_and_is_canonical(emt_run):
    run_dir, _ = emt_run
    traj = read_ipi_run(run_dir)
    assert traj.n_frames == 121 and traj.dt_fs == pytest.approx(2.5)
    np.testing.assert_array_equal(traj.steps, np.arange(0, 1201, 10))
    ref0 = read_reference(DEMO, SYSTEM, frames=slice(0, 1))
    np.testing.assert_allclose(traj.positions[0], ref0.positions[0], atol=1e-7)  # starts from the reference
    # kinetic temperature from the stored velocities (3N-3 dof: i-PI fixes the centre of mass)
    m = atomic_masses[traj.numbers]
    ke = 0.5 * np.einsum("i,fij->f", m, traj.velocities**2) * AMU_A2_PER_FS2_TO_EV
    t_kin = 2 * ke / ((3 * traj.n_atoms - 3) * KB_EV_PER_K)
    assert abs(t_kin.mean() - 300.0) < 45.0  # 32 atoms, 300 fs: a loose but physical band
    props_t = np.loadtxt(run_dir / "simulation.out", usecols=2)
    np.testing.assert_allclose(t_kin, props_t, rtol=0.03)  # i-PI samples its temperature at another sub-step
    # the stress read back is the configurational one (−virial/V, ASE sign, eV/Å³): EMT recomputed
    # in-process on the saved positions gives the same tensor; i-PI's kinetic term is not in it
    for i in (0, 60, 120):
        atoms = Atoms(numbers=traj.numbers, positions=traj.positions[i], cell=traj.cells[i], pbc=True)
        atoms.calc = EMT()
        np.testing.assert_allclose(traj.stress[i], atoms.get_stress(), atol=2e-7)
        assert traj.energies[i] == pytest.approx(atoms.get_potential_energy(), abs=1e-5)


def test_score_of_run(emt_run, tmp_path):
    run_dir, _ = emt_run
    out = tmp_path / "score.json"
    res = dynamat_cmd("score", "--system", SYSTEM, "--run", str(run_dir), "--json", str(out))
    assert res.returncode == 0, res.stderr
    s = json.loads(out.read_text())
    assert s["model"] == "emt" and s["system"] == SYSTEM and s["system_class"] == "pure metal"
    for key in ("rdf_error_pct", "pressure_hist_error_pct", "vdos_error_pct", "E_RPV_pct", "L_RPV_pct"):
        assert 0.0 <= s[key] <= 100.0, key
    assert s["pressure_mae_GPa"] >= 0 and s["seconds_per_step"] > 0
    assert "E_RDF" in res.stdout


def test_existing_run_is_not_clobbered(emt_run):
    run_dir, _ = emt_run
    before = (run_dir / "simulation.out").read_bytes()
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "10", "--out", str(run_dir.parents[1]))
    assert res.returncode != 0 and "--overwrite" in res.stderr and "Traceback" not in res.stderr
    assert (run_dir / "simulation.out").read_bytes() == before


def test_driver_failure_ends_run_cleanly(tmp_path):
    # the driver cannot import the calculator at start (an unknown model name is refused before any folder):
    # the run must fail fast and leave nothing running
    res = dynamat_cmd("run", "--model", "dm_no_such_module:make", "--system", SYSTEM, "--steps", "50",
                      "--out", str(tmp_path))
    assert res.returncode != 0
    assert "dm_no_such_module" in res.stderr and "Traceback" not in res.stderr
    rec = json.loads((tmp_path / "dm_no_such_module@make" / SYSTEM / "run.json").read_text())
    assert rec["status"] == "failed" and rec["error"]
    assert_no_leftovers(str(tmp_path))


def _pid_of(pattern: str, must_contain: str, timeout: float = 60.0) -> int:
    def find() -> int | None:
        ps = subprocess.run(["pgrep", "-f", pattern], capture_output=True, text=True)
        for cand in ps.stdout.split():
            try:
                cmdline = open(f"/proc/{cand}/cmdline").read().replace("\0", " ")
                cwd = os.readlink(f"/proc/{cand}/cwd")
            except OSError:
                continue
            if must_contain in cmdline + " cwd=" + cwd:
                return int(cand)
        return None

    return wait_until(find, timeout, f"a process matching {pattern!r} with {must_contain!r}", poll=0.2)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("straight")
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "2000", "--out", str(out), "--seed", "11")
    assert res.returncode == 0, res.stderr
    return read_ipi_run(out / "emt" / SYSTEM)


@pytest.mark.parametrize("victim", ["driver", "server"])
def test_killed_process_is_recovered_without_lost_or_repeated_frames(victim, uninterrupted, tmp_path):
    """A driver or i-PI killed mid-run (SIGKILL) is replaced; the trajectory equals an uninterrupted one."""
    run_dir = tmp_path / "emt" / SYSTEM
    proc = subprocess.Popen(
        [str(BIN / "dynamat"), "run", "--model", "emt", "--system", SYSTEM, "--steps", "2000",
         "--out", str(tmp_path), "--seed", "11"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_step(run_dir / "simulation.out", 1200)  # past the first checkpoint (1000)
        if victim == "driver":
            pid = _pid_of("dynamat-driver --model emt", str(run_dir))
        else:
            pid = _pid_of("dynamat.ipi_launch attempt.xml", f"cwd={run_dir}")  # i-PI, as runs start it
        os.kill(pid, 9)
        _, err = proc.communicate(timeout=300)
    finally:
        proc.kill()
    assert proc.returncode == 0, err
    rec = json.loads((run_dir / "run.json").read_text())
    assert rec["status"] == "completed" and len(rec["restarts"]) >= 1
    traj = read_ipi_run(run_dir)
    np.testing.assert_array_equal(traj.steps, uninterrupted.steps)
    np.testing.assert_allclose(traj.positions, uninterrupted.positions, atol=1e-6)
    np.testing.assert_allclose(traj.velocities, uninterrupted.velocities, atol=1e-6)
    assert_no_leftovers(str(tmp_path))


def test_path_integral_run_through_cli(tmp_path):
    """`dynamat run --beads 2`: PILE-L input, beads batched per request, scored on the centroid."""
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "100", "--beads", "2", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "emt" / SYSTEM
    xml = (run_dir / "input.xml").read_text()
    assert "nbeads='2'" in xml and "pile_l" in xml and "<batch_size> 2 </batch_size>" in xml
    timing = json.loads((run_dir / "driver_timing.json").read_text())
    assert timing["n_requests"] < timing["n_structures_received"]  # two beads per request
    from dynamat.io.run_folder import read_run_trajectory

    centroid = read_run_trajectory(run_dir)
    bead0 = read_ipi_run(run_dir)
    assert centroid.n_frames == 11 and not np.allclose(centroid.positions[-1], bead0.positions[-1])
    out = tmp_path / "s.json"
    assert dynamat_cmd("score", "--system", SYSTEM, "--run", str(run_dir), "--json", str(out)).returncode == 0
    scored = json.loads(out.read_text())
    assert scored["n_frames_mlip"] == 11 and scored["nbeads"] == 2 and "ensemble" not in scored


def test_relative_output_folder(tmp_path):
    """Paths handed to i-PI and the driver (which run inside the run folder) must not be relative."""
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "600", "--out", "rel/runs", cwd=tmp_path)
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "rel" / "runs" / "emt" / SYSTEM
    assert json.loads((run_dir / "driver_timing.json").read_text())["n_evaluations"] >= 600


def test_run_score_report_flow_draws_curve_panels(emt_run, tmp_path):
    """The user's flow: run, `score --run DIR` (writes DIR/score.json and curves.npz by default),
    `report DIR`: the g(r), pressure-histogram and VDOS panels (Fig. 3-5 b-f analogues) are drawn."""
    import shutil

    src, _ = emt_run
    run_dir = tmp_path / "results" / "emt" / SYSTEM
    shutil.copytree(src, run_dir)
    res = dynamat_cmd("score", "--system", SYSTEM, "--run", str(run_dir))
    assert res.returncode == 0, res.stderr
    score = json.loads((run_dir / "score.json").read_text())
    with np.load(run_dir / "curves.npz") as c:
        assert set(c.files) >= {"rdf_r", "rdf_ref", "rdf_mlip", "vdos_nu_THz", "vdos_ref", "vdos_mlip",
                                "p_ref_GPa", "p_mlip_GPa"}
        # the stored curves are the ones the score was computed from: Eq. 4 recomputed from them
        g_ref, g_mlip = c["rdf_ref"], c["rdf_mlip"]
        e_rdf = 100 * min(1.0, np.sum(np.abs(g_ref - g_mlip)) / np.sum(np.abs(g_ref - 1)))  # uniform bins
        assert e_rdf == pytest.approx(score["rdf_error_pct"], rel=1e-6)
        assert np.trapezoid(c["vdos_ref"], c["vdos_nu_THz"]) == pytest.approx(1.0, rel=1e-9)
    for source in (run_dir, tmp_path / "results", run_dir / "score.json"):
        rep = tmp_path / f"report-{abs(hash(str(source)))}"
        res = dynamat_cmd("report", str(source), "--out", str(rep), "--no-pdf")
        assert res.returncode == 0, res.stderr
        for stem in ("fig3_rdf_curves", "fig4_pressure_histograms", "fig5_vdos_spectra"):
            assert (rep / "figures" / f"{stem}.png").stat().st_size > 5000, (source, stem)


def test_scores_written_into_one_folder_keep_their_own_curves(emt_run, tmp_path):
    """`score --json X.json` writes its curves as X.curves.npz: two scores into one folder (a run
    folder's, a trajectory's) do not overwrite each other's curves, and the report draws from each."""
    run_dir, _ = emt_run
    first, second = tmp_path / "a.json", tmp_path / "b.score.json"
    assert dynamat_cmd("score", "--system", SYSTEM, "--run", str(run_dir), "--json", str(first)).returncode == 0
    res = dynamat_cmd("score", "--system", SYSTEM, "--trajectory", str(run_dir / "simulation.pos_0.extxyz"),
                      "--dt-fs", "50", "--json", str(second))
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.curves.npz", "a.json", "b.curves.npz", "b.score.json"]
    with np.load(tmp_path / "a.curves.npz") as a, np.load(tmp_path / "b.curves.npz") as b:
        assert a["rdf_mlip"].shape == b["rdf_mlip"].shape and not np.array_equal(a["vdos_nu_THz"], b["vdos_nu_THz"])
    rep = tmp_path / "rep"
    assert dynamat_cmd("report", str(first), "--out", str(rep), "--no-pdf").returncode == 0
    assert (rep / "figures" / "fig3_rdf_curves.png").stat().st_size > 5000


def test_a_report_names_a_score_older_than_its_extended_run(tmp_path):
    """A run scored, then extended by a larger --steps: its score.json holds the shorter run's numbers. The
    score records the step it scored to, and the report says the run has gone on since."""
    from dynamat.report.tables import load_results

    args = ("run", "--model", "emt", "--system", SYSTEM, "--out", str(tmp_path), "--seed", "6")
    run_dir = tmp_path / "emt" / SYSTEM
    assert dynamat_cmd(*args, "--steps", "600").returncode == 0
    assert dynamat_cmd("score", "--system", SYSTEM, "--run", str(run_dir)).returncode == 0
    assert json.loads((run_dir / "score.json").read_text())["steps_done"] == 600
    assert not any("score it again" in n for n in load_results(tmp_path).notes)
    assert dynamat_cmd(*args, "--steps", "800").returncode == 0
    (note,) = [n for n in load_results(tmp_path).notes if "score it again" in n]
    assert note.startswith(f"{run_dir / 'score.json'} scores the run up to step 600, and the run is now at step 800")


KICKS = '''
import numpy as np
from ase.calculators.calculator import Calculator, all_changes


class Kicks(Calculator):
    """Random forces: heat that a weak thermostat does not take away."""
    implemented_properties = ["energy", "forces", "stress"]

    def __init__(self, size):
        super().__init__()
        self.rng, self.size = np.random.default_rng(0), size

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.results = {"energy": 0.0, "forces": self.rng.normal(0, self.size, (len(self.atoms), 3)),
                        "stress": np.zeros(6)}


def make(size=1.5):
    return Kicks(size)
'''


def test_a_score_says_what_a_failed_equipartition_check_means(emt_run, tmp_path):
    """Frames whose kinetic temperature contradicts the target: a trajectory's --dt-fs is then suspect (the
    note gives the interval its frames look to have, within 15 % of the true one), a run folder's interval is
    i-PI's own, so its run is off its temperature (random forces under a weak thermostat heat it). A run at its
    temperature, and a trajectory given its true interval, get no such note."""
    run_dir, _ = emt_run
    p = json.loads((run_dir / "run.json").read_text())["protocol"]
    true_dt = p["timestep_fs"] * p["stride"]
    traj = str(run_dir / "simulation.pos_0.extxyz")
    wrong = dynamat_cmd("score", "--system", SYSTEM, "--trajectory", traj, "--dt-fs", str(8 * true_dt),
                        "--json", str(tmp_path / "wrong.json"))
    assert wrong.returncode == 0, wrong.stderr
    (note,) = [ln for ln in wrong.stderr.splitlines() if ln.startswith("note: temperature:")]
    looks = float(note.split("the frames look about ")[1].split(" fs apart")[0])
    assert looks == pytest.approx(true_dt, rel=0.15) and "check --dt-fs" in note
    for args in (("--trajectory", traj, "--dt-fs", str(true_dt), "--json", str(tmp_path / "right.json")),
                 ("--run", str(run_dir))):
        res = dynamat_cmd("score", "--system", SYSTEM, *args)
        assert res.returncode == 0 and "note: temperature:" not in res.stderr, res.stderr

    (tmp_path / "kicks.py").write_text(KICKS)
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = tmp_path / "hot"
    res = dynamat_cmd("run", "--model", "kicks:make", "--system", SYSTEM, "--steps", "1200", "--tau-fs", "1e6",
                      "--seed", "3", "--out", str(out), env=env)
    assert res.returncode == 0, res.stderr
    hot = out / "kicks@make" / SYSTEM
    res = dynamat_cmd("score", "--run", str(hot), env=env)
    assert res.returncode == 0, res.stderr
    score = json.loads((hot / "score.json").read_text())
    assert score["frame_interval_suspect_mlip"] and score["kinetic_temperature_mlip_K"] > 360
    assert any(n.startswith("temperature:") and "at the frame interval i-PI wrote: the run is off its temperature" in n
               for n in score["notes"])
