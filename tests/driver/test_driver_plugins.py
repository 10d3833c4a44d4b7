"""Plugin families (entry-point group ``dynamat.models``, dynamat_driver.models.plugins): the example
package (examples/dynamat-example-plugin, installed by ``make setup-test``) is found, listed with
its package and version, loads through the built-in families' path and batches; its physics equals
ASE's LennardJones (an independent implementation). A plugin that cannot be imported, speaks another
adapter API or takes a registered name is one line naming it, and never hides the other models."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.lj import LennardJones
from ase.stress import voigt_6_to_full_3x3_stress

BIN = Path(sys.executable).parent
pytest.importorskip("dynamat_example_plugin", reason="make setup-test installs examples/dynamat-example-plugin")


def _driver(*args, env=None):
    return subprocess.run([str(BIN / "dynamat-driver"), *args], capture_output=True, text=True, timeout=120, env=env)


def test_example_plugin_is_listed_with_its_package():
    res = _driver("--list", "--json")
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    ex = rows["example-lj"]
    assert ex["family"] == "pairlj" and ex["installed"] and ex["tier"] == "example" and ex["n_params"] == 3
    assert ex["source"] == {"package": "dynamat-example-plugin", "version": "0.1.0", "plugin": True,
                            "entry_point": "dynamat_example_plugin.pairlj"}
    assert rows["emt"]["source"]["plugin"] is False  # the registry is still there, unchanged


def test_example_plugin_batch_equals_ase_lennard_jones():
    from dynamat_driver.models import load_model
    from dynamat_driver.models.plugins import ADAPTER_API_VERSION

    import dynamat_example_plugin.pairlj as family

    assert family.ADAPTER_API == ADAPTER_API_VERSION
    model = load_model("example-lj", options={"sigma": "2.2", "epsilon": "0.3"})
    assert model.can_batch and model.skips_stress and not model.keeps_reference
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    b = bulk("Cu", "fcc", a=3.7).repeat((2, 2, 3))
    for i, atoms in enumerate((a, b)):
        atoms.rattle(0.05, seed=i)
    results = model.calculate_batch([a, b])  # two cells of different size in one call
    for atoms, (e, f, s) in zip((a, b), results):
        atoms.calc = LennardJones(sigma=2.2, epsilon=0.3, rc=6.0)
        assert e == pytest.approx(atoms.get_potential_energy(), abs=1e-10)
        np.testing.assert_allclose(f, atoms.get_forces(), atol=1e-10)
        np.testing.assert_allclose(s, voigt_6_to_full_3x3_stress(atoms.get_stress()), atol=1e-12)
    assert model.calculate_batch([a], stress=False)[0][2] is None  # stress only when asked
    assert model.versions()["dynamat-example-plugin"] == "0.1.0"  # the plugin's version is recorded
    assert model.describe()["family"] == "pairlj"


def _fake_plugin(root: Path, name: str, module: str, body: str) -> dict:
    """A real installed distribution (dist-info with entry_points.txt) on PYTHONPATH."""
    info = root / f"{name}-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[dynamat.models]\n{name.replace('-', '')} = {module}\n")
    (root / f"{module}.py").write_text(body)
    return dict(os.environ, PYTHONPATH=str(root))


@pytest.mark.parametrize("body, expected", [
    ("ADAPTER_API = 2\n", "implements adapter API 2; dynamat-driver 0.1.0 implements 1"),
    ("raise ImportError('needs libfoo.so')\n", "cannot be imported: ImportError: needs libfoo.so"),
    ("from dynamat_driver.models import ModelInfo\nADAPTER_API = 1\ndef load(info, **kw): pass\n"
     "MODELS = [ModelInfo('emt', 'badplug', 'x', None, None, None)]\n", "model name 'emt' is already taken"),
])
def test_unusable_plugin_is_one_line_and_hides_nothing(tmp_path, body, expected):
    env = _fake_plugin(tmp_path, "bad-plug", "badplug", body)
    res = _driver("--list", "--json", env=env)
    assert res.returncode == 0, res.stderr
    rows = {r["name"]: r for r in json.loads(res.stdout)}
    assert expected in rows["badplug"]["missing"][0] and "bad-plug 1.0" in rows["badplug"]["missing"][0]
    assert rows["emt"]["installed"] and rows["example-lj"]["installed"]  # the others still served
    res = _driver("--model", "bad-model", "--unix", "nowhere", env=env)
    lines = res.stderr.strip().splitlines()
    assert res.returncode == 1 and len(lines) == 1 and "Traceback" not in res.stderr, res.stderr
    assert lines[0].startswith("dynamat-driver: error: unknown model 'bad-model'") and expected in lines[0]
    assert "example-lj (see --list)" in lines[0]  # the usable plugin's model is among the known ones
