"""What a hostile pass found `reference import` letting through, each on files ASE's own writers make:
segments of other atoms (elements, order), gaps and overlaps between segments, --drop-ps with only the
frames' time_fs, and a reference too short ever to be scored."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary
from conftest import assert_one_line_error, dynamat_cmd

from dynamat.errors import DynamatError
from dynamat.io.importers import import_reference
from dynamat.io.reference_h5 import read_reference, reference_attrs
from dynamat.trajectory import MIN_MATCHED_FRAMES

T_K = 300.0
FRAME_DT_FS = 4.0  # 2 steps of 2 fs
N_FRAMES = 40
SYSTEM = "CuAu32_300K"


@pytest.fixture(scope="module")
def md():
    """Langevin MD of an EMT Cu-Au alloy (16 + 16 atoms, interleaved) at 300 K, a frame every 4 fs, each
    frame with the time and step an MD writer records (the time as a float sum, as ASE's MD gives it)."""
    atoms = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 2, 2))
    atoms.numbers[::2] = 79
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=T_K, rng=np.random.default_rng(11))
    Stationary(atoms)
    md = Langevin(atoms, 2.0 * units.fs, temperature_K=T_K, friction=0.02 / units.fs, rng=np.random.default_rng(12))
    md.run(250)
    frames = []
    for i in range(N_FRAMES):
        if i:
            md.run(2)
        f = atoms.copy()
        f.calc = SinglePointCalculator(f, energy=atoms.get_potential_energy(), forces=atoms.get_forces(),
                                       stress=atoms.get_stress())
        f.info["time_fs"] = 1000.0 + i * 0.4 * 10  # 12.000000000000002 and the like: no exact sums
        f.info["md_step"] = 500 + 2 * i
        frames.append(f)
    return frames


def _segments(tmp_path, *parts, drop_info=(), stem="seg"):
    """Each list of frames as its own extxyz (seg0.extxyz, seg1.extxyz, ...), with the info keys in
    ``drop_info`` removed."""
    paths = []
    for k, frames in enumerate(parts):
        frames = [a.copy() for a in frames]
        for a, orig in zip(frames, parts[k]):
            a.calc = orig.calc
            for key in drop_info:
                a.info.pop(key, None)
        paths.append(tmp_path / f"{stem}{k}.extxyz")
        write(paths[-1], frames, format="extxyz")
    return paths


def _sorted_by_element(a):
    b = a[np.argsort(a.numbers, kind="stable")]
    b.calc = SinglePointCalculator(b, energy=a.get_potential_energy(),
                                   forces=a.get_forces()[np.argsort(a.numbers, kind="stable")])
    return b


def _with_silver(a):
    b = a.copy()
    b.numbers[b.numbers == 79] = 47
    b.calc = a.calc
    return b


# --- the atoms: every frame the first frame's elements, in its order ----------------------------------
def test_a_segment_of_other_elements_is_refused(md, tmp_path):
    seg = _segments(tmp_path, md[:20], [_with_silver(a) for a in md[20:]])
    with pytest.raises(DynamatError) as err:
        import_reference(seg, tmp_path / "r.h5", name=SYSTEM)
    msg = str(err.value)
    assert "\n" not in msg and msg.startswith(f"{seg[1]}: frame 0 has atoms Ag16Cu16 where the first frame")
    assert "has Au16Cu16" in msg and "import it separately" in msg
    assert not (tmp_path / "r.h5").exists()


def test_a_segment_of_the_same_atoms_in_another_order_is_refused(md, tmp_path):
    seg = _segments(tmp_path, md[:20], [_sorted_by_element(a) for a in md[20:]])
    res = dynamat_cmd("reference", "import", *map(str, seg), "--out", str(tmp_path / "r.h5"), "--name", SYSTEM)
    assert_one_line_error(res, f"{seg[1]}: frame 0 has atoms Au16Cu16 in another order than the first frame's",
                          "atom 0 is Cu, Au there")
    assert not (tmp_path / "r.h5").exists()


def test_a_segment_of_other_periodicity_is_refused(md, tmp_path):
    """Each file's header sets the periodicity: a slab segment (no pbc along c) after a bulk one was stored
    as whichever came last, and its frames scored under the other's minimum image."""
    slab = [a.copy() for a in md[20:]]
    for a, orig in zip(slab, md[20:]):
        a.pbc, a.calc = (True, True, False), orig.calc
    seg = _segments(tmp_path, md[:20], slab)
    with pytest.raises(DynamatError) as err:
        import_reference(seg, tmp_path / "r.h5", name=SYSTEM)
    assert str(err.value) == (f"{seg[1]} is periodic along [True, True, False] where {seg[0]} is along "
                              "[True, True, True]: another system; import it separately")
    assert not (tmp_path / "r.h5").exists()


