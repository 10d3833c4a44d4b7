"""dynamat-driver pieces that need no socket: species, INIT text, units, registry, models."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk

from dynamat_driver import DriverError
from dynamat_driver import units
from dynamat_driver.evaluator import Evaluator, SystemSpec, parse_pbc, parse_species, resolve_system
from dynamat_driver.models import (
    get_model_info,
    is_installed,
    list_models,
    load_model,
    model_info_dict,
    registry_table,
)
from dynamat_driver.models.registry import REGISTRY
from dynamat_driver.protocol import inet_address, parse_init_string, unix_address


# --------------------------------------------------------------------------------------------
# species and INIT text
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "formula, expected",
    [
        ("AuCu31", ["Au"] + ["Cu"] * 31),
        ("Cu3AuCu2", ["Cu"] * 3 + ["Au"] + ["Cu"] * 2),
        ("MoS2", ["Mo", "S", "S"]),
        ("C14H10", ["C"] * 14 + ["H"] * 10),
        ("Co", ["Co"]),
    ],
)
def test_parse_species(formula, expected):
    assert parse_species(formula) == expected


@pytest.mark.parametrize("bad", ["", "cu3", "Cu3 Au", "Xx2", "Cu0", "3Cu", "X"])
def test_parse_species_rejects(bad):
    with pytest.raises(DriverError):
        parse_species(bad)


def test_species_roundtrip_with_ase_formula():
    rng = np.random.default_rng(0)
    symbols = list(rng.choice(["Cu", "Au", "Pd", "Ag"], size=97))
    atoms = Atoms(symbols)
    assert parse_species(atoms.get_chemical_formula(mode="reduce")) == symbols


def test_parse_init_string():
    assert parse_init_string(" species : Cu3Au , template : init.xyz , batch_size:4") == {
        "species": "Cu3Au",
        "template": "init.xyz",
        "batch_size": "4",
    }
    # i-PI appends the batch size after its own trailing comma (empty entry)
    assert parse_init_string(b" species : AuCu8 , template : init.xyz , , batch_size:2")["batch_size"] == "2"
    assert parse_init_string(b"\x00") == {}  # ASE's SocketIOCalculator
    assert parse_init_string("{template: /a/b:c.xyz, numbers: 29}") == {"template": "/a/b:c.xyz", "numbers": "29"}


def test_parse_pbc():
    assert parse_pbc("TTF").tolist() == [True, True, False]
    assert parse_pbc("T").tolist() == [True] * 3
    assert parse_pbc("1 0 1").tolist() == [True, False, True]
    with pytest.raises(DriverError):
        parse_pbc("TT")


def test_resolve_system_order(tmp_path):
    import ase.io

    slab = bulk("Cu", "fcc", a=3.6, cubic=True)
    slab.pbc = [True, True, False]
    ase.io.write(tmp_path / "t.xyz", slab, format="extxyz")
    # species token wins; pbc from the pbc token
    s = resolve_system({"species": "Cu4", "pbc": "TTF"})
    assert s.numbers.tolist() == [29] * 4 and s.pbc.tolist() == [True, True, False]
    # --template: species and pbc from the file
    s = resolve_system({}, template_path=str(tmp_path / "t.xyz"))
    assert s.numbers.tolist() == [29] * 4 and s.pbc.tolist() == [True, True, False]
    # disagreeing species and --template
    with pytest.raises(DriverError, match="disagree"):
        resolve_system({"species": "Au4"}, template_path=str(tmp_path / "t.xyz"))
    with pytest.raises(DriverError, match="no species"):
        resolve_system({"template": str(tmp_path / "missing.xyz")})


def test_addresses():
    assert unix_address("dynamat").path == "/tmp/ipi_dynamat"
    assert unix_address("/tmp/dmx/sock").path == "/tmp/dmx/sock"
    a = inet_address("node12:31415")
    assert (a.host, a.port) == ("node12", 31415)
    with pytest.raises(DriverError):
        inet_address("node12")


# --------------------------------------------------------------------------------------------
# units: the driver's constants are i-PI's
# --------------------------------------------------------------------------------------------


def test_units_are_ipis():
    ipi_units = pytest.importorskip("ipi.utils.units")
    assert units.BOHR_PER_ANGSTROM == ipi_units.unit_to_internal("length", "angstrom", 1.0)
    assert units.HARTREE_PER_EV == ipi_units.unit_to_internal("energy", "electronvolt", 1.0)
    # i-PI's printed-force factor differs from the energy/length ratio at the 1e-7 level
    assert abs(units.HARTREE_PER_BOHR_PER_EV_PER_ANGSTROM / units.IPI_EV_PER_ANG_TABLE - 1) < 2e-7


def test_virial_convention_matches_ipi_ase_driver():
    """virial = -stress·V (transposed) in hartree, as ipi/pes/_ase.py computes it."""
    rng = np.random.default_rng(1)
    s = rng.normal(size=(3, 3))
    s = s + s.T
    voigt = np.array([s[0, 0], s[1, 1], s[2, 2], s[1, 2], s[0, 2], s[0, 1]])
    v = units.virial_to_ipi(voigt, 12.5)
    expected = -s[[0, 1, 2]][:, [0, 1, 2]] * 12.5 * units.HARTREE_PER_EV
    np.testing.assert_allclose(v, expected.T, rtol=1e-15)
    np.testing.assert_allclose(units.virial_from_ipi(v, 12.5), s, rtol=1e-14)
    cell = np.array([[3.0, 0, 0], [0.5, 3.1, 0], [0.2, 0.3, 2.9]])
    h = units.cell_ase_to_ipi(cell)
    assert np.allclose(np.triu(h), h)  # ASE's lower-triangular cell is i-PI's upper-triangular h
    np.testing.assert_allclose(units.cell_ipi_to_ase(h), cell, rtol=1e-15)


# --------------------------------------------------------------------------------------------
# registry: lazy, and the driver never imports the server wing
# --------------------------------------------------------------------------------------------


def test_registry():
    names = [m.name for m in list_models()]
    for n in ("emt", "lj", "harmonic", "chgnet", "sevennet-0", "sevennet-l3i5"):
        assert n in names
    assert get_model_info("chgnet").extra == "chgnet"
    assert model_info_dict("sevennet-0")["kwargs"] == {"checkpoint": "7net-0"}
    assert "sevennet-l3i5" in registry_table()
    with pytest.raises(DriverError, match="unknown model"):
        get_model_info("nope")


FORBIDDEN = ("matplotlib", "mdtraj", "h5py", "ipi", "dynamat", "torch", "chgnet", "sevenn")


def test_import_is_lean():
    """Importing the driver, its registry and its CLI (and listing models) imports neither the
    server wing, nor i-PI, nor any model package."""
    code = (
        "import sys\n"
        "import dynamat_driver, dynamat_driver.cli, dynamat_driver.evaluator, dynamat_driver.protocol\n"
        "from dynamat_driver.models import list_models, registry_table, model_info_dict\n"
        "registry_table(); [model_info_dict(m.name) for m in list_models()]\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {FORBIDDEN!r})\n"
        "print(','.join(bad))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "", out.stdout


# --------------------------------------------------------------------------------------------
# analytic models
# --------------------------------------------------------------------------------------------


def _fd_check(model, atoms, h=1e-5):
    """Finite-difference check of forces and stress (ASE sign: σ = (1/V) ∂E/∂ε)."""
    e0, f, s = model.calculate(atoms, True)
    num_f = np.zeros_like(f)
    for i in range(len(atoms)):
        for k in range(3):
            for sign in (1, -1):
                b = atoms.copy()
                b.positions[i, k] += sign * h
                num_f[i, k] -= sign * model.calculate(b, False)[0] / (2 * h)
    np.testing.assert_allclose(f, num_f, atol=1e-6)
    num_s = np.zeros((3, 3))
    for a in range(3):
        for b_ in range(3):
            for sign in (1, -1):
                eps = np.zeros((3, 3))
                eps[a, b_] += sign * h
                b = atoms.copy()
                b.set_cell(atoms.cell.array @ (np.eye(3) + eps), scale_atoms=True)
                num_s[a, b_] += sign * model.calculate(b, False)[0] / (2 * h)
    num_s /= atoms.get_volume()
    return units.stress_to_3x3(s), num_s


def test_harmonic_forces_and_exact_stress():
    model = load_model("harmonic", options={"k": "2.5"})
    ref = bulk("Cu", "fcc", a=3.6, cubic=True)
    ref.set_cell(ref.cell.array @ np.array([[1, 0.05, 0], [0, 1, 0.02], [0, 0, 1]]), scale_atoms=True)
    model.prepare(ref)
    atoms = ref.copy()
    rng = np.random.default_rng(3)
    atoms.positions += rng.normal(scale=0.1, size=atoms.positions.shape)
    atoms.positions[1] += atoms.cell[2]  # another image of the same site: minimum image
    e, f, s = model.calculate(atoms, True)
    d = atoms.positions - ref.positions
    d[1] -= atoms.cell[2]
    assert e == pytest.approx(0.5 * 2.5 * (d**2).sum(), rel=1e-12)
    s_model, s_num = _fd_check(model, atoms)
    np.testing.assert_allclose(s_model, s_num, atol=1e-8)
    # batched == sequential
    batch = model.calculate_batch([atoms, ref])
    assert batch[0][0] == e and np.array_equal(batch[0][1], f)
    assert batch[1][0] == pytest.approx(0.0, abs=1e-25)


def test_lj_auto_sigma_and_consistency():
    model = load_model("lj")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    model.prepare(atoms)
    assert model.sigma == pytest.approx(3.6 / np.sqrt(2) / 2 ** (1 / 6))
    atoms.rattle(0.05, seed=1)
    s_model, s_num = _fd_check(model, atoms)
    np.testing.assert_allclose(s_model, s_num, atol=1e-6)
    with pytest.raises(DriverError, match="no option"):
        load_model("lj", options={"eps": "1"})


def test_emt_covers_only_its_elements():
    model = load_model("emt")
    model.check_species([29, 79, 13])
    with pytest.raises(DriverError, match="Fe"):
        model.check_species([29, 26])


def test_evaluator_dedupes_padding_and_converts():
    model = load_model("emt")
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=2)
    ev = Evaluator(model, SystemSpec(numbers=atoms.numbers, pbc=atoms.pbc))
    h = units.cell_ase_to_ipi(atoms.cell.array)
    q = units.positions_ase_to_ipi(atoms.positions)
    out = ev([h, h, h], [q, q, q])
    assert len(out) == 3 and ev.timing.summary()["n_evaluations"] == 1
    ref = atoms.copy()
    ref.calc = __import__("ase.calculators.emt", fromlist=["EMT"]).EMT()
    np.testing.assert_allclose(
        out[2][1], ref.get_forces() * units.HARTREE_PER_BOHR_PER_EV_PER_ANGSTROM, rtol=1e-9, atol=1e-14
    )
    with pytest.raises(DriverError, match="atoms"):
        ev([h], [q[:-1]])


@pytest.mark.parametrize("name", ["emt", "lj", "harmonic"])
def test_cuda_is_never_a_silent_cpu_run(name):
    """--device cuda with a model that cannot use it is an error, not a CPU run under a GPU label."""
    from dynamat_driver.models import load_model

    with pytest.raises(DriverError, match="CPU only"):
        load_model(name, device="cuda")
    assert load_model(name, device="cpu").device == "cpu"


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_the_registry_lists_the_options_each_loader_reads(name):
    """``ModelInfo.options`` is what the server checks ``-o`` against before a run. Every key its family's
    source reads from ``options`` is listed (for all families, installed or not); for a model installed here,
    a name outside the list is refused by the loader, and each name in it is read (a non-number reaches the
    option's own parsing, not the unknown-option refusal)."""
    import re
    from pathlib import Path

    import dynamat_driver.models

    info = get_model_info(name)
    source = (Path(dynamat_driver.models.__file__).parent / f"{info.family}.py").read_text()
    read = set(re.findall(r"options\.get\(\s*\"(\w+)\"", source))
    read |= set(re.findall(r"parse_float_option\(\s*options,\s*\"(\w+)\"", source))
    # a family whose models differ in options (fairchem's two APIs, EMT and LJ) reads a superset
    family = {k for m in REGISTRY.values() if m.family == info.family for k in m.options}
    assert read == family and set(info.options) <= family, (read, family)
    if not is_installed(info):
        return
    with pytest.raises(DriverError, match=rf"has no option\(s\) zz_not_an_option \(known: "
                                          rf"{', '.join(info.options) or 'none'}\)"):
        load_model(name, options={"zz_not_an_option": "1"})
    for key in info.options:
        try:
            load_model(name, options={key: "not-a-number"})
        except DriverError as exc:
            assert "has no option" not in str(exc), exc
