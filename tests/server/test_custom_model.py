"""`dynamat run` / `dynamat singlepoint` with a user's ASE calculator, ``--model MODULE:CALLABLE``:
the same physics as the registered model gives the same trajectory byte for byte, the server
never imports the user's module, and a malformed spec or option is one line with nothing written."""

import json
import os
import shlex
import subprocess

import numpy as np
import pytest
from ase.calculators.lj import LennardJones
from ase.io import read

from conftest import BIN, assert_one_line_error, dynamat_cmd

SYSTEM = "bulkCu_300K-demo_EMT"
SPEC = "ase.calculators.emt:EMT"
OUTPUTS = ("simulation.out", "simulation.pos_0.extxyz", "simulation.vel_0.extxyz")


@pytest.mark.slow
def test_ase_emt_by_name_gives_the_trajectory_of_emt(tmp_path):
    runs = {}
    for model in ("emt", SPEC):
        res = dynamat_cmd("run", "--model", model, "--system", SYSTEM, "--steps", "100", "--seed", "3",
                          "--out", str(tmp_path))
        assert res.returncode == 0, res.stderr
        runs[model] = tmp_path / model.replace(":", "@") / SYSTEM
        assert str(runs[model]) in res.stderr  # the folder it names is the folder it wrote
    for name in OUTPUTS:
        assert (runs[SPEC] / name).read_bytes() == (runs["emt"] / name).read_bytes(), name
    rec = json.loads((runs[SPEC] / "run.json").read_text())
    assert rec["status"] == "completed" and rec["model"] == SPEC
    (timing,) = rec["driver_timings"]
    assert timing["model"]["spec"] == SPEC and timing["model"]["calculator"] == "EMT"
    assert rec["model_seconds_per_eval_median"] > 0  # timed like a registered model
    # stress only where i-PI writes the virial, as for the zoo
    assert timing["stress"]["requests_with_stress"] == 11 and timing["stress"]["model_skips_stress"]