def test_a_frame_reordered_inside_one_file_is_refused(md, tmp_path):
    """Per frame, not only per file: a writer that re-sorts atoms from some frame on."""
    [src] = _segments(tmp_path, md[:3] + [_sorted_by_element(a) for a in md[3:20]])
    with pytest.raises(DynamatError, match=r"seg0.extxyz: frame 3 has atoms Au16Cu16 in another order"):
        import_reference([src], tmp_path / "r.h5", name=SYSTEM)


def test_xdatcar_segments_of_another_species_order_are_refused(md, tmp_path):
    """An XDATCAR names its species once in a header: the reader's numbers, per file, are compared too."""
    for k, frames in enumerate((md[:20], [_sorted_by_element(a) for a in md[20:]])):
        (tmp_path / f"run{k}").mkdir()
        write(tmp_path / f"run{k}" / "XDATCAR", frames, format="vasp-xdatcar")
        (tmp_path / f"run{k}" / "INCAR").write_text(f"IBRION = 0\nPOTIM = {FRAME_DT_FS}\nTEBEG = {T_K}\n")
    paths = [tmp_path / "run0" / "XDATCAR", tmp_path / "run1" / "XDATCAR"]
    with pytest.raises(DynamatError, match=r"run1/XDATCAR: frame 0 has atoms Au16Cu16 in another order"):
        import_reference(paths, tmp_path / "x.h5", name=SYSTEM)
    assert not (tmp_path / "x.h5").exists()
    # the same order in both: one reference, both files' configurations
    write(paths[1], md[20:], format="vasp-xdatcar")
    [res] = import_reference(paths, tmp_path / "x.h5", name=SYSTEM)
    assert res.n_frames == N_FRAMES
    np.testing.assert_array_equal(read_reference(tmp_path / "x.h5", SYSTEM).numbers, md[0].numbers)


# --- gaps and overlaps ------------------------------------------------------------------------------
def test_consecutive_segments_with_float_times_import_with_their_interval(md, tmp_path):
    seg = _segments(tmp_path, md[:20], md[20:])
    [res] = import_reference(seg, tmp_path / "r.h5", name=SYSTEM)
    assert res.n_frames == N_FRAMES and res.dt_fs == pytest.approx(FRAME_DT_FS) and res.check.ok
    assert res.dt_source == "file metadata (time_fs)"


@pytest.mark.parametrize("second, kind, times", [(22, "a gap", "time_fs 1088 after "),
                                                 (18, "an overlap", "time_fs 1072 after ")])
def test_a_gap_or_overlap_between_segments_is_refused(md, tmp_path, second, kind, times):
    seg = _segments(tmp_path, md[:20], md[second:])
    res = dynamat_cmd("reference", "import", *map(str, seg), "--out", str(tmp_path / "r.h5"), "--name", SYSTEM)
    line = assert_one_line_error(res, f"{seg[1]}: frame 0 is at {times}{seg[0]} frame 19 at 1076",
                                 "frames 4 fs apart", kind, "import the segments separately")
    assert ("cut the repeated frames out" in line) == (kind == "an overlap")
    assert not (tmp_path / "r.h5").exists()


def test_an_overlap_inside_one_file_is_refused(md, tmp_path):
    """A restart appended to the same file: time goes back at frame 10."""
    [src] = _segments(tmp_path, md[:10] + md[7:20])
    with pytest.raises(DynamatError, match=r"seg0.extxyz: frame 10 is at time_fs 1028 after frame 9 at 1036, "
                                           r"frames 4 fs apart: an overlap"):
        import_reference([src], tmp_path / "r.h5", name=SYSTEM)


def test_a_repeated_first_frame_is_an_overlap(md, tmp_path):
    """Before any interval is known: a time that does not go forward."""
    [src] = _segments(tmp_path, md[:1] + md[:20])
    with pytest.raises(DynamatError, match=r"frame 1 is at time_fs 1000 after frame 0 at 1000, no time between "
                                           r"them: an overlap"):
        import_reference([src], tmp_path / "r.h5", name=SYSTEM)


def test_md_step_gaps_and_overlaps_without_times(md, tmp_path):
    """Without time_fs the step counter tells: inside a file, and across files whose counter goes on."""
    seg = _segments(tmp_path, md[:20], md[21:], drop_info=("time_fs",))
    with pytest.raises(DynamatError, match=r"seg1.extxyz: frame 0 is at md_step 542 after .*seg0.extxyz frame 19 "
                                           r"at 538, frames 2 steps apart: a gap"):
        import_reference(seg, tmp_path / "r.h5", name=SYSTEM, dt_fs=FRAME_DT_FS)
    [src] = _segments(tmp_path, md[:12] + md[10:20], drop_info=("time_fs",))
    with pytest.raises(DynamatError, match=r"frame 12 is at md_step 520 after frame 11 at 522.*an overlap"):
        import_reference([src], tmp_path / "r.h5", name=SYSTEM, dt_fs=FRAME_DT_FS)
    # a counter that starts again (a VASP restart's XDATCAR counts from 1 again) says nothing: accepted
    restarted = [a.copy() for a in md[20:]]
    for k, a in enumerate(restarted):
        a.calc, a.info["md_step"] = md[20 + k].calc, 2 * k
    seg = _segments(tmp_path, md[:20], restarted, drop_info=("time_fs",))
    [res] = import_reference(seg, tmp_path / "r.h5", name=SYSTEM, dt_fs=FRAME_DT_FS)
    assert res.n_frames == N_FRAMES


