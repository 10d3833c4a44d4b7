"""A user's model by name, ``MODULE:CALLABLE`` (dynamat_driver.models.custom): typed options reach
the calculator, and every bad model is one line naming it — at load time from the driver alone,
at evaluation time from a real ``dynamat run`` (real i-PI), with nothing left running."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones

from dynamat_driver import DriverError
from dynamat_driver.models.custom import parse_option_value

BIN = Path(sys.executable).parent
SYSTEM = "bulkCu_300K-demo_EMT"

BAD_MODELS = '''
import numpy as np
from ase.calculators.calculator import all_changes
from ase.calculators.emt import EMT


def raises():
    raise RuntimeError("weights file not found")


def not_a_calculator():
    return 42


class Spoiled(EMT):
    """EMT, spoiled from its (after+1)-th call on: NaN forces, a missing atom's forces, or no stress."""

    def __init__(self, how="nan", after=0):
        super().__init__()
        self.how, self.after, self.calls = how, after, 0

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
        super().calculate(atoms, properties, system_changes)
        self.calls += 1
        if self.calls <= self.after:
            return
        if self.how == "nan":
            self.results["forces"] = self.results["forces"] * np.nan
        elif self.how == "shape":
            self.results["forces"] = self.results["forces"][:-1]
        elif self.how == "energy":
            self.results["energy"] = np.zeros(3)
        elif self.how == "nostress":
            self.results.pop("stress", None)
        elif self.how == "raise":
            raise ValueError("graph has no edges")


def on_device(device="cpu"):
    return EMT()


def short_model():
    """A Model whose forces miss an atom: checked like a calculator's."""
    from dynamat_driver.models import get_model_info, load_model

    class Short(type(load_model("emt"))):
        def calculate(self, atoms, first, stress=True):
            e, f, s = super().calculate(atoms, first, stress)
            return e, f[:-1], s

    return Short(get_model_info("emt"))


class Loose(EMT):
    """A calculator that lists no parameters (Calculator's own, empty) and takes any keyword."""

    default_parameters = {}

    def __init__(self, **kwargs):
        super().__init__()
        self.given = kwargs


def lj_model(sigma=2.0):
    """A dynamat_driver Model (not a calculator): used as is."""
    from dynamat_driver.models import load_model

    return load_model("lj", options={"sigma": str(sigma), "epsilon": "0.3"})
