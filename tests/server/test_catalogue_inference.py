"""Every system of a file in the published DynaMat v1.0 layout gets the right protocol, class and dims,
with each value's source; the inference rules on their own; overrides; label-free systems."""

import json

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, diamond100, fcc111, molecule
from published_layout import PUBLISHED, write_published_file

from dynamat.catalogue import (
    VACUUM_GAP_A,
    Geometry,
    get_system,
    infer_class,
    infer_dims,
    infer_protocol,
    system_from_reference,
    temperature_from_name,
    vacuum_gaps_A,
    with_protocol,
)
from dynamat.errors import DynamatError, ReferenceFormatError
from dynamat.io.reference_h5 import (
    has_energy_forces,
    read_reference,
    reference_labels,
    require_labels,
)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    return write_published_file(tmp_path_factory.mktemp("pub") / "dynamat_v1.h5")


def test_file_has_the_published_layout(published):
    with h5py.File(published) as f:
        assert sorted(f) == sorted(PUBLISHED)
        for name, spec in PUBLISHED.items():
            g = f[name]
            assert set(g.attrs) == {"schema", "dt_fs", "temperature_kelvin"}  # no class, no dims
            assert "energy" not in g and "forces" not in g
            assert ("stress" in g) == spec.stress
            m, n = g["positions"].shape[:2]
            assert g["cell"].shape == (m, 3, 3) and g["atomic_numbers"].shape == (n,)
            assert g["positions"].compression == "gzip" and g["positions"].chunks[0] == min(m, 512)


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_each_published_system(published, name):
    spec = PUBLISHED[name]
    s = system_from_reference(published, name)
    p = s.protocol
    assert (s.system_class, s.dims, p.name) == (spec.system_class, spec.dims, spec.protocol)
    assert (p.timestep_fs, p.tau_fs, p.stride) == (spec.timestep_fs, spec.tau_fs, spec.stride)
    assert s.temperature_K == spec.temperature_K
    assert s.in_catalogue == spec.in_catalogue
    # the file's saved-frame interval is kept apart from the MLIP's time step
    assert s.reference_dt_fs == spec.dt_fs
    d = s.as_dict()
    json.dumps(d)
    assert d["protocol"]["thermostat"] == p.ipi_thermostat
    assert d["pressure_components"] == (["xx", "yy"] if spec.dims == 2 else ["xx", "yy", "zz"])
    for key in ("class", "dims", "temperature_K", "protocol", "timestep_fs", "tau_fs", "thermostat", "stride"):
        assert d["sources"][key], key
    if not spec.in_catalogue:
        assert d["sources"]["class"].startswith("inferred from")
        assert d["sources"]["dims"].startswith("inferred from geometry")
    # the inference alone, ignoring the catalogue, agrees with it
    first = read_reference(published, name, frames=slice(0, 1))
    assert infer_class(name, first)[0] == spec.system_class
    assert infer_protocol(name, spec.system_class)[0] == spec.protocol
    assert infer_dims(first)[0] == spec.dims


def test_the_2d_slab_is_found_by_its_vacuum(published):
    s = system_from_reference(published, "TiSe2_400K")
    assert s.dims == 2 and "vacuum gap" in s.source("dims") and "along c" in s.source("dims")
    assert s.source("class") == "catalogue"
    gaps = vacuum_gaps_A(read_reference(published, "TiSe2_400K", frames=slice(0, 1)))
    assert gaps[2] > 14 and gaps[:2].max() < 2


def test_pentacene_gets_500_fs_not_the_class_default(published):
    s = system_from_reference(published, "pentacene_300K")
    assert s.protocol.tau_fs == 500.0 and "pentacene" in s.source("protocol")
    # even when a file names the class, the molecule decides
    s2 = get_system("picene_290K", {"system_class": "molecular crystal", "temperature_kelvin": 290.0})
    assert s2.protocol.name == "langevin_500fs" and s2.source("class") == "reference file (system_class)"
    for mol in ("naphthalene", "tetracene", "anthracene"):
        assert get_system(f"{mol}_250K").protocol.tau_fs == 10.0


