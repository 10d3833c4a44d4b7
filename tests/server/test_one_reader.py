"""One reader per format: ``score --trajectory`` and ``reference import`` read an extxyz alike, with one set of
fallbacks; a file cut anywhere in its last frame (ASE's extxyz, i-PI's outputs) keeps its complete frames and
says that the last one was dropped; a run resumed twice reads back one frame per step, in step order."""

import json
import shutil

import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from dynamat.errors import DynamatError
from dynamat.io import read_extxyz, read_ipi_run
from dynamat.io.importers import import_reference
from dynamat.io.reference_h5 import read_reference
from dynamat.io.run_folder import read_run_trajectory
from dynamat.scoring.core import MIN_MATCHED_FRAMES

from conftest import dynamat_cmd

SYSTEM = "bulkCu_300K-demo_EMT"


def _frames(kind: str, m: int = MIN_MATCHED_FRAMES, n: int = 4):
    """ASE frames whose energy and stress are stored the way ``kind`` says, with the stress each implies."""
    rng = np.random.default_rng(7)
    frames, stress = [], []
    for i in range(m):
        a = Atoms(["Cu"] * (n - 1) + ["Au"], positions=rng.uniform(0, 4, size=(n, 3)), cell=np.diag([4.0, 4.2, 4.4]), pbc=True)
        full = rng.normal(size=(3, 3))
        full = full + full.T
        voigt = full[[0, 1, 2, 1, 0, 0], [0, 1, 2, 2, 2, 1]]
        if kind == "virial":
            a.info["virial"] = -full * a.get_volume()  # eV; stress = -virial / V
            a.calc = SinglePointCalculator(a, energy=float(i), forces=rng.normal(size=(n, 3)))
        elif kind == "free_energy":
            a.calc = SinglePointCalculator(a, free_energy=float(i), forces=rng.normal(size=(n, 3)), stress=voigt)
        else:  # a 3x3 stress in the comment line
            a.info["stress"] = full
            a.calc = SinglePointCalculator(a, energy=float(i), forces=rng.normal(size=(n, 3)))
        frames.append(a)
        stress.append(voigt)
    return frames, np.array(stress)


@pytest.mark.parametrize("kind", ["free_energy", "virial", "stress3x3"])
def test_score_and_import_read_the_same_arrays(tmp_path, kind):
    frames, stress = _frames(kind)
    path = tmp_path / f"Cu3Au_300K_{kind}.extxyz"
    write(path, frames, format="extxyz")
    scored = read_extxyz(path, dt_fs=2.0)
    [res] = import_reference([path], tmp_path / "ref.h5", dt_fs=2.0, temperature_K=300.0, force=True)
    imported = read_reference(tmp_path / "ref.h5", res.name)
    for key in ("positions", "cells", "energies", "forces", "stress"):
        a, b = getattr(scored, key), getattr(imported, key)
        assert a is not None and b is not None, key
        np.testing.assert_array_equal(a, b, err_msg=key)
    np.testing.assert_allclose(scored.stress, stress, atol=1e-12)
    np.testing.assert_array_equal(scored.energies, np.arange(len(frames), dtype=float))


def _cuts(text: str, n_atoms: int) -> dict[str, int]:
    """Byte offsets inside the last frame of an xyz text: where a killed writer may have stopped."""
    lines = text.splitlines(keepends=True)
    start = len(text) - sum(len(ln) for ln in lines[-(n_atoms + 2):])  # the last frame's first byte
    end_of = lambda k: start + sum(len(ln) for ln in lines[-(n_atoms + 2):][:k])  # noqa: E731
    return {
        "mid count line": start + 1 if len(lines[-(n_atoms + 2)]) > 2 else start,
        "after count line": end_of(1),
        "mid comment line": end_of(1) + 20,
        "after an atom line": end_of(3),
        "mid last atom line": len(text) - 12,
        "before the last newline": len(text) - 1,
    }


def test_cut_extxyz_keeps_the_complete_frames(tmp_path, capsys):
    kept = MIN_MATCHED_FRAMES  # the shortest reference an import takes, and one frame cut after it
    frames, _ = _frames("free_energy", m=kept + 1, n=12)
    full = tmp_path / "full.extxyz"
    write(full, frames, format="extxyz")
    whole = read_extxyz(full, dt_fs=1.0)
    text = full.read_text()
    for where, offset in _cuts(text, 12).items():
        cut = tmp_path / "Cu3Au_300K_cut.extxyz"
        cut.write_text(text[:offset])
        capsys.readouterr()
        got = read_extxyz(cut, dt_fs=1.0)
        assert got.n_frames == kept, where
        for key in ("positions", "cells", "energies", "forces", "stress"):
            np.testing.assert_array_equal(getattr(got, key), getattr(whole, key)[:kept], err_msg=f"{where}: {key}")
        err = capsys.readouterr().err
        assert "dropped" in err and f"kept the {kept} complete frames" in err, (where, err)
        assert len(got.notes) == 1 and whole.notes == []
        out = tmp_path / f"ref_{where.replace(' ', '_')}.h5"
        [res] = import_reference([cut], out, dt_fs=1.0, temperature_K=300.0, force=True)
        assert res.n_frames == kept and any("dropped" in n for n in res.notes), where
        np.testing.assert_array_equal(read_reference(out, res.name).positions, whole.positions[:kept])


def test_cut_in_the_first_frame_is_one_line(tmp_path):
    frames, _ = _frames("free_energy", m=1)
    path = tmp_path / "one.extxyz"
    write(path, frames, format="extxyz")
    path.write_text(path.read_text()[:-5])
    with pytest.raises(DynamatError, match="no complete frame"):
        read_extxyz(path, dt_fs=1.0)


