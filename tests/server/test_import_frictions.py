"""Import frictions seen on real files (issue 22 §5), each on a file laid out as VASP or ASE writes it:
renamed VASP outputs, TEBEG = 0 or only in the INCAR, NaN labels, an unequilibrated (ideal-lattice) start."""

import shutil

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import read, write
from ase.md.langevin import Langevin
from conftest import assert_one_line_error, dynamat_cmd, emt_copper, labelled_frame

from dynamat.errors import DynamatError
from dynamat.io.importers import detect_format, import_reference
from dynamat.io.reference_h5 import read_reference, reference_attrs
from dynamat.metrics.frame_interval import MIN_TEMPERATURE_K, equipartition_check
from dynamat.scoring.core import MIN_MATCHED_FRAMES

ASE_VASP_DATA = __import__("pathlib").Path(__import__("ase").__file__).parent / "test" / "testdata" / "vasp"
needs_ase_data = pytest.mark.skipif(not ASE_VASP_DATA.is_dir(), reason="ASE's test data is not installed")
T_K = 300.0


def _cu_md(n_frames: int, step_fs: float, stride: int, seed: int) -> list:
    """Langevin MD of EMT copper (32 atoms) at 300 K, equilibrated 0.5 ps first, labelled frames."""
    atoms = emt_copper(T_K, seed)
    md = Langevin(atoms, step_fs * units.fs, temperature_K=T_K, friction=0.02 / units.fs,
                  rng=np.random.default_rng(seed + 1))
    md.run(int(500 / step_fs))
    frames = []
    for i in range(n_frames):
        if i:
            md.run(stride)
        frames.append(labelled_frame(atoms))
    return frames


@pytest.fixture(scope="module")
def short_md():
    """24 frames 4 fs apart: enough for the interval check, too short for the equilibration rule."""
    return _cu_md(24, 2.0, 2, seed=5)


@pytest.fixture(scope="module")
def long_md():
    """100 frames 20 fs apart (2 ps): long enough for the equilibration rule."""
    return _cu_md(100, 5.0, 4, seed=7)


def _v(vec, fmt="{:16.8f}") -> str:
    return "<v>" + " ".join(fmt.format(x) for x in vec) + " </v>"


def _vasprun(frames, potim_fs: float, tebeg_K: float, energy_override: dict | None = None) -> str:
    """A vasprun.xml laid out as VASP 6 writes one (the element structure of ASE's test file
    vasprun_pstress.xml, written by VASP 6.3.0): generator, incar, kpoints (Γ only), parameters with
    POTIM and TEBEG, atominfo, initialpos, one <calculation> per ionic step (its last electronic <scstep>, cell,
    fractional positions, forces eV/Å, stress in kBar with VASP's sign, energies), finalpos."""
    energy_override = energy_override or {}
    a0 = frames[0]
    n = len(a0)

    def structure(a, name=""):
        nm = f' name="{name}" ' if name else ""
        frac = a.get_scaled_positions(wrap=False)
        return "\n".join([f"  <structure{nm}>", "   <crystal>", '    <varray name="basis" >',
                          *("     " + _v(r) for r in a.cell.array), "    </varray>",
                          f'    <i name="volume">{a.get_volume():16.8f} </i>', "   </crystal>",
                          '   <varray name="positions" >', *("    " + _v(r) for r in frac), "   </varray>",
                          "  </structure>"])

    out = ['<?xml version="1.0" encoding="ISO-8859-1"?>', "<modeling>", " <generator>",
           '  <i name="program" type="string">vasp </i>', '  <i name="version" type="string">6.3.0  </i>',
           " </generator>", " <incar>", '  <i type="int" name="IBRION">     0</i>',
           f'  <i name="POTIM">{potim_fs:16.8f}</i>', f'  <i name="TEBEG">{tebeg_K:16.8f}</i>', " </incar>",
           " <kpoints>", '  <generation param="Gamma">',
           '   <v type="int" name="divisions">       1        1        1 </v>', "  </generation>",
           '  <varray name="kpointlist" >', "   " + _v([0, 0, 0]), "  </varray>", '  <varray name="weights" >',
           "   " + _v([1]), "  </varray>", " </kpoints>",
           " <parameters>", '  <separator name="ionic" >', f'   <i name="POTIM">{potim_fs:16.8f}</i>',
           "  </separator>", '  <separator name="ionic md" >', f'   <i name="TEBEG">{tebeg_K:16.8f}</i>',
           f'   <i name="TEEND">{tebeg_K:16.8f}</i>', '   <i type="int" name="NBLOCK">     1</i>',
           "  </separator>", " </parameters>", " <atominfo>", f"  <atoms>{n:8d} </atoms>",
           "  <types>       1 </types>", '  <array name="atoms" >', '   <dimension dim="1">ion</dimension>',
           '   <field type="string">element</field>', '   <field type="int">atomtype</field>', "   <set>",
           *("    <rc><c>Cu</c><c>   1</c></rc>" for _ in range(n)), "   </set>", "  </array>",
           '  <array name="atomtypes" >', '   <dimension dim="1">type</dimension>',
           '   <field type="int">atomspertype</field>', '   <field type="string">element</field>',
           "   <field>mass</field>", "   <field>valence</field>", '   <field type="string">pseudopotential</field>',
           "   <set>", f"    <rc><c>{n:4d}</c><c>Cu</c><c>     63.54600000</c><c>     11.00000000</c>"
           "<c>  PAW_PBE Cu 22Jun2005</c></rc>", "   </set>", "  </array>", " </atominfo>",
           structure(a0, "initialpos")]
    for i, a in enumerate(frames):
        e = a.get_potential_energy()
        e_txt = energy_override.get(i, f"{e:16.8f}")
        kbar = -a.get_stress(voigt=False) / (0.1 * units.GPa)  # VASP: kBar, pressure positive
        energies = [f'   <i name="e_fr_energy">{e_txt} </i>', f'   <i name="e_wo_entrp">{e_txt} </i>',
                    f'   <i name="e_0_energy">{e_txt} </i>']
        out += [" <calculation>", "  <scstep>", "   <energy>", *(" " + x for x in energies), "   </energy>",
                "  </scstep>", structure(a), '  <varray name="forces" >',
                *("   " + _v(r) for r in a.get_forces()), "  </varray>", '  <varray name="stress" >',
                *("   " + _v(r) for r in kbar), "  </varray>", "  <energy>",
                *energies, "  </energy>", " </calculation>"]
    out += [structure(frames[-1], "finalpos"), "</modeling>"]
    return "\n".join(out) + "\n"