@pytest.mark.parametrize("atoms, name, expected", [
    (bulk("Si", "diamond", a=5.43, cubic=True), "Si_1000K", "semiconductor"),
    (bulk("Ge", "diamond", a=5.66, cubic=True), "Ge_600K", "semiconductor"),
    (bulk("GaAs", "zincblende", a=5.65, cubic=True), "GaAs_600K", "semiconductor"),
    (bulk("MgO", "rocksalt", a=4.21, cubic=True), "MgO_1000K", "oxide"),
    (bulk("NaCl", "rocksalt", a=5.64, cubic=True), "NaCl_300K", "other"),
    (bulk("Au", "fcc", a=4.08, cubic=True), "Au_300K", "pure metal"),
    (bulk("Al", "fcc", a=4.05, cubic=True), "Al_900K", "pure metal"),
    (molecule("H2O"), "box_300K", "liquid"),
    (bulk("Cu", "fcc", a=3.6, cubic=True), "liquid-Cu_1600K", "liquid"),
])
def test_class_rules(atoms, name, expected):
    atoms = atoms.copy()
    if not atoms.pbc.any():
        atoms.cell = np.eye(3) * 3.0
        atoms.pbc = True
    s = get_system(name, {"temperature_kelvin": 500.0}, atoms)
    assert s.system_class == expected, s.source("class")
    assert s.protocol.name == "nhc"
    assert s.source("class").startswith("inferred from")


def test_si_is_never_a_pure_metal():
    s = get_system("Si64_1000K", {"temperature_kelvin": 1000.0}, bulk("Si", "diamond", a=5.43, cubic=True).repeat(2))
    assert s.system_class == "semiconductor" and s.dims == 3 and s.protocol.timestep_fs == 0.25


def test_dims_rules():
    slab = fcc111("Cu", size=(2, 2, 3), vacuum=7.0)  # pbc F along z
    assert infer_dims(slab)[0] == 2 and "not periodic" in infer_dims(slab)[1]
    slab.pbc = True
    dims, why = infer_dims(slab)
    assert dims == 2 and "vacuum gap" in why
    thin = diamond100("C", size=(2, 2, 4), vacuum=0.5 * VACUUM_GAP_A - 0.3)
    thin.pbc = True
    assert infer_dims(thin)[0] == 3  # a gap below the threshold is not vacuum
    x_gap = slab.copy()
    x_gap.positions = x_gap.positions[:, [2, 1, 0]]
    x_gap.cell = x_gap.cell.array[[2, 1, 0]][:, [2, 1, 0]]
    dims, why = infer_dims(x_gap)
    assert dims == 2 and "along a" in why and "should lie along z" in why
    wire = Atoms("Cu2", positions=[(0, 0, 0), (0, 0, 1.3)], cell=(15, 15, 2.6), pbc=True)
    with pytest.raises(DynamatError, match="wire or cluster"):
        infer_dims(wire)
    # skewed cell: the gap is measured perpendicular to the lattice planes
    g = Geometry(np.array([29]), np.zeros((1, 3)), np.array([[3, 0, 0], [1.5, 2.6, 0], [2.0, 0, 20.0]]), np.ones(3, bool))
    assert vacuum_gaps_A(g)[2] == pytest.approx(20.0)


def test_temperature_sources():
    assert temperature_from_name("bulkCu_300K-Artrith_VASP") == 300.0
    assert temperature_from_name("bulkAg_600K_Kapil") == 600.0
    assert temperature_from_name("CsSnI3_500K_Ivor_VASP") == 500.0
    assert temperature_from_name("Si_1000.5K") == 1000.5
    assert temperature_from_name("K3Sb") is None and temperature_from_name("MoS2_ML") is None
    cu = bulk("Cu", cubic=True)
    assert get_system("Cu_300K", {"temperature_kelvin": 310.0}, cu).temperature_K == 310.0
    s = get_system("Cu_300K", {}, cu)
    assert s.temperature_K == 300.0 and s.source("temperature_K") == "inferred from the name"
    with pytest.raises(DynamatError, match="temperature"):
        get_system("Cu_hot", {}, cu)