'''


@pytest.fixture
def user_modules(tmp_path):
    """A folder with the user's modules, and an environment whose PYTHONPATH holds it."""
    mods = tmp_path / "mods"
    mods.mkdir()
    (mods / "dm_bad_import.py").write_text("raise ImportError('needs libfoo.so')\n")
    (mods / "dm_exits.py").write_text("raise SystemExit('no GPU here')\n")
    (mods / "dm_user_models.py").write_text(textwrap.dedent(BAD_MODELS))
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(mods), os.environ.get("PYTHONPATH")])))
    return mods, env


def _cwd_procs(under: Path) -> list[str]:
    """Processes working inside ``under`` (i-PI and the driver run in the run folder)."""
    found = []
    for p in Path("/proc").iterdir():
        if p.name.isdigit():
            try:
                cwd = os.readlink(p / "cwd")
            except OSError:
                continue
            if cwd.startswith(str(under)):
                found.append((p / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace"))
    return found


def _error_lines(stderr: str, prog: str) -> list[str]:
    assert "Traceback" not in stderr, stderr
    return [ln for ln in stderr.splitlines() if ln.startswith(f"{prog}: error:")]


# ----------------------------------------------------------------------------------- options
def test_options_are_typed(tmp_path):
    assert parse_option_value("2.3") == 2.3 and isinstance(parse_option_value("2.3"), float)
    assert parse_option_value("6") == 6 and isinstance(parse_option_value("6"), int)
    assert parse_option_value("1e-3") == 1e-3
    assert parse_option_value("true") is True and parse_option_value("False") is False
    assert parse_option_value("mace-mp") == "mace-mp"
    assert parse_option_value("nan") == "nan" and parse_option_value("inf") == "inf"  # words, not numbers
    f = tmp_path / "w.pt"
    f.write_text("x")
    assert parse_option_value(f"path:{f}") == str(f)
    with pytest.raises(DriverError, match="does not exist"):
        parse_option_value(f"path:{tmp_path / 'missing.pt'}")


def test_lj_options_reach_the_calculator_through_a_real_driver():
    # the driver is a real process on a real socket; the numbers must be ASE's LennardJones
    # with sigma 2.3 Å, epsilon 0.4 eV, rc 6 Å (LJ's own defaults, sigma 1, would differ by far)
    from dynamat.models_file import model_option_args
    from dynamat.socket_server import DriverServer

    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat((2, 2, 2))
    atoms.rattle(0.05, seed=7)
    ref = atoms.copy()
    ref.calc = LennardJones(sigma=2.3, epsilon=0.4, rc=6.0)
    args = model_option_args(("sigma=2.3", "epsilon=0.4", "rc=6.0"))
    with DriverServer("ase.calculators.lj:LennardJones", "Cu32", len(atoms), batch_size=1, driver_args=args) as srv:
        e, f, s = srv.evaluate(atoms.cell.array[None], atoms.positions[None])
    assert e[0] == pytest.approx(ref.get_potential_energy(), rel=1e-10)
    np.testing.assert_allclose(f[0], ref.get_forces(), atol=1e-9)
    np.testing.assert_allclose(s[0], ref.get_stress(), atol=1e-9)
    assert abs(e[0] - LennardJones(sigma=2.0, epsilon=0.4, rc=6.0).get_potential_energy(atoms)) > 1.0


def test_calculator_keywords_are_its_parameters_or_arguments(user_modules):
    """A **kwargs calculator takes its default_parameters and explicit arguments; one that lists
    no parameters takes any keyword (nothing tells a misspelt one)."""
    mods, _ = user_modules
    sys.path.insert(0, str(mods))
    try:
        from dynamat_driver.models import load_model

        m = load_model("ase.calculators.lj:LennardJones", options={"sigma": "2.3", "smooth": "true"})
        assert (m.calc.parameters.sigma, m.calc.parameters.smooth) == (2.3, True)
        # Morse: rho0 a parameter, neighbor_list an explicit argument of its __init__
        m = load_model("ase.calculators.morse:MorsePotential", options={"rho0": "5.0", "neighbor_list": "x"})
        assert m.calc.parameters.rho0 == 5.0
        with pytest.raises(DriverError, match=r"takes no option\(s\) rh0 \(it accepts: epsilon, neighbor_list, "
                                              r"r0, rcut1, rcut2, rho0\)$"):
            load_model("ase.calculators.morse:MorsePotential", options={"rh0": "5.0"})
        assert load_model("dm_user_models:Loose", options={"anything": "1"}).calc.given == {"anything": 1}
    finally:
        sys.path.remove(str(mods))
        sys.modules.pop("dm_user_models", None)


def test_calculator_keywords_its_default_parameters_do_not_list_are_passed():
    """default_parameters need not list every keyword a calculator reads: ASE's Psi4 lists basis, method and
    symmetry and reads num_threads, memory, charge, multiplicity and reference from its parameters too
    (`reference generate --engine ase` with -o num_threads=8 was refused). A near miss is still refused."""
    from ase.calculators.psi4 import Psi4

    from dynamat_driver.models.custom import _call_arguments

    spec = "ase.calculators.psi4:Psi4"
    opts = {"method": "b3lyp", "num_threads": 8, "memory": "2GB", "charge": 0, "multiplicity": 1, "reference": "uhf"}
    assert _call_arguments(spec, Psi4, opts, "cpu", None, None) == opts
    with pytest.raises(DriverError, match=r"takes no option\(s\) methd "):
        _call_arguments(spec, Psi4, {"methd": "b3lyp", "num_threads": 8}, "cpu", None, None)


def test_a_returned_model_is_used_as_is(user_modules):
    mods, env = user_modules
    sys.path.insert(0, str(mods))
    try:
        from dynamat_driver.models import load_model

        m = load_model("dm_user_models:lj_model", options={"sigma": "2.2"})
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        atoms.rattle(0.05, seed=1)
        ref = atoms.copy()
        ref.calc = LennardJones(sigma=2.2, epsilon=0.3, rc=3 * 2.2, smooth=True)
        e, f, _ = m.calculate(atoms, True)
        assert e == pytest.approx(ref.get_potential_energy(), rel=1e-12)
        np.testing.assert_allclose(f, ref.get_forces(), atol=1e-12)
        assert m.describe()["spec"] == "dm_user_models:lj_model" and m.describe()["options"] == {"sigma": 2.2}
    finally:
        sys.path.remove(str(mods))
        sys.modules.pop("dm_user_models", None)


def test_a_returned_models_results_are_checked(user_modules):
    mods, _ = user_modules
    sys.path.insert(0, str(mods))
    try:
        from dynamat_driver.models import load_model

        m = load_model("dm_user_models:short_model")
        atoms = bulk("Cu", "fcc", a=3.6, cubic=True)
        with pytest.raises(DriverError, match=r"'dm_user_models:short_model' returned forces of shape \(3, 3\) for 4"):
            m.calculate(atoms, True)
    finally:
        sys.path.remove(str(mods))
        sys.modules.pop("dm_user_models", None)


def test_facts_describe_a_users_model_only():
    """--label/--tier/--n-params (a models file's table) show in describe(); a registered model keeps its own."""
    from dynamat_driver.models import load_model

    m = load_model("ase.calculators.emt:EMT", facts={"label": "Mine", "tier": 5, "n_params": 7, "training_set": "x"})
    d = m.describe()
    assert (d["human_name"], d["tier"], d["n_params"], d["training_set"]) == ("Mine", 5, 7, "x")
    with pytest.raises(DriverError, match="'emt' is registered with its own"):
        load_model("emt", facts={"label": "Mine"})
    with pytest.raises(DriverError, match="--n-params must be a non-negative integer"):
        load_model("ase.calculators.emt:EMT", facts={"n_params": -1})


# ------------------------------------------------------------------ bad models at load time
LOAD_FAILURES = [
    (["--model", "dm_bad_import:make"], "cannot import dm_bad_import: ImportError: needs libfoo.so"),
    (["--model", "dm_exits:make"], "cannot import dm_exits: SystemExit: no GPU here"),
    (["--model", "dm_no_such_module:make"], "cannot import dm_no_such_module: ModuleNotFoundError"),
    (["--model", "dm_user_models:missing"], "dm_user_models has no attribute missing"),
    (["--model", "dm_user_models:raises"], "the call raised RuntimeError: weights file not found"),
    (["--model", "dm_user_models:not_a_calculator"], "returned a int, not an ASE Calculator"),
    (["--model", "dm_user_models:Spoiled", "-o", "colour=red"], "takes no option(s) colour"),
    (["--model", "dm_user_models:Spoiled", "--device", "cuda"], "takes no 'device' argument"),
    # LennardJones takes **kwargs, and ASE would keep sigmaa unread: the run would use sigma = 1 Å
    (["--model", "ase.calculators.lj:LennardJones", "-o", "sigmaa=2.3"],
     "takes no option(s) sigmaa (it accepts: epsilon, rc, ro, sigma, smooth)"),
    (["--model", "dm_user_models:Spoiled", "-o", "after=path:/no/such/file"], "does not exist"),
    (["--model", "dm_user_models:on_device", "-o", "device=cuda"], "device is the driver's --device: give --device cuda"),
    (["--model", "dm_user_models:"], "neither a registered name"),
]


def test_load_failures_are_one_line_each(user_modules, tmp_path):
    _, env = user_modules
    exe = BIN / "dynamat-driver"
    procs = [subprocess.Popen([str(exe), *args, "--unix", str(tmp_path / "nosock"), "--connect-timeout", "1"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=tmp_path)
             for args, _ in LOAD_FAILURES]
    for p, (args, expected) in zip(procs, LOAD_FAILURES):
        _, err = p.communicate(timeout=120)
        assert p.returncode == 1, (args, err)
        lines = _error_lines(err, "dynamat-driver")
        assert len(lines) == 1 and len(err.strip().splitlines()) == 1, err
        assert args[1] in lines[0] and expected in lines[0], (expected, lines[0])


# ------------------------------------------------------- bad models at evaluation, real MD
def _run(tmp_path, env, model, *opts, steps="60"):
    out = tmp_path / "runs"
    res = subprocess.run([str(BIN / "dynamat"), "run", "--model", model, *opts, "--system", SYSTEM,
                          "--steps", steps, "--seed", "3", "--out", str(out)],
                         capture_output=True, text=True, env=env, timeout=600, cwd=tmp_path)
    folder = out / model.replace(":", "@") / SYSTEM
    rec = json.loads((folder / "run.json").read_text()) if (folder / "run.json").exists() else None
    return res, rec, folder


@pytest.mark.slow
def test_nan_forces_are_an_explosion_with_its_step(user_modules, tmp_path):
    _, env = user_modules
    # calls 1..25 are steps 0..24; the 26th, the forces of MD step 25, is NaN
    res, rec, folder = _run(tmp_path, env, "dm_user_models:Spoiled", "--model-option", "how=nan",
                            "--model-option", "after=25")
    lines = _error_lines(res.stderr, "dynamat")
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "exploded" in lines[0] and "non-finite" in lines[0] and "MD step 25" in lines[0]
    assert rec["status"] == "exploded" and "MD step 25" in rec["error"] and "dm_user_models:Spoiled" in rec["error"]
    assert 20 <= rec["steps_done"] <= 25  # the frames before the explosion are kept
    assert (folder / "simulation.pos_0.extxyz").stat().st_size > 0
    assert not _cwd_procs(tmp_path)


@pytest.mark.slow
@pytest.mark.parametrize("how, after, expected", [
    ("shape", 0, "returned forces of shape (31, 3) for 32 atoms, not (32, 3)"),
    ("energy", 0, "returned energy of shape (3,), not one number"),
    ("nostress", 0, "returned no stress where the protocol needs it"),
    ("raise", 0, "raised ValueError: graph has no edges"),
])
def test_bad_results_are_one_line_and_a_failed_run(user_modules, tmp_path, how, after, expected):
    _, env = user_modules
    res, rec, _ = _run(tmp_path, env, "dm_user_models:Spoiled", "--model-option", f"how={how}",
                       "--model-option", f"after={after}", steps="20")
    lines = _error_lines(res.stderr, "dynamat")
    assert res.returncode == 2 and len(lines) == 1, res.stderr
    assert "model 'dm_user_models:Spoiled'" in lines[0] and expected in lines[0], lines[0]
    assert rec["status"] == "failed" and expected in rec["error"]
    assert not _cwd_procs(tmp_path)