def test_hand_built_vasprun_reads_as_ase_reads_it(short_md, tmp_path):
    """The builder's file is a vasprun ASE's own reader takes, frame for frame (else the tests below prove nothing)."""
    src = tmp_path / "vasprun.xml"
    src.write_text(_vasprun(short_md, 4.0, T_K))
    ref = read(src, index=":", format="vasp-xml")
    assert len(ref) == len(short_md)
    np.testing.assert_allclose(ref[3].positions, short_md[3].positions, atol=1e-6)
    np.testing.assert_allclose(ref[3].get_forces(), short_md[3].get_forces(), atol=1e-7)
    np.testing.assert_allclose(ref[3].get_stress(), short_md[3].get_stress(), atol=1e-8)


def _segments(src) -> list:
    """ASE's real VASP outputs hold one ionic step, and a reference needs MIN_MATCHED_FRAMES to be
    scored: the file given as that many segments (identical frames, so the interval check needs --force)."""
    return [src] * MIN_MATCHED_FRAMES


# --- VASP outputs by content, not by name -----------------------------------------------------------
@needs_ase_data
@pytest.mark.parametrize("name, data, fmt", [("Ti_vasprun.xml", "vasprun_pstress.xml", "vasp-xml"),
                                             ("run_3.xml", "vasprun_dfpt.xml", "vasp-xml"),
                                             ("Ni_md.out", "OUTCAR_example_1", "vasp-out")])
def test_renamed_vasp_outputs_are_recognised_by_content(tmp_path, name, data, fmt):
    src = tmp_path / "Ni_run" / name
    src.parent.mkdir()
    shutil.copy(ASE_VASP_DATA / data, src)
    assert detect_format(src) == fmt
    # one ionic step each: given as the segments of a reference long enough to score (no motion: forced)
    [res] = import_reference(_segments(src), tmp_path / "v.h5", temperature_K=T_K, force=True)
    assert res.formats == [fmt] * MIN_MATCHED_FRAMES and res.dt_fs == 0.5 and res.name == "Ni_run"


def test_renamed_xdatcar_and_non_vasp_files(short_md, tmp_path):
    write(tmp_path / "Cu_run2.vasp", short_md, format="vasp-xdatcar")
    assert detect_format(tmp_path / "Cu_run2.vasp") == "vasp-xdatcar"
    (tmp_path / "other.xml").write_text('<?xml version="1.0"?>\n<modeling><generator>'
                                        '<i name="program" type="string">qe</i></generator></modeling>\n')
    for p in (tmp_path / "other.xml", tmp_path / "notes.txt"):
        p.exists() or p.write_text("vasp output follows\n")
        with pytest.raises(DynamatError, match="cannot tell the format"):
            detect_format(p)