def test_overrides_and_their_sources(published):
    s = system_from_reference(published, "bulkCu_300K-Artrith_VASP", system_class="alloy", dims=2,
                              timestep_fs=1.0, tau_fs=100.0, thermostat="langevin", start_frame=7)
    assert (s.system_class, s.dims, s.start_frame) == ("alloy", 2, 7)
    assert (s.protocol.timestep_fs, s.protocol.tau_fs, s.protocol.ipi_thermostat) == (1.0, 100.0, "langevin")
    assert s.protocol.steps == 20000 and s.protocol.stride == 10
    src = s.provenance()
    assert src["class"] == "command line (--class)" and src["dims"] == "command line (--dims)"
    assert src["timestep_fs"] == "command line (--timestep-fs)" and src["start_frame"] == "command line (--start-frame)"
    assert src["stride"].startswith("protocol nhc")
    m = s.md_settings(steps=10)
    assert (m.timestep_fs, m.tau_fs, m.thermostat, m.temperature_K) == (1.0, 100.0, "langevin", 300.0)
    # --protocol, then a knob on top of it
    s = get_system("anthracene_293K", overrides={"protocol": "relaxed_nhc", "tau_fs": 30.0})
    assert s.protocol.name == "relaxed_nhc" and s.protocol.relax and s.protocol.tau_fs == 30.0
    assert s.source("protocol") == "command line (--protocol)"
    assert with_protocol(get_system("anthracene_293K"), "nhc").source("protocol") == "command line (--protocol)"
    for bad, match in (({"dims": 1}, "--dims"), ({"system_class": "plasma"}, "unknown class"),
                       ({"timestep_fs": -1}, "--timestep-fs"), ({"thermostat": "nose"}, "unknown thermostat"),
                       ({"protocol": "nope"}, "unknown protocol"), ({"start_frame": -2}, "--start-frame")):
        with pytest.raises(DynamatError, match=match):
            get_system("bulkCu_300K-Artrith_VASP", **bad)


def test_catalogue_wins_and_contradictions_fail():
    cu_slab = fcc111("Cu", size=(2, 2, 3), vacuum=8.0)
    s = get_system("bulkCu_300K-Artrith_VASP", {"temperature_kelvin": 300.0, "system_class": "alloy"}, cu_slab)
    assert (s.system_class, s.dims) == ("pure metal", 3) and s.source("dims") == "catalogue"
    with pytest.raises(DynamatError, match="says 310"):
        get_system("bulkCu_300K-Artrith_VASP", {"temperature_kelvin": 310.0})
    with pytest.raises(DynamatError, match="unknown system"):
        get_system("nonsense")


def test_label_free_systems(published, tmp_path):
    assert reference_labels(published, "TiSe2_400K") == {"energy": False, "forces": False, "stress": True}
    assert reference_labels(published, "pentacene_300K")["stress"] is False
    assert not has_energy_forces(published, "TiSe2_400K")
    with pytest.raises(DynamatError, match="label-free: the file holds no energies or forces") as err:
        require_labels(published, "TiSe2_400K")
    assert "\n" not in str(err.value)
    t = read_reference(published, "bulkCu_300K-Artrith_VASP")
    assert t.energies is None and t.forces is None and t.stress.shape == (t.n_frames, 6)
    assert t.dt_fs == 2.0 and t.temperature_K == 300.0 and t.cells.shape == (t.n_frames, 3, 3)


def test_schema_fails_closed(published, tmp_path):
    path = tmp_path / "v2.h5"
    path.write_bytes(published.read_bytes())
    with h5py.File(path, "a") as f:
        f["TiSe2_400K"].attrs["schema"] = 2
    with pytest.raises(ReferenceFormatError, match="schema 2"):
        read_reference(path, "TiSe2_400K")


# ------------------------------------------------------------------------------- the command line
def _dynamat(*args, cwd=None, timeout=600):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "dynamat"
    return subprocess.run([str(exe), *map(str, args)], check=False, capture_output=True, text=True, cwd=cwd, timeout=timeout)


