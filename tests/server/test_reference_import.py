"""A user's ab-initio MD becomes a reference: round trips per format through ASE's own writers, the
equipartition check of the frame interval, labels, isolated-atom energies, the raw MBD layout."""

import json

import h5py
import numpy as np
import pytest
from ase import units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.io.trajectory import Trajectory as AseTrajectory
from ase.md.langevin import Langevin

from conftest import assert_one_line_error, dynamat_cmd, emt_copper, labelled_frame

from dynamat.catalogue import system_from_reference
from dynamat.errors import DynamatError
from dynamat.io.importers import check_frame_interval, detect_format, import_reference
from dynamat.io.reference_h5 import read_reference, reference_attrs, require_labels
from dynamat.trajectory import MIN_MATCHED_FRAMES

T_K = 300.0
MD_DT_FS = 2.0
STRIDE = 2
FRAME_DT_FS = MD_DT_FS * STRIDE  # the known interval between saved frames
N_FRAMES = 160


@pytest.fixture(scope="module")
def md_frames():
    """ASE Langevin MD of EMT copper (32 atoms) at 300 K, a frame every 2 steps of 2 fs."""
    atoms = emt_copper(T_K, seed=3)
    md = Langevin(atoms, MD_DT_FS * units.fs, temperature_K=T_K, friction=0.01 / units.fs,
                  rng=np.random.default_rng(4))
    md.run(300)
    frames = []
    for i in range(N_FRAMES):
        if i:
            md.run(STRIDE)
        n = len(atoms)
        f = labelled_frame(atoms)
        f.info["true_T_K"] = atoms.get_temperature() * 3 * n / (3 * n - 3)  # 3N - 3 dof, as the check
        f.info["md_step"] = i * STRIDE
        frames.append(f)
    return frames


def _expected(frames):
    return dict(
        positions=np.array([a.positions for a in frames]),
        cells=np.array([a.cell.array for a in frames]),
        energies=np.array([a.get_potential_energy() for a in frames]),
        forces=np.array([a.get_forces() for a in frames]),
        stress=np.array([a.get_stress() for a in frames]),
    )


def _assert_same(t, exp, labels=("energies", "forces", "stress"), atol=1e-6):
    np.testing.assert_allclose(t.positions, exp["positions"], atol=atol)
    np.testing.assert_allclose(t.cells, exp["cells"], atol=atol)
    for k in labels:
        np.testing.assert_allclose(getattr(t, k), exp[k], atol=atol, err_msg=k)


def test_extxyz_round_trip_and_scores_zero(md_frames, tmp_path):
    src = tmp_path / "cu_md.extxyz"
    write(src, md_frames, format="extxyz")
    out = tmp_path / "mine.h5"
    [res] = import_reference([src], out, name="Cu32_300K", dt_fs=FRAME_DT_FS, temperature_K=T_K)
    assert (res.n_frames, res.n_atoms, res.labels) == (N_FRAMES, 32, {"energy": True, "forces": True, "stress": True})
    assert res.check.ok and not res.label_free
    # the finite-difference estimate, filter-corrected, equals the MD's own kinetic temperature
    true_T = np.mean([a.info["true_T_K"] for a in md_frames])
    assert res.check.temperature_K == pytest.approx(true_T, rel=0.02)
    assert res.check.fd_correction > 1.0
    t = read_reference(out, "Cu32_300K")
    _assert_same(t, _expected(md_frames))
    assert t.dt_fs == FRAME_DT_FS and t.temperature_K == T_K
    np.testing.assert_array_equal(t.steps, np.arange(N_FRAMES) * STRIDE)
    attrs = reference_attrs(out, "Cu32_300K")
    assert attrs["schema"] == 1 and attrs["dt_fs_source"] == "argument (--dt-fs)"
    require_labels(out, "Cu32_300K")  # labelled: no error
    with h5py.File(out) as f:  # the published layout: per-frame cells, gzip, chunks of <= 512 frames
        g = f["Cu32_300K"]
        assert g["cell"].shape == (N_FRAMES, 3, 3) and g["positions"].compression == "gzip"
        assert g["positions"].chunks[0] == N_FRAMES
    # scoring the same trajectory against its import gives zero error
    from dynamat.io import read_extxyz
    from dynamat.scoring import score_md

    res = score_md(t, read_extxyz(src, FRAME_DT_FS), n_boot=0)
    for key in ("rdf_error_pct", "pressure_mae_GPa", "vdos_error_pct"):
        assert res[key] == pytest.approx(0.0, abs=1e-6), key
    # the catalogue takes it from there: a pure metal, 3D, inorganic protocol, the file's interval
    s = system_from_reference(out, "Cu32_300K")
    assert (s.system_class, s.dims, s.protocol.timestep_fs, s.reference_dt_fs) == ("pure metal", 3, 0.25, FRAME_DT_FS)


