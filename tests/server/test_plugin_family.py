"""A plugin model family (the example package examples/dynamat-example-plugin, installed by
``make setup-test``) through the real CLI: ``dynamat models`` lists it with its package, and it runs
batched: a packed run of two systems shares model calls and equals each solo run with the same
seed; its registry facts reach run.json like a built-in family's."""

import json
import re

import pytest

from conftest import dynamat_cmd
from test_packed_runs import SYSTEMS, _assert_same_run

pytest.importorskip("dynamat_example_plugin", reason="make setup-test installs examples/dynamat-example-plugin")
MODEL = "example-lj"


def test_dynamat_models_lists_the_plugin_with_its_package():
    res = dynamat_cmd("models")
    assert res.returncode == 0, res.stderr
    (line,) = [ln for ln in res.stdout.splitlines() if ln.startswith(MODEL + " ")]
    assert line.split()[:4] == [MODEL, "example", "pairlj", "3"]
    assert line.endswith("plugin dynamat-example-plugin 0.1.0")
    emt = next(ln for ln in res.stdout.splitlines() if ln.startswith("emt "))
    assert emt.endswith("dynamat-driver 0.1.0")


def test_plugin_packed_run_shares_calls_and_equals_its_solo_runs(tmp_path):
    res = dynamat_cmd("run", "--model", MODEL, "--system", ",".join(SYSTEMS), "--pack", "2", "--pack-wait-ms", "200",
                      "--steps", "60", "--seed", "4", "--out", str(tmp_path / "packed"))
    assert res.returncode == 0, res.stderr
    for name in SYSTEMS:
        solo = dynamat_cmd("run", "--model", MODEL, "--system", name, "--steps", "60", "--seed", "4",
                           "--out", str(tmp_path / "solo"))
        assert solo.returncode == 0, solo.stderr
        _assert_same_run(tmp_path / "packed" / MODEL / name, tmp_path / "solo" / MODEL / name)
        rec = json.loads((tmp_path / "packed" / MODEL / name / "run.json").read_text())
        assert rec["status"] == "completed" and rec["pack"]["model"] == MODEL
        assert (rec["tier"], rec["n_params"], rec["model_family"]) == ("example", 3, "pairlj")
        assert rec["versions"]["driver:dynamat-example-plugin"] == "0.1.0"
        assert rec["model_seconds_per_eval_median"] > 0
        pack = json.loads((tmp_path / "packed" / MODEL / name / "driver_timing.json").read_text())["pack"]
        assert pack["shared_model_calls"] is True and pack["sessions_served"] == 2
    # the pack driver's final counters: the two simulations' 2 x 61 structures went through shared
    # batched calls (61 calls if every call held both; 122 if none did)
    log = (tmp_path / "packed" / f"pack-{MODEL}.log").read_text()
    calls, structures = map(int, re.search(r"pack done: 2 session\(s\), (\d+) model calls, (\d+) structures",
                                           log).groups())
    assert structures == 122 and calls <= 80, (calls, structures)


def test_a_models_file_table_cannot_take_a_plugin_models_name(tmp_path):
    """A table named like an installed plugin's model would silently serve another calculator under
    the plugin model's name (and its run folder): refused like a registered model's name."""
    models = tmp_path / "models.toml"
    models.write_text(f'[{MODEL}]\ncalculator = "ase.calculators.emt:EMT"\n')
    res = dynamat_cmd("run", "--model", MODEL, "--models-file", str(models), "--system", SYSTEMS[0], "--steps", "10",
                      "--out", str(tmp_path / "runs"))
    assert res.returncode != 0 and f"table [{MODEL}] has the name of a registered model" in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and not (tmp_path / "runs").exists()


def test_dynamat_models_says_why_a_broken_plugin_cannot_be_used(tmp_path):
    """An installed plugin whose module fails to import is a row marked not installed, and its own
    error follows the table (it was only in the JSON), while the other models are listed as usual."""
    import os
    import subprocess

    from conftest import BIN

    info = tmp_path / "bad_plug-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: bad-plug\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[dynamat.models]\nbadplug = badplug\n")
    (tmp_path / "badplug.py").write_text("raise ImportError('needs libfoo.so')\n")
    res = subprocess.run([str(BIN / "dynamat"), "models"], capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, PYTHONPATH=str(tmp_path)))
    assert res.returncode == 0, res.stderr
    lines = res.stdout.splitlines()
    assert any(ln.startswith("badplug ") and " no " in ln for ln in lines)
    assert lines[-1].startswith("badplug: plugin family 'badplug' (bad-plug 1.0") and "ImportError: needs libfoo.so" in lines[-1]
    assert any(ln.startswith(MODEL + " ") for ln in lines)
