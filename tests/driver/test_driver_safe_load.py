"""Model files are data: a crafted checkpoint given with --model-path never runs code (CHGNet and SevenNet
unpickle with weights_only=False on their own), and the real shipped weights still load and agree."""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")

CRAFT = textwrap.dedent("""
    import os, sys, torch
    class Evil:
        def __reduce__(self):
            return (os.system, ("touch " + sys.argv[2],))
    torch.save({"model": {"state_dict": {}, "model_args": {}}, "config": {}, "x": Evil()}, sys.argv[1])
""")


@pytest.mark.parametrize("model", ["chgnet", "sevennet-0"])
def test_crafted_checkpoint_is_refused_without_running(tmp_path, model):
    pytest.importorskip("chgnet" if model == "chgnet" else "sevenn")
    evil, marker = tmp_path / "evil.pth.tar", tmp_path / "PWNED"
    subprocess.run([sys.executable, "-c", CRAFT, str(evil), str(marker)], check=True)
    assert not marker.exists()
    # the unsafe path really runs code: torch's plain unpickler on the same file creates the marker
    subprocess.run([sys.executable, "-c", f"import torch; torch.load({str(evil)!r}, weights_only=False)"], check=True)
    assert marker.exists()
    marker.unlink()
    res = subprocess.run([sys.executable, "-c",
                          "import sys; from dynamat_driver.models import load_model; "
                          f"load_model({model!r}, model_path={str(evil)!r})"], capture_output=True, text=True)
    assert res.returncode != 0 and "DriverError" in res.stderr, res.stderr
    assert not marker.exists(), "a crafted checkpoint ran code"


def test_shipped_weights_load_as_data_and_agree():
    """The weights-only path gives the package's own numbers (CHGNet 0.3.0 and SevenNet-0 from their wheels)."""
    pytest.importorskip("chgnet")
    pytest.importorskip("sevenn")
    import numpy as np
    from ase.build import bulk

    from dynamat_driver.models import load_model

    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    from chgnet.model import CHGNet, CHGNetCalculator
    from sevenn.calculator import SevenNetCalculator

    for name, reference in (("chgnet", lambda: CHGNetCalculator(model=CHGNet.load(model_name="0.3.0", verbose=False), use_device="cpu")),
                            ("sevennet-0", lambda: SevenNetCalculator(model="7net-0", device="cpu"))):
        ours = load_model(name)
        a = atoms.copy()
        a.calc = reference()
        e_ref, f_ref = a.get_potential_energy(), a.get_forces()
        b = atoms.copy()
        b.calc = ours.calc  # the calculator our weights-only load built
        e, f = b.get_potential_energy(), b.get_forces()
        assert e == pytest.approx(e_ref, abs=1e-6) and np.allclose(f, f_ref, atol=1e-6), name