# --- the temperature: TEBEG, never an interval suggested against 0 K -------------------------------
def test_vasprun_with_tebeg_zero_asks_for_the_temperature(short_md, tmp_path):
    """TEBEG = 0.0001 (what VASP writes when none is set) once made 4 fs frames 'look 910 fs apart'."""
    run = tmp_path / "Cu_md"
    run.mkdir()
    (run / "vasprun.xml").write_text(_vasprun(short_md, 4.0, 0.0001))
    with pytest.raises(DynamatError) as err:
        import_reference([run / "vasprun.xml"], tmp_path / "v.h5")
    msg = str(err.value)
    assert "\n" not in msg and "vasprun.xml sets TEBEG = 0.0001 K" in msg and "--temperature" in msg
    assert "--dt-fs" not in msg and "apart" not in msg
    assert not (tmp_path / "v.h5").exists()
    # the INCAR beside it says what the run was
    (run / "INCAR").write_text("SYSTEM = Cu MD\nIBRION = 0\npotim = 4\ntebeg = 300 ! K\n#TEBEG = 0\n")
    [res] = import_reference([run / "vasprun.xml"], tmp_path / "v.h5")
    assert res.temperature_K == T_K and res.temperature_source == "INCAR beside it (TEBEG)" and res.check.ok
    # a TEBEG the file does set wins over the INCAR
    (run / "vasprun.xml").write_text(_vasprun(short_md, 4.0, 320.0))
    [res] = import_reference([run / "vasprun.xml"], tmp_path / "w.h5")
    assert res.temperature_K == 320.0 and res.temperature_source == "vasprun.xml (TEBEG)"


def test_no_interval_is_implied_against_a_temperature_under_1_K():
    """The check itself: against ~0 K any motion 'implies' an absurd interval, so it implies none."""
    t_frames = np.full(40, 300.0)
    for target in (None, 0.0, 0.0001):
        chk = equipartition_check(t_frames, 4.0, target)
        assert chk.implied_dt_fs is None and chk.ok is None and not chk.has_target
    chk = equipartition_check(t_frames, 4.0, MIN_TEMPERATURE_K)
    assert chk.has_target and chk.implied_dt_fs == pytest.approx(4.0 * np.sqrt(300.0 / MIN_TEMPERATURE_K))


def test_tebeg_zero_cli_is_one_line(short_md, tmp_path):
    (tmp_path / "vasprun.xml").write_text(_vasprun(short_md, 4.0, 0.0))
    res = dynamat_cmd("reference", "import", str(tmp_path / "vasprun.xml"), "--out", str(tmp_path / "c.h5"))
    assert_one_line_error(res, "TEBEG = 0 K", "--temperature")
    assert "--dt-fs" not in res.stderr


@needs_ase_data
def test_outcar_takes_tebeg_from_its_incar(tmp_path):
    """A real VASP 5.3.3 OUTCAR printing TEBEG = 0.0 (no MD temperature), with the run's INCAR beside it."""
    run = tmp_path / "Ni_run"
    run.mkdir()
    shutil.copy(ASE_VASP_DATA / "OUTCAR_example_1", run / "OUTCAR")
    with pytest.raises(DynamatError, match=r"Ni_run: OUTCAR sets TEBEG = 0 K, .*give --temperature K"):
        import_reference(_segments(run / "OUTCAR"), tmp_path / "o.h5", force=True)
    (run / "INCAR").write_text("IBRION = 0\n  Tebeg = 900.0 ; TEEND = 900\n")
    [res] = import_reference(_segments(run / "OUTCAR"), tmp_path / "o.h5", force=True)
    assert res.temperature_K == 900.0 and "INCAR" in res.temperature_source
    # an OUTCAR whose own TEBEG is set: taken from it, a commented-out tag above it is no value
    text = (ASE_VASP_DATA / "OUTCAR_example_1").read_text()
    text = text.replace(" INCAR:\n", " INCAR:\n   !TEBEG = 0\n", 1)
    text = text.replace("TEBEG  =    0.0;   TEEND  =   0.0", "TEBEG  =  600.0;   TEEND  = 600.0", 1)
    (run / "INCAR").unlink()
    (run / "OUTCAR").write_text(text)
    [res] = import_reference(_segments(run / "OUTCAR"), tmp_path / "p.h5", force=True)
    assert res.temperature_K == 600.0 and res.temperature_source == "OUTCAR (TEBEG)"


# --- NaN labels ---------------------------------------------------------------------------------------
def test_nan_energy_in_a_vasprun_is_refused(short_md, tmp_path):
    (tmp_path / "vasprun.xml").write_text(_vasprun(short_md, 4.0, T_K, energy_override={7: "NaN"}))
    with pytest.raises(DynamatError, match=r"vasprun.xml: frame 7 has a non-finite energy") as err:
        import_reference([tmp_path / "vasprun.xml"], tmp_path / "n.h5")
    assert "\n" not in str(err.value) and not (tmp_path / "n.h5").exists()


