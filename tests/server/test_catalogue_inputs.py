"""The system catalogue and the i-PI inputs written from it follow the paper's protocols."""

import xml.etree.ElementTree as ET

import pytest
from ase.build import bulk

from dynamat.catalogue import get_system, system_names
from dynamat.errors import DynamatError
from dynamat.engines.ipi_input import MDSettings, render_input, species_formula, write_inputs


def test_paper_protocols():
    metal = get_system("bulkCu_300K-Artrith_VASP")
    p = metal.protocol
    assert (p.ipi_thermostat, p.timestep_fs, p.tau_fs, p.stride, p.time_ps) == ("svr", 0.25, 254.5, 10, 20.0)
    assert p.steps == 80000
    mol = get_system("anthracene_293K").protocol
    assert (mol.ipi_thermostat, mol.timestep_fs, mol.tau_fs, mol.stride) == ("langevin", 0.5, 10.0, 1)
    assert "bulkCu3Au_500K-demo_EMT" in system_names()


def test_unknown_systems():
    with pytest.raises(DynamatError, match="unknown system"):
        get_system("nonsense_1K")
    s = get_system("pentacene_300K", {"system_class": "molecular crystal", "temperature_kelvin": 300.0})
    assert s.protocol.ipi_thermostat == "langevin" and not s.in_catalogue
    assert s.protocol.tau_fs == 500.0  # pentacene and picene: tau 500 fs (paper Methods IV.A.2)
    with pytest.raises(DynamatError, match="unknown class"):
        get_system("x", {"system_class": "plasma", "temperature_kelvin": 1e4})
    with pytest.raises(DynamatError, match="says 310"):
        get_system("bulkCu_300K-Artrith_VASP", {"temperature_kelvin": 310.0})


def test_rendered_input_matches_protocol(tmp_path):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms[3].symbol = "Au"
    settings = get_system("bulkCu3Au_500K-demo_EMT").md_settings(steps=123, seed=7)
    xml = write_inputs(atoms, settings, tmp_path, batch_size=4)
    root = ET.parse(xml).getroot()
    assert root.find("total_steps").text.strip() == "123"
    assert root.find("prng/seed").text.strip() == "7"
    dyn = root.find("system/motion/dynamics")
    assert dyn.find("timestep").text.strip() == "0.25" and dyn.find("timestep").get("units") == "femtosecond"
    assert dyn.find("thermostat").get("mode") == "svr"
    assert float(dyn.find("thermostat/tau").text) == 254.5
    assert float(root.find("system/ensemble/temperature").text) == 500.0
    assert root.find("output/trajectory").get("stride") == "10"
    assert root.get("safe_stride") == "100"  # a multiple of the stride: restarts resume on a saved frame
    assert root.find("output/checkpoint").get("stride") == "1000"
    ff = root.find("ffsocket")
    assert ff.get("mode") == "unix" and ff.find("address").text.strip() == "dynamat"
    assert ff.find("batch_size").text.strip() == "4"
    formula = species_formula(atoms)
    assert formula == "Cu3AuCu28" and f"species: {formula}" in ff.find("parameters").text
    assert (tmp_path / "init.xyz").exists()


def test_bad_thermostat_and_mode():
    s = MDSettings("nose-hoover", 1.0, 10.0, 1, 10, 300.0)
    with pytest.raises(ValueError, match="no i-PI template"):
        render_input(s, init_file="x.xyz", species="Cu")
    with pytest.raises(ValueError, match="socket mode"):
        render_input(MDSettings("svr", 1.0, 10.0, 1, 10, 300.0), init_file="x.xyz", species="Cu", mode="udp")
