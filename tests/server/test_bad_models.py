"""Bad models through `dynamat run` (issue 21 §6): a module that does not import, a callable that
raises when called or in the middle of the run, a models-file model whose module is missing, a
plugin-style Model with wrong shapes. Each is one `dynamat: error:` line naming the model and what
it did, exit 2, run.json status `failed`, no i-PI or driver left, and an earlier result in the same
--out untouched. (NaN, wrong calculator shapes and a missing stress: tests/driver/test_driver_custom_model.py.)"""

import json
import os
import subprocess
import textwrap

import pytest

from conftest import BIN, assert_no_leftovers, assert_one_line_error

SYSTEM = "bulkCu_300K-demo_EMT"
MODULES = {
    "dm_broken.py": "raise ImportError('needs libfoo.so')\n",
    "dm_calcs.py": textwrap.dedent('''\
        from ase.calculators.calculator import all_changes
        from ase.calculators.emt import EMT


        def no_weights():
            raise FileNotFoundError("best.pt")


        class DiesLater(EMT):
            """EMT until its (after+1)-th call, then raises (a CUDA error mid-run, say)."""

            def __init__(self, after=0):
                super().__init__()
                self.after, self.calls = after, 0

            def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes):
                self.calls += 1
                if self.calls > self.after:
                    raise RuntimeError("CUDA error: an illegal memory access")
                super().calculate(atoms, properties, system_changes)


        def transposed():
            """A dynamat_driver Model whose forces come back (3, n): checked like a calculator's."""
            from dynamat_driver.models import get_model_info, load_model

            class Transposed(type(load_model("emt"))):
                def calculate(self, atoms, first, stress=True):
                    e, f, s = super().calculate(atoms, first, stress)
                    return e, f.T, s

            return Transposed(get_model_info("emt"))
    '''),
    "models.toml": '[mine]\ncalculator = "dm_missing_module:make"\nlabel = "Mine"\n',
}


@pytest.fixture(scope="module")
def env_and_earlier(tmp_path_factory):
    """The user's modules on PYTHONPATH, and an --out that already holds a completed EMT run."""
    root = tmp_path_factory.mktemp("bad_models")
    for name, text in MODULES.items():
        (root / name).write_text(text)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])))
    out = root / "runs"
    res = _dynamat(env, root, "run", "--model", "emt", "--system", SYSTEM, "--steps", "20", "--seed", "1",
                   "--out", str(out))
    assert res.returncode == 0, res.stderr
    earlier = {p: p.read_bytes() for p in (out / "emt" / SYSTEM).iterdir() if p.is_file()}
    return root, env, out, earlier


def _dynamat(env, cwd, *args):
    return subprocess.run([str(BIN / "dynamat"), *args], capture_output=True, text=True, env=env, timeout=300, cwd=cwd)


@pytest.mark.parametrize("model, extra, folder, expected", [
    ("dm_broken:make", [], "dm_broken@make", "cannot import dm_broken: ImportError: needs libfoo.so"),
    ("dm_calcs:no_weights", [], "dm_calcs@no_weights", "the call raised FileNotFoundError: best.pt"),
    ("dm_calcs:DiesLater", ["--model-option", "after=15"], "dm_calcs@DiesLater",
     "raised RuntimeError: CUDA error: an illegal memory access"),
    ("dm_calcs:transposed", [], "dm_calcs@transposed", "returned forces of shape (3, 32) for 32 atoms, not (32, 3)"),
    ("mine", ["--models-file", "models.toml"], "mine", "cannot import dm_missing_module: ModuleNotFoundError"),
])
def test_bad_model_is_one_line_a_failed_run_and_nothing_lost(env_and_earlier, model, extra, folder, expected):
    root, env, out, earlier = env_and_earlier
    res = _dynamat(env, root, "run", "--model", model, *extra, "--system", SYSTEM, "--steps", "40", "--seed", "2",
                   "--out", str(out))
    spec = "dm_missing_module:make" if model == "mine" else model
    line = assert_one_line_error(res, f"model '{spec}'", expected, after_progress=True)
    rec = json.loads((out / folder / SYSTEM / "run.json").read_text())
    assert rec["status"] == "failed" and expected in rec["error"] and rec["model"] == model, line
    assert rec["restarts"] == []  # a model's own error is not retried as a crash would be
    assert_no_leftovers(str(out / folder))
    assert {p: p.read_bytes() for p in (out / "emt" / SYSTEM).iterdir() if p.is_file()} == earlier


@pytest.mark.parametrize("model, extra, expected", [
    ("dm_calcs:transposed", [], "returned forces of shape (3, 32) for 32 atoms, not (32, 3)"),
    ("dm_calcs:DiesLater", ["--model-option", "after=0"], "raised RuntimeError: CUDA error: an illegal memory access"),
])
def test_singlepoint_says_what_the_model_did(env_and_earlier, model, extra, expected):
    """The driver closes the socket before it logs its error: the server waits for it to exit, so the line
    is the driver's, not "the driver disconnected: no message"."""
    root, env, _, _ = env_and_earlier
    res = _dynamat(env, root, "singlepoint", "--model", model, *extra, "--system", SYSTEM, "--every", "50")
    assert_one_line_error(res, f"model '{model}'", expected)