@pytest.fixture(scope="module")
def ipi_run(tmp_path_factory):
    """A real i-PI run folder (EMT copper through the socket driver)."""
    out = tmp_path_factory.mktemp("run")
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "300", "--out", str(out), "--seed", "5")
    assert res.returncode == 0, res.stderr
    return out / "emt" / SYSTEM


@pytest.mark.parametrize("name", ["simulation.pos_0.extxyz", "simulation.vel_0.extxyz"])
def test_cut_ipi_trajectory_keeps_the_complete_frames(tmp_path, ipi_run, name, capsys):
    whole = read_ipi_run(ipi_run)
    assert whole.n_frames > 5
    n = whole.n_atoms
    text = (ipi_run / name).read_text()
    for where, offset in _cuts(text, n).items():
        run = tmp_path / where.replace(" ", "_")
        shutil.copytree(ipi_run, run)
        (run / name).write_text(text[:offset])
        capsys.readouterr()
        got = read_run_trajectory(run)  # what `dynamat score --run` reads
        m = whole.n_frames - 1
        assert got.n_frames == m, where
        np.testing.assert_array_equal(got.steps, whole.steps[:m])
        for key in ("positions", "cells", "velocities", "energies", "stress"):
            np.testing.assert_array_equal(getattr(got, key), getattr(whole, key)[:m], err_msg=f"{where}: {key}")
        assert got.dt_fs == whole.dt_fs
        assert "dropped" in capsys.readouterr().err, where
        assert len(got.notes) == 1 and whole.notes == []


def test_cut_properties_row_drops_the_frames_after_it(tmp_path, ipi_run, capsys):
    whole = read_ipi_run(ipi_run)
    run = tmp_path / "run"
    shutil.copytree(ipi_run, run)
    text = (run / "simulation.out").read_text()
    (run / "simulation.out").write_text(text[:-7])  # the last row, cut mid-number
    got = read_ipi_run(run)
    m = whole.n_frames - 1
    np.testing.assert_array_equal(got.steps, whole.steps[:m])
    np.testing.assert_array_equal(got.stress, whole.stress[:m])
    np.testing.assert_array_equal(got.energies, whole.energies[:m])
    assert got.dt_fs == whole.dt_fs
    assert "dropped" in capsys.readouterr().err
    assert len(got.notes) == 2


def _frame_blocks(text: str, n_atoms: int) -> list[str]:
    lines = text.splitlines(keepends=True)
    return ["".join(lines[i:i + n_atoms + 2]) for i in range(0, len(lines), n_atoms + 2)]


def test_run_resumed_twice_reads_one_frame_per_step_in_order(tmp_path, ipi_run):
    """i-PI appends after every restart: killed at the end, resumed from a third of the way and killed again
    at two thirds, its files hold every step once, then the middle third a second time. The real outputs
    are rearranged so, and the reader must give the steps once each, strictly increasing, each frame its own."""
    whole = read_ipi_run(ipi_run)
    run = tmp_path / "run"
    shutil.copytree(ipi_run, run)
    m = whole.n_frames
    a, b = m // 3, 2 * m // 3
    for name in ("simulation.pos_0.extxyz", "simulation.vel_0.extxyz"):
        blocks = _frame_blocks((ipi_run / name).read_text(), whole.n_atoms)
        assert len(blocks) == m
        (run / name).write_text("".join(blocks + blocks[a:b]))
    lines = (ipi_run / "simulation.out").read_text().splitlines(keepends=True)
    header = [ln for ln in lines if ln.startswith("#")]
    rows = [ln for ln in lines if not ln.startswith("#")]
    again = [ln for ln in rows if whole.steps[a] <= int(float(ln.split()[0])) <= whole.steps[b - 1]]
    (run / "simulation.out").write_text("".join(header + rows + header + again))
    got = read_ipi_run(run)
    assert (np.diff(got.steps) > 0).all()
    np.testing.assert_array_equal(got.steps, whole.steps)
    for key in ("positions", "velocities", "energies", "stress"):
        np.testing.assert_array_equal(getattr(got, key), getattr(whole, key), err_msg=key)


def test_score_of_a_cut_run_and_trajectory_says_what_it_dropped(tmp_path, ipi_run):
    """Issue 24: a trajectory cut in its last frame scores the frames before it and says so, through the CLI,
    whether given as a run folder or as an extxyz written by ASE."""
    whole = read_ipi_run(ipi_run)
    run = tmp_path / "emt" / SYSTEM
    shutil.copytree(ipi_run, run)
    text = (run / "simulation.pos_0.extxyz").read_text()
    (run / "simulation.pos_0.extxyz").write_text(text[: _cuts(text, whole.n_atoms)["mid last atom line"]])
    res = dynamat_cmd("score", "--system", SYSTEM, "--run", str(run))
    assert res.returncode == 0, res.stderr
    assert "dynamat: warning:" in res.stderr and "dropped" in res.stderr
    assert "dropped" in json.loads((run / "score.json").read_text())["reader_notes"][0]

    frames = [Atoms(numbers=whole.numbers, positions=p, cell=c, pbc=True) for p, c in zip(whole.positions, whole.cells)]
    traj = tmp_path / "md.extxyz"
    write(traj, frames, format="extxyz")
    text = traj.read_text()
    traj.write_text(text[: _cuts(text, whole.n_atoms)["mid comment line"]])
    res = dynamat_cmd("score", "--system", SYSTEM, "--trajectory", str(traj), "--dt-fs", str(whole.dt_fs),
                      "--json", str(tmp_path / "traj_score.json"))
    assert res.returncode == 0, res.stderr
    assert "dropped" in res.stderr and "kept the" in res.stderr