def test_wrong_interval_is_refused(md_frames, tmp_path):
    src = tmp_path / "cu_md.extxyz"
    write(src, md_frames, format="extxyz")
    out = tmp_path / "mine.h5"
    for wrong in (5 * FRAME_DT_FS, FRAME_DT_FS / 5):
        with pytest.raises(DynamatError, match=r"look 4(\.\d+)? fs apart") as err:
            import_reference([src], out, name="Cu32_300K", dt_fs=wrong, temperature_K=T_K)
        assert "\n" not in str(err.value) and "--force" in str(err.value)
    assert not out.exists()  # nothing half-written
    [res] = import_reference([src], out, name="Cu32_300K", dt_fs=5 * FRAME_DT_FS, temperature_K=T_K, force=True)
    assert res.forced and read_reference(out, "Cu32_300K").dt_fs == 5 * FRAME_DT_FS
    # no interval anywhere: one line, with what the frames' own velocities (ASE writes momenta) suggest
    with pytest.raises(DynamatError, match=r"give --dt-fs \(the file's own velocities \(\d+ K\) suggest 4"):
        import_reference([src], tmp_path / "x.h5", name="Cu32_300K", temperature_K=T_K)
    bare = tmp_path / "bare.extxyz"  # and without them, what equipartition at the temperature suggests
    write(bare, [labelled_frame(f, momenta=False) for f in md_frames], format="extxyz")
    with pytest.raises(DynamatError, match=r"give --dt-fs \(equipartition at 300 K suggests 4"):
        import_reference([bare], tmp_path / "x.h5", name="Cu32_300K", temperature_K=T_K)
    with pytest.raises(DynamatError, match="already holds"):
        import_reference([src], out, name="Cu32_300K", dt_fs=FRAME_DT_FS, temperature_K=T_K)


def test_equipartition_corrects_the_finite_difference_filter():
    """Harmonic oscillators near the Nyquist frequency: raw FD temperature reads low, corrected does not."""
    rng = np.random.default_rng(0)
    n, m, dt = 64, 4000, 1.0
    nu = rng.uniform(40, 120, size=(n, 3)) * 1e-3  # 1/fs: 2πν dt up to 0.75
    phi = rng.uniform(0, 2 * np.pi, size=(n, 3))
    mass = 12.0
    kT = units.kB * T_K
    conv = units._amu * 1e-20 / 1e-30 / units._e
    amp = np.sqrt(2 * kT / (mass * (2 * np.pi * nu) ** 2 * conv))
    t = np.arange(m)[:, None, None] * dt
    pos = 10 * rng.random((n, 3)) + amp * np.sin(2 * np.pi * nu * t + phi)
    chk = check_frame_interval(pos, np.eye(3) * 30, [True] * 3, [6] * n, dt, T_K)
    assert chk.raw_K < 0.93 * T_K  # the filter's loss (about 9 % here)
    assert chk.temperature_K == pytest.approx(T_K, rel=0.03) and chk.ok
    assert not check_frame_interval(pos, np.eye(3) * 30, [True] * 3, [6] * n, 2 * dt, T_K).ok


def test_ase_traj_round_trip(md_frames, tmp_path):
    src = tmp_path / "md.traj"
    with AseTrajectory(src, "w") as tr:
        for a in md_frames:
            tr.write(a)
    [res] = import_reference([src], tmp_path / "r.h5", dt_fs=FRAME_DT_FS, temperature_K=T_K)
    assert res.name == "md" and res.labels == {"energy": True, "forces": True, "stress": True}
    _assert_same(read_reference(tmp_path / "r.h5", "md"), _expected(md_frames), atol=1e-10)