def test_nan_forces_in_an_extxyz_are_refused(short_md, tmp_path):
    frames = [a.copy() for a in short_md]
    for i, a in enumerate(frames):
        f = short_md[i].get_forces().copy()
        if i == 11:
            f[3, 1] = np.nan
        a.calc = SinglePointCalculator(a, energy=short_md[i].get_potential_energy(), forces=f)
    write(tmp_path / "cu.extxyz", frames, format="extxyz")
    res = dynamat_cmd("reference", "import", str(tmp_path / "cu.extxyz"), "--out", str(tmp_path / "n.h5"),
                      "--dt-fs", "4", "--temperature", "300")
    assert_one_line_error(res, "cu.extxyz: frame 11 has a non-finite forces")
    assert not (tmp_path / "n.h5").exists()


# --- an unequilibrated start ---------------------------------------------------------------------------
def _ideal_start(frames):
    ideal = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    ideal.calc = EMT()
    ideal.calc = SinglePointCalculator(ideal, energy=ideal.get_potential_energy(), forces=ideal.get_forces(),
                                       stress=ideal.get_stress())
    return [ideal] + frames[1:]


def test_ideal_lattice_start_is_named_with_the_frames_that_drop_it(long_md, tmp_path):
    src = tmp_path / "cu_ideal_start.extxyz"
    write(src, _ideal_start(long_md), format="extxyz")
    run = dynamat_cmd("reference", "import", str(src), "--out", str(tmp_path / "a.h5"), "--name", "Cu32_300K",
                      "--dt-fs", "20", "--temperature", "300")
    assert run.returncode == 0, run.stderr
    [warning] = [line for line in run.stderr.splitlines() if line.startswith("dynamat: warning:")]
    assert "frames 0-0 of the source" in warning and "--start-frame 1 " in warning and "--drop-ps 0.02" in warning
    # the suggested options drop exactly that frame, and then nothing is flagged
    for opt in (["--start-frame", "1"], ["--drop-ps", "0.02"]):
        again = dynamat_cmd("reference", "import", str(src), "--out", str(tmp_path / f"b{opt[0]}.h5"),
                            "--name", "Cu32_300K", "--dt-fs", "20", "--temperature", "300", *opt)
        assert again.returncode == 0 and "warning" not in again.stderr, again.stderr
        t = read_reference(tmp_path / f"b{opt[0]}.h5", "Cu32_300K")
        np.testing.assert_allclose(t.positions, [a.positions for a in long_md[1:]], atol=1e-6)
        assert reference_attrs(tmp_path / f"b{opt[0]}.h5", "Cu32_300K")["source_first_frame"] == 1


def test_equilibrated_start_gives_no_warning(long_md, tmp_path):
    src = tmp_path / "cu.extxyz"
    write(src, long_md, format="extxyz")
    [res] = import_reference([src], tmp_path / "e.h5", name="Cu32_300K", dt_fs=20.0, temperature_K=T_K)
    assert res.warnings == [] and res.first_frame == 0 and res.n_frames == len(long_md)
    [res] = import_reference([tmp_path / "cu.extxyz"], tmp_path / "f.h5", name="Cu32_300K", dt_fs=20.0,
                             temperature_K=T_K, start_frame=0)
    assert res.warnings == []
    with pytest.raises(DynamatError, match="not both"):
        import_reference([src], tmp_path / "g.h5", dt_fs=20.0, temperature_K=T_K, start_frame=1, drop_ps=0.1)
    with pytest.raises(DynamatError, match="holds no frames after the first 100"):
        import_reference([src], tmp_path / "g.h5", dt_fs=20.0, temperature_K=T_K, start_frame=100)


def test_a_long_window_is_read_at_a_stride_and_still_finds_the_start(long_md, monkeypatch):
    """Bounded memory: past MAX_FRAME_ATOMS the window is read every k-th frame; the cut it names is
    then the first equilibrated multiple of k, never earlier than the true one."""
    from dynamat.metrics import equilibration

    frames = _ideal_start(long_md)
    pos, cells = np.array([a.positions for a in frames]), np.array([a.cell.array for a in frames])
    assert equilibration.unequilibrated_start(pos, cells, [True] * 3, 20.0) == 1
    monkeypatch.setattr(equilibration, "MAX_FRAME_ATOMS", 32 * 25)  # 100 frames → every 4th
    assert equilibration.unequilibrated_start(pos, cells, [True] * 3, 20.0) == 4
    assert equilibration.unequilibrated_start(pos[1:], cells[1:], [True] * 3, 20.0) == 0
    assert equilibration.unequilibrated_start(pos[:40], cells[:40], [True] * 3, 20.0) is None  # 0.4 ps reference