def test_a_segment_without_times_after_one_with_is_accepted_and_said(md, tmp_path):
    # md_step on both or neither (a stored field): both segments without md_step, the first with times
    [plain] = _segments(tmp_path, md[20:], drop_info=("time_fs", "md_step"), stem="plain")
    seg = _segments(tmp_path, md[:20], drop_info=("md_step",)) + [plain]
    [res] = import_reference(seg, tmp_path / "r.h5", name=SYSTEM)
    assert res.n_frames == N_FRAMES and res.dt_fs == pytest.approx(FRAME_DT_FS)
    assert any(f"{plain} frame 0 has no time_fs" in n for n in res.notes)


# --- --drop-ps with only the frames' times -----------------------------------------------------------------
def test_drop_ps_uses_the_frames_time(md, tmp_path):
    seg = _segments(tmp_path, md[:20], md[20:])
    [res] = import_reference(seg, tmp_path / "t.h5", name=SYSTEM, drop_ps=0.02)  # 20 fs: frames at 1000-1016 fs
    assert res.first_frame == 5 and res.n_frames == N_FRAMES - 5 and res.dt_fs == pytest.approx(FRAME_DT_FS)
    t = read_reference(tmp_path / "t.h5", SYSTEM)
    np.testing.assert_allclose(t.positions, [a.positions for a in md[5:]], atol=1e-8)
    assert reference_attrs(tmp_path / "t.h5", SYSTEM)["source_first_frame"] == 5
    # the same cut as with the interval given
    [given] = import_reference(seg, tmp_path / "d.h5", name=SYSTEM, drop_ps=0.02, dt_fs=FRAME_DT_FS)
    assert given.first_frame == 5 and given.n_frames == res.n_frames
    # a source that says neither: one line, as before
    bare = _segments(tmp_path, md, drop_info=("time_fs",), stem="bare")
    with pytest.raises(DynamatError, match="--drop-ps needs the time between frames"):
        import_reference(bare, tmp_path / "n.h5", name=SYSTEM, drop_ps=0.02)


# --- too short to score ---------------------------------------------------------------------------------
@pytest.mark.parametrize("frames, start", [(1, 0), (10, 3)])
def test_a_reference_too_short_to_score_is_refused(md, tmp_path, frames, start):
    [src] = _segments(tmp_path, md[:frames])
    args = ["--start-frame", str(start)] if start else []
    res = dynamat_cmd("reference", "import", str(src), "--out", str(tmp_path / "r.h5"), "--name", SYSTEM, *args)
    n = frames - start
    after = f" after the first {start} (--start-frame/--drop-ps)" if start else ""
    assert_one_line_error(res, f"holds {n} frame{'s' * (n != 1)}{after}; a reference needs at least "
                               f"{MIN_MATCHED_FRAMES}")
    assert not (tmp_path / "r.h5").exists()


def test_the_shortest_reference_that_scores_imports(md, tmp_path):
    [src] = _segments(tmp_path, md[:MIN_MATCHED_FRAMES])
    [res] = import_reference([src], tmp_path / "r.h5", name=SYSTEM)
    assert res.n_frames == MIN_MATCHED_FRAMES


def test_frames_that_do_not_move_are_no_md_and_say_so(md, tmp_path):
    """Identical frames (a relaxation's last structure written N times, a single point repeated): the
    equipartition check said 'they look inf fs apart; give --dt-fs inf'. Now one line that says why."""
    still = [md[0]] * MIN_MATCHED_FRAMES
    (path,) = _segments(tmp_path, still, drop_info=("time_fs", "md_step"))
    res = dynamat_cmd("reference", "import", str(path), "--out", str(tmp_path / "ref.h5"), "--name", SYSTEM,
                      "--dt-fs", "4")
    assert_one_line_error(res, "the atoms do not move between frames", "not an MD trajectory at 300 K", "--force")
    assert "inf" not in res.stderr and not (tmp_path / "ref.h5").exists()


def test_an_out_that_is_not_hdf5_is_left_alone_in_one_line(md, tmp_path):
    """--out naming the user's notes (a typo): the raw h5py OSError was the message; --force must not
    make it a reference either. A usage error names the full command for its --help."""
    seg = _segments(tmp_path, md[:20])
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    for extra in ((), ("--force",)):
        res = dynamat_cmd("reference", "import", str(seg[0]), "--out", str(notes), "--name", SYSTEM, *extra)
        assert_one_line_error(res, f"--out {notes} exists and is not an HDF5 file; not touching it")
    assert notes.read_text() == "my notes\n"
    res = dynamat_cmd("reference", "import", str(seg[0]), "--out", str(tmp_path))
    assert_one_line_error(res, "is a directory", "(see `dynamat reference import --help`)")