def test_server_never_imports_the_users_module(tmp_path):
    (tmp_path / "dm_marker.py").write_text(
        "import os, sys\n"
        f"open({str(tmp_path / 'imported_by')!r}, 'a').write(' '.join(sys.argv) + '\\n')\n"
        "from ase.calculators.emt import EMT as make\n"
    )
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    out = {}
    for model in ("emt", "dm_marker:make"):
        res = subprocess.run([str(BIN / "dynamat"), "singlepoint", "--model", model, "--system", SYSTEM,
                              "--max-frames", "3", "--json", str(tmp_path / f"{model[:3]}.json")],
                             capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        out[model] = json.loads((tmp_path / f"{model[:3]}.json").read_text())
    assert out["emt"]["n_frames_singlepoint"] == out["dm_marker:make"]["n_frames_singlepoint"] == 3
    for key in ("energy_rmse_eV_per_atom", "force_rmse_eV_per_A", "energy_fluctuation_rmse_eV_per_atom"):
        assert out["dm_marker:make"][key] == out["emt"][key], key  # the same EMT: the same numbers
    importers = (tmp_path / "imported_by").read_text().splitlines()
    assert importers and all("dynamat-driver" in ln and "dm_marker:make" in ln for ln in importers), importers


@pytest.mark.parametrize("args, expected", [
    (["--model", "../evil:x"], "neither a model name nor MODULE:CALLABLE"),
    (["--model", "os:system:x"], "neither a model name nor MODULE:CALLABLE"),
    (["--model", "a" * 70 + ":" + "b" * 70], "cannot be used as a folder name"),
    (["--model", SPEC, "--model-option", "sigma"], "--model-option wants KEY=VALUE"),
    (["--model", SPEC, "--model-option", "--x=1"], "--model-option wants KEY=VALUE"),
    (["--model", SPEC, "--model-option", "sigma=2", "--model-option", "sigma=3"],
     "--model-option sigma is given twice ('sigma=2' and 'sigma=3')"),
    (["--model", SPEC, "--model-option", "weights=path:"], "names no path after 'path:'"),
    (["--model", SPEC, "--model-option", "weights=path:no_such.pt"], "no_such.pt does not exist"),
])
def test_bad_spec_or_option_is_one_line_and_writes_nothing(tmp_path, args, expected):
    out = tmp_path / "out"
    res = dynamat_cmd("run", *args, "--system", SYSTEM, "--steps", "10", "--out", str(out))
    assert res.returncode == 2, res.stderr
    assert res.stderr.strip().splitlines() == [res.stderr.strip()] and res.stderr.startswith("dynamat: error:")
    assert expected in res.stderr
    assert not out.exists() or not any(out.iterdir())


def test_model_option_paths_are_the_users(tmp_path, monkeypatch):
    from dynamat.models_file import model_option_args

    monkeypatch.chdir(tmp_path)
    (tmp_path / "w").mkdir()
    (tmp_path / "w" / "best.pt").write_bytes(b"weights")
    assert model_option_args(("sigma=2.3", "f=path:w/best.pt", "flag=true")) == (
        "--option=sigma=2.3", f"--option=f=path:{tmp_path / 'w' / 'best.pt'}", "--option=flag=true")


def test_campaign_refuses_a_missing_path_option_before_any_folder(tmp_path):
    """A path: option whose file is missing would fail in the driver of every pair, after i-PI started."""
    out = tmp_path / "camp"
    res = dynamat_cmd("campaign", "--models", SPEC, "--systems", SYSTEM, "--steps", "400",
                      "--model-option", f"weights=path:{tmp_path / 'gone.pt'}", "--out", str(out))
    assert_one_line_error(res, "--model-option weights:", "gone.pt does not exist")
    assert not out.exists()


def test_inputs_print_a_path_option_whose_file_is_made_later(tmp_path):
    """`dynamat inputs` runs nothing: its printed driver command is run by hand, later, and its driver checks
    the file when it starts. A path: file not there yet (weights still training, or copied later) was refused."""
    later = tmp_path / "later.pt"
    res = dynamat_cmd("inputs", "--system", SYSTEM, "--out", str(tmp_path / "in"), "--steps", "10",
                      "--model", SPEC, "--model-option", f"weights=path:{later}")
    assert res.returncode == 0, res.stderr
    driver = shlex.split(res.stdout.strip().splitlines()[-1].rsplit(" & ", 1)[-1])
    assert driver[:5] == ["dynamat-driver", "--model", SPEC, "-o", f"weights=path:{later}"]


@pytest.mark.slow
def test_inputs_print_a_driver_command_for_the_spec_that_runs(tmp_path):
    res = dynamat_cmd("inputs", "--system", SYSTEM, "--out", str(tmp_path), "--steps", "10",
                      "--model", "ase.calculators.lj:LennardJones", "--model-option", "sigma=2.3",
                      "--model-option", "epsilon=0.4")
    assert res.returncode == 0, res.stderr
    line = res.stdout.strip().splitlines()[-1]
    driver = shlex.split(line.rsplit(" & ", 1)[-1])
    assert driver[:6] == ["dynamat-driver", "--model", "ase.calculators.lj:LennardJones", "-o", "sigma=2.3", "-o"]
    ipi = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=tmp_path, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    try:
        drv = subprocess.run([str(BIN / "dynamat-driver"), *driver[1:], "--connect-timeout", "60"], cwd=tmp_path,
                             capture_output=True, text=True, timeout=300)
        assert drv.returncode == 0, drv.stderr
        assert ipi.wait(timeout=120) == 0
    finally:
        if ipi.poll() is None:
            ipi.kill()
            ipi.wait()
    # i-PI's step-0 potential is ASE's LennardJones with those parameters on the initial structure
    atoms = read(tmp_path / "init.xyz")
    atoms.calc = LennardJones(sigma=2.3, epsilon=0.4)
    rows = np.loadtxt(tmp_path / "simulation.out", ndmin=2)
    assert rows[0, 0] == 0 and rows[0, 4] == pytest.approx(atoms.get_potential_energy(), rel=1e-6)


COUNTING = '''
from ase.calculators.emt import EMT


class Counting(EMT):
    """EMT that writes, per call, 1 when ASE's `properties` ask for stress, else 0."""

    def __init__(self, record):
        super().__init__()
        self.record = record

    def calculate(self, atoms=None, properties=("energy",), system_changes=()):
        with open(self.record, "a") as fh:
            fh.write("1" if "stress" in properties else "0")
        super().calculate(atoms, properties, system_changes)
'''


def test_users_calculator_is_asked_for_stress_only_on_written_steps_and_timed_like_emt(tmp_path):
    """§5: a calculator that computes stress only on request is asked for it on the steps whose
    virial i-PI writes (every 10th of the metal protocol) and nowhere else; its timing reaches
    run.json under the same keys as a registered model's."""
    (tmp_path / "dm_counting.py").write_text(COUNTING)
    record = tmp_path / "stress_asked.txt"
    env = dict(os.environ, PYTHONPATH=str(tmp_path))
    runs = {}
    for model, opts in (("dm_counting:Counting", ["--model-option", f"record={record}"]), ("emt", [])):
        res = subprocess.run([str(BIN / "dynamat"), "run", "--model", model, *opts, "--system", SYSTEM,
                              "--steps", "40", "--seed", "5", "--out", str(tmp_path / "runs")],
                             capture_output=True, text=True, env=env, timeout=300, cwd=tmp_path)
        assert res.returncode == 0, res.stderr
        runs[model] = json.loads((tmp_path / "runs" / model.replace(":", "@") / SYSTEM / "run.json").read_text())
    asked = record.read_text()
    # MD steps 0..40, then the isolated Cu atom the demo reference asks for (a single point, its own driver)
    assert asked == "".join("1" if step % 10 == 0 else "0" for step in range(41)) + "1"
    mine, emt = runs["dm_counting:Counting"], runs["emt"]
    for key in ("seconds_per_step_median", "model_seconds_per_eval_median", "model_seconds_per_eval_mean"):
        assert mine[key] > 0 and emt[key] > 0, key
    assert mine["n_model_evals"] == emt["n_model_evals"] == 41
    t_mine, t_emt = mine["driver_timings"][0], emt["driver_timings"][0]
    assert set(t_emt) <= set(t_mine)  # every timing record of the zoo's, for the user's model too
    assert t_mine["n_evaluations_with_stress"] == t_emt["n_evaluations_with_stress"] == 5