def test_vasp_xdatcar_written_by_ase(md_frames, tmp_path):
    run = tmp_path / "Cu32_300K"
    run.mkdir()
    write(run / "XDATCAR", md_frames, format="vasp-xdatcar")
    (run / "INCAR").write_text(f"IBRION = 0\nPOTIM = {FRAME_DT_FS}\nTEBEG = {T_K}\nNBLOCK = 1\n")
    assert detect_format(run / "XDATCAR") == "vasp-xdatcar"
    [res] = import_reference([run / "XDATCAR"], tmp_path / "v.h5")
    assert res.name == "Cu32_300K" and res.dt_fs == FRAME_DT_FS and res.temperature_K == T_K
    assert "POTIM" in res.dt_source and "TEBEG" in res.temperature_source
    assert res.labels == {"energy": False, "forces": False, "stress": False} and res.label_free
    t = read_reference(tmp_path / "v.h5", "Cu32_300K")
    # the same numbers as ASE's own XDATCAR reader (which keeps every frame in memory)
    from ase.io import read

    ase_frames = read(run / "XDATCAR", index=":", format="vasp-xdatcar")
    np.testing.assert_allclose(t.positions, [a.positions for a in ase_frames], atol=1e-12)
    np.testing.assert_allclose(t.cells, [a.cell.array for a in ase_frames], atol=1e-12)
    _assert_same(t, _expected(md_frames), labels=(), atol=1e-6)
    with pytest.raises(DynamatError, match="label-free"):
        require_labels(tmp_path / "v.h5", "Cu32_300K")


def test_lammps_dump(md_frames, tmp_path):
    src = tmp_path / "dump.lammpstrj"
    lines = []
    for i, a in enumerate(md_frames):
        lo, hi = np.zeros(3), np.diag(a.cell.array)
        lines += ["ITEM: TIMESTEP", str(i * STRIDE), "ITEM: NUMBER OF ATOMS", str(len(a)),
                  "ITEM: BOX BOUNDS pp pp pp"] + [f"{lo[k]:.10f} {hi[k]:.10f}" for k in range(3)]
        lines.append("ITEM: ATOMS id element x y z fx fy fz")
        f = a.get_forces()
        lines += [f"{j + 1} Cu {p[0]:.10f} {p[1]:.10f} {p[2]:.10f} {f[j, 0]:.10f} {f[j, 1]:.10f} {f[j, 2]:.10f}"
                  for j, p in enumerate(a.positions)]
    src.write_text("\n".join(lines) + "\n")
    [res] = import_reference([src], tmp_path / "l.h5", name="Cu_lmp_300K", dt_fs=FRAME_DT_FS)
    assert res.temperature_K == T_K and res.temperature_source == "the name" and res.labels["forces"]
    # a dump holds no total energy (ASE's reader says 0.0): no energy label, so no energy RMSE against zeros
    assert not res.labels.get("energy")
    with h5py.File(tmp_path / "l.h5") as f:
        assert "energy" not in f["Cu_lmp_300K"]
    t = read_reference(tmp_path / "l.h5", "Cu_lmp_300K")
    _assert_same(t, _expected(md_frames), labels=("forces",), atol=1e-8)
    np.testing.assert_array_equal(t.steps, np.arange(N_FRAMES) * STRIDE)
    bad = tmp_path / "types.dump"
    bad.write_text(src.read_text().replace("id element x", "id type x").replace(" Cu ", " 1 "))
    with pytest.raises(DynamatError, match="no 'element' column"):
        import_reference([bad], tmp_path / "b.h5", dt_fs=FRAME_DT_FS, temperature_K=T_K)


def test_ipi_run_folder(md_frames, tmp_path):
    run = tmp_path / "ipi_run"
    run.mkdir()
    exp = _expected(md_frames)
    pos_lines, prop_lines = [], ["# column   1     --> step : x", "# column   2     --> time{femtosecond} : x",
                                 "# column   3     --> potential{electronvolt} : x",
                                 "# cols.  4-9     --> virial_md{ev/ang3} : x"]
    for i, a in enumerate(md_frames):
        lat = " ".join(f"{x:.10f}" for x in a.cell.array.reshape(-1))
        pos_lines += [str(len(a)), f'Lattice="{lat}" Properties=species:S:1:pos:R:3 Step: {i * STRIDE} Bead: 0']
        pos_lines += [f"Cu {p[0]:.10f} {p[1]:.10f} {p[2]:.10f}" for p in a.positions]
        s = exp["stress"][i]
        vir = -s[[0, 1, 2, 5, 4, 3]]  # i-PI order xx yy zz xy xz yz, virial = -stress
        prop_lines.append(f"{i * STRIDE} {i * FRAME_DT_FS} {exp['energies'][i]:.10f} " + " ".join(f"{x:.12e}" for x in vir))
    (run / "simulation.pos_0.extxyz").write_text("\n".join(pos_lines) + "\n")
    (run / "simulation.out").write_text("\n".join(prop_lines) + "\n")
    (run / "input.xml").write_text(f"<simulation><system><ensemble><temperature units='kelvin'> {T_K} "
                                   "</temperature></ensemble></system></simulation>")
    [res] = import_reference([run], tmp_path / "i.h5", name="Cu_ipi_300K")
    assert res.dt_fs == pytest.approx(FRAME_DT_FS) and "time column" in res.dt_source
    assert res.temperature_K == T_K and "input.xml" in res.temperature_source
    assert res.labels == {"energy": True, "forces": False, "stress": True}
    _assert_same(read_reference(tmp_path / "i.h5", "Cu_ipi_300K"), exp, labels=("energies", "stress"), atol=1e-8)