def test_systems_command_lists_the_public_file(published):
    r = _dynamat("systems", "--reference", published, "--json")
    assert r.returncode == 0, r.stderr
    by = {d["name"]: d for d in json.loads(r.stdout)}
    assert sorted(by) == sorted(PUBLISHED)
    for name, spec in PUBLISHED.items():
        d = by[name]
        p = d["protocol"]
        assert (d["class"], d["dims"], d["temperature_K"]) == (spec.system_class, spec.dims, spec.temperature_K)
        assert (p["timestep_fs"], p["tau_fs"], p["stride"], p["name"]) == (spec.timestep_fs, spec.tau_fs, spec.stride,
                                                                           spec.protocol)
        assert p["thermostat"] == ("langevin" if spec.protocol.startswith("langevin") else "svr")
        assert set(d["sources"]) >= {"class", "dims", "temperature_K", "protocol", "timestep_fs", "tau_fs",
                                     "thermostat", "stride"}
        assert d["labels"]["energy"] is False and d["reference_dt_fs"] == spec.dt_fs
    assert by["pentacene_300K"]["sources"]["protocol"].startswith("inferred from the name")
    text = _dynamat("systems", "--reference", published)
    assert text.returncode == 0
    assert "vacuum gap of" in text.stdout and "label-free" in text.stdout and "inferred from composition" in text.stdout
    plain = _dynamat("systems")
    assert plain.returncode == 0 and "bulkCu_300K-demo_EMT" in plain.stdout


def test_run_overrides_reach_run_json_and_two_systems_score(published, tmp_path):
    """bulkCu (pure metal) with every override, bulkCuAu (alloy) as inferred: EMT through i-PI, then scored."""
    r = _dynamat("run", "--model", "emt", "--system", "bulkCu_300K-Artrith_VASP", "--reference", published,
                 "--steps", 40, "--out", tmp_path, "--class", "alloy", "--dims", 2, "--timestep-fs", 1.0,
                 "--tau-fs", 50, "--thermostat", "langevin", "--start-frame", 3)
    assert r.returncode == 0, r.stderr[-2000:]
    run_dir = tmp_path / "emt" / "bulkCu_300K-Artrith_VASP"
    rec = json.loads((run_dir / "run.json").read_text())
    info = rec["system_info"]
    assert (info["class"], info["dims"], info["start_frame"]) == ("alloy", 2, 3)
    assert (info["protocol"]["timestep_fs"], info["protocol"]["tau_fs"], info["protocol"]["thermostat"]) == (1.0, 50.0, "langevin")
    assert info["sources"]["tau_fs"] == "command line (--tau-fs)" and info["sources"]["stride"].startswith("protocol nhc")
    assert info["sources"]["temperature_K"] == "catalogue" and info["reference_dt_fs"] == 2.0
    from ase.io import read

    init = read(run_dir / "init.xyz")
    np.testing.assert_allclose(init.positions, read_reference(published, "bulkCu_300K-Artrith_VASP",
                                                              frames=slice(3, 4)).positions[0], atol=1e-5)
    for name in ("bulkCu_300K-Artrith_VASP", "bulkCuAu_500K-Artrith_VASP"):
        r = _dynamat("run", "--model", "emt", "--system", name, "--reference", published, "--steps", 200,
                     "--out", tmp_path / "plain")
        assert r.returncode == 0, r.stderr[-2000:]
        info = json.loads((tmp_path / "plain" / "emt" / name / "run.json").read_text())["system_info"]
        assert info["protocol"]["timestep_fs"] == 0.25 and info["dims"] == 3
        out = tmp_path / f"{name}.json"
        r = _dynamat("score", "--system", name, "--reference", published, "--run", tmp_path / "plain" / "emt" / name,
                     "--json", out)
        assert r.returncode == 0, r.stderr[-2000:]
        res = json.loads(out.read_text())
        assert res["rdf_error_pct"] > 0 and "pressure_mae_GPa" in res
        assert res.get("energy_rmse_eV_per_atom") is None  # label-free: never a zero


def test_singlepoint_on_a_label_free_system_says_so_in_one_line(published):
    r = _dynamat("singlepoint", "--model", "emt", "--system", "bulkCu_300K-Artrith_VASP", "--reference", published)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in r.stderr
    assert "energies" in lines[0] or "energy" in lines[0]