def test_matbench_raw_layout_and_isolated_energies(md_frames, tmp_path):
    root = tmp_path / "raw"
    for name in ("bulkCu_300K-mine_VASP", "bulkCu_300K-copy"):
        (root / name).mkdir(parents=True)
        write(root / name / "traj.extxyz", md_frames, format="extxyz")
    res = import_reference([root], tmp_path / "m.h5", dt_fs=FRAME_DT_FS, isolated_energies={"Cu": -0.25})
    assert sorted(r.name for r in res) == ["bulkCu_300K-copy", "bulkCu_300K-mine_VASP"]
    assert all(r.temperature_source == "the name" for r in res)
    attrs = reference_attrs(tmp_path / "m.h5", "bulkCu_300K-copy")
    assert json.loads(attrs["isolated_atom_energies_eV"]) == {"Cu": -0.25}
    [one] = import_reference([root / "bulkCu_300K-copy"], tmp_path / "one.h5", dt_fs=FRAME_DT_FS)
    assert one.name == "bulkCu_300K-copy"
    with pytest.raises(DynamatError, match="lack Cu"):
        import_reference([root / "bulkCu_300K-copy"], tmp_path / "z.h5", dt_fs=FRAME_DT_FS, isolated_energies={"Au": 1.0})


def test_a_folder_whose_later_system_fails_leaves_out_untouched(md_frames, tmp_path):
    """All or nothing: a folder's systems all go in, or --out stays byte for byte what it was."""
    import hashlib

    from dynamat.io.reference_h5 import list_systems

    root = tmp_path / "raw"
    broken = [a.copy() for a in md_frames]  # b, imported after a: a NaN force (a failed SCF step) in frame 10
    for k, a in enumerate(broken):
        f = md_frames[k].get_forces().copy()
        f[3, 1] = np.nan if k == 10 else f[3, 1]
        a.calc = SinglePointCalculator(a, energy=md_frames[k].get_potential_energy(), forces=f)
    for name, frames in (("bulkCu_300K-a", md_frames), ("bulkCu_300K-b", broken)):
        (root / name).mkdir(parents=True)
        write(root / name / "traj.extxyz", frames, format="extxyz")
    out = tmp_path / "ref.h5"
    import_reference([root / "bulkCu_300K-a"], out, name="Other_300K", dt_fs=FRAME_DT_FS)
    before = (hashlib.sha256(out.read_bytes()).hexdigest(), out.stat().st_mtime_ns)
    res = dynamat_cmd("reference", "import", str(root), "--out", str(out), "--dt-fs", str(FRAME_DT_FS))
    assert_one_line_error(res, "bulkCu_300K-b: frame 10 has a non-finite forces")
    assert (hashlib.sha256(out.read_bytes()).hexdigest(), out.stat().st_mtime_ns) == before
    assert list_systems(out) == ["Other_300K"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["raw", "ref.h5"]  # no temporary file left
    with pytest.raises(DynamatError, match="non-finite forces"):
        import_reference([root], tmp_path / "new.h5", dt_fs=FRAME_DT_FS)
    assert not (tmp_path / "new.h5").exists()
    # once every system imports, all go in, beside the one there
    write(root / "bulkCu_300K-b" / "traj.extxyz", md_frames, format="extxyz")
    assert len(import_reference([root], out, dt_fs=FRAME_DT_FS)) == 2
    assert list_systems(out) == ["Other_300K", "bulkCu_300K-a", "bulkCu_300K-b"]


def test_partly_labelled_and_mixed_atoms_are_refused(md_frames, tmp_path):
    frames = [a.copy() for a in md_frames[:10]]
    for i, a in enumerate(frames):
        if i != 5:
            a.calc = SinglePointCalculator(a, energy=1.0, forces=np.zeros((len(a), 3)))
    write(tmp_path / "p.extxyz", frames)
    with pytest.raises(DynamatError, match="frame 5 lacks energy, forces"):
        import_reference([tmp_path / "p.extxyz"], tmp_path / "p.h5", dt_fs=FRAME_DT_FS, temperature_K=T_K)
    write(tmp_path / "small.extxyz", [a[:4] for a in md_frames[:3]])
    with pytest.raises(DynamatError, match="atoms where the first frame has 32"):
        import_reference([_write(tmp_path, md_frames[:3]),
                          tmp_path / "small.extxyz"], tmp_path / "q.h5", dt_fs=FRAME_DT_FS, temperature_K=T_K)
    with pytest.raises(DynamatError, match="cannot tell the format"):
        (tmp_path / "x.dat").write_text("1\n")
        import_reference([tmp_path / "x.dat"], tmp_path / "q.h5", dt_fs=1.0, temperature_K=T_K)
    with pytest.raises(DynamatError, match="source not found"):
        import_reference([tmp_path / "none.extxyz"], tmp_path / "q.h5")


def _write(tmp_path, frames):
    p = tmp_path / "big.extxyz"
    write(p, frames)
    return p


ASE_VASP_DATA = __import__("pathlib").Path(__import__("ase").__file__).parent / "test" / "testdata" / "vasp"


@pytest.mark.skipif(not ASE_VASP_DATA.is_dir(), reason="ASE's test data is not installed")
@pytest.mark.parametrize("fname, fmt, raw_xx_kB", [("vasprun_pstress.xml", "vasp-xml", -165.99562580),
                                                   ("OUTCAR_example_1", "vasp-out", -4.29429)])
def test_vasp_files_from_a_real_vasp_run(tmp_path, fname, fmt, raw_xx_kB):
    """ASE has no vasprun.xml or OUTCAR writer: these are the VASP outputs ASE's own tests read. Each
    holds one ionic step, which no reference can be scored on (refused); given as MIN_MATCHED_FRAMES
    segments it is read through the whole import (identical frames: no motion, so the check is forced)."""
    from ase.io import read

    src = tmp_path / "Ni_run" / fname
    src.parent.mkdir()
    src.write_bytes((ASE_VASP_DATA / fname).read_bytes())
    assert detect_format(src) == fmt
    with pytest.raises(DynamatError, match=r"holds 1 frame; a reference needs at least 8,") as err:
        import_reference([src], tmp_path / "v.h5", temperature_K=300.0)
    assert "\n" not in str(err.value) and not (tmp_path / "v.h5").exists()
    [res] = import_reference([src] * MIN_MATCHED_FRAMES, tmp_path / "v.h5", temperature_K=300.0, force=True)
    assert res.name == "Ni_run" and res.dt_fs == 0.5 and "POTIM" in res.dt_source  # POTIM = 0.5 in both files
    assert res.n_frames == MIN_MATCHED_FRAMES and res.forced
    t = read_reference(tmp_path / "v.h5", "Ni_run")
    [ref] = read(src, index=":", format=fmt)
    np.testing.assert_allclose(t.positions, [ref.positions] * MIN_MATCHED_FRAMES, atol=1e-12)
    np.testing.assert_allclose(t.energies, [ref.get_potential_energy()] * MIN_MATCHED_FRAMES, atol=1e-12)
    np.testing.assert_allclose(t.forces, [ref.get_forces()] * MIN_MATCHED_FRAMES, atol=1e-12)
    np.testing.assert_allclose(t.stress, [ref.get_stress()] * MIN_MATCHED_FRAMES, atol=1e-12)
    # VASP prints stress in kBar with the opposite sign: eV/Å³ with ASE's sign is -0.1 GPa per kBar
    assert t.stress[0, 0] == pytest.approx(-raw_xx_kB * 0.1 * units.GPa, rel=1e-6)


def test_reference_import_command(md_frames, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    exe = Path(sys.executable).parent / "dynamat"
    src = tmp_path / "cu_md.extxyz"
    write(src, md_frames, format="extxyz")
    out = tmp_path / "cli.h5"
    ok = subprocess.run([str(exe), "reference", "import", str(src), "--out", str(out), "--name", "Cu32_300K",
                         "--dt-fs", str(FRAME_DT_FS), "--temperature", str(T_K), "--isolated-energies", "Cu=-0.25"],
                        check=False, capture_output=True, text=True, timeout=300)
    assert ok.returncode == 0, ok.stderr
    assert "imported Cu32_300K" in ok.stdout and "160 frames of 32 atoms" in ok.stdout and "4 fs apart" in ok.stdout
    assert json.loads(reference_attrs(out, "Cu32_300K")["isolated_atom_energies_eV"]) == {"Cu": -0.25}
    bad = subprocess.run([str(exe), "reference", "import", str(src), "--out", str(tmp_path / "bad.h5"),
                          "--name", "Cu32_300K", "--dt-fs", str(5 * FRAME_DT_FS), "--temperature", str(T_K)],
                         check=False, capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1 and "look 4" in bad.stderr and "--force" in bad.stderr
    forced = subprocess.run([str(exe), "reference", "import", str(src), "--out", str(tmp_path / "bad.h5"),
                             "--name", "Cu32_300K", "--dt-fs", str(5 * FRAME_DT_FS), "--temperature", str(T_K),
                             "--force"], check=False, capture_output=True, text=True, timeout=300)
    assert forced.returncode == 0 and "against the equipartition check" in forced.stderr
    # what a user then does: the catalogue reads the imported system like any other
    sysr = subprocess.run([str(exe), "systems", "--reference", str(out), "--json"], check=False, capture_output=True, text=True,
                          timeout=300)
    [d] = json.loads(sysr.stdout)
    assert (d["name"], d["class"], d["dims"], d["reference_dt_fs"]) == ("Cu32_300K", "pure metal", 3, FRAME_DT_FS)
    assert d["labels"] == {"energy": True, "forces": True, "stress": True}


@pytest.mark.parametrize("given, file_name", [("../evil", "cu.extxyz"), ("a/b", "cu.extxyz"), ("Cu 300K", "cu.extxyz"),
                                              (None, "my run.extxyz")])
def test_a_system_name_that_is_no_folder_name_is_refused_before_anything_is_written(md_frames, tmp_path, given,
                                                                                    file_name):
    """A system becomes a run folder (``dynamat run --system``) and part of the import's temporary file
    name: a name with a path in it, or one no run could use, is refused whole, given or derived from a file."""
    work = tmp_path / "work"
    work.mkdir()
    src = work / file_name
    write(src, md_frames, format="extxyz")
    out = work / "ref.h5"
    import_reference([src], out, name="Cu32_300K", dt_fs=FRAME_DT_FS, temperature_K=T_K)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()}
    with pytest.raises(DynamatError, match="cannot be used as a folder name") as err:
        import_reference([src], out, name=given, dt_fs=FRAME_DT_FS, temperature_K=T_K)
    assert ("--name" in str(err.value)) == (given is None)  # a derived name: say how to give one
    assert {p: p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()} == before  # nothing new, nothing changed


def test_force_replaces_a_system_with_its_replicas(md_frames, tmp_path):
    """--force replaces a system and removes its further trajectories (``replica_of``): left, they set the
    new trajectory's noise floor. Another system's groups stay."""
    from dynamat.io.reference_h5 import reference_replicas, replica_of

    src, out = tmp_path / "a.extxyz", tmp_path / "r.h5"
    write(src, md_frames, format="extxyz")
    import_reference([src], out, name="Cu_x_300K", dt_fs=FRAME_DT_FS)
    import_reference([src], out, name="Cu_y_300K", dt_fs=FRAME_DT_FS)
    with h5py.File(out, "a") as f:
        for system in ("Cu_x_300K", "Cu_y_300K"):
            f.copy(f[system], f, name=f"{system}_r1")
            f[f"{system}_r1"].attrs.update(replica_of=system, replica_index=1, seed=2)
    assert reference_replicas(out, "Cu_x_300K") == ["Cu_x_300K", "Cu_x_300K_r1"]
    [res] = import_reference([src], out, name="Cu_x_300K", dt_fs=FRAME_DT_FS, force=True)
    assert any("Cu_x_300K_r1" in n for n in res.notes)
    assert reference_replicas(out, "Cu_x_300K") == ["Cu_x_300K"]
    assert reference_replicas(out, "Cu_y_300K") == ["Cu_y_300K", "Cu_y_300K_r1"]
    with h5py.File(out) as f:  # public: the importer and the readers share the one rule
        assert [replica_of(f[n]) for n in ("Cu_x_300K", "Cu_y_300K", "Cu_y_300K_r1")] == [None, None, "Cu_y_300K"]
