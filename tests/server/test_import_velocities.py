"""A run colder than it is said to be is not a wrong frame interval: where the files hold their own
velocities (ASE trajectories, extxyz momenta), the import tells the two apart instead of suggesting a
--dt-fs that would make every time-based metric wrong.

The frames: EMT copper started on the ideal lattice with velocities drawn at 600 K and run without a
thermostat, so equipartition leaves it near 300 K (a harmonic solid shares the energy evenly): a short
AIMD whose thermostat never brought it to its target, named at the target."""

import re

import numpy as np
import pytest
from ase import units
from ase.io import write
from ase.io.trajectory import Trajectory
from ase.md.verlet import VelocityVerlet
from conftest import assert_one_line_error, dynamat_cmd, emt_copper, labelled_frame

from dynamat.errors import DynamatError
from dynamat.io.importers import import_reference
from dynamat.io.reference_h5 import reference_attrs

NAMED_K = 600.0
STEP_FS, STRIDE, N_FRAMES = 2.0, 2, 160
FRAME_DT_FS = STEP_FS * STRIDE


@pytest.fixture(scope="module")
def cold_md():
    """(frames with momenta, their mean kinetic temperature in K over 3N − 3 degrees of freedom)."""
    atoms = emt_copper(NAMED_K, seed=11)
    md = VelocityVerlet(atoms, STEP_FS * units.fs)
    frames, temps = [], []
    n = len(atoms)
    for i in range(N_FRAMES):
        if i:
            md.run(STRIDE)
        frames.append(labelled_frame(atoms))
        temps.append(atoms.get_temperature() * 3 * n / (3 * n - 3))
    return frames, float(np.mean(temps))


@pytest.fixture()
def traj_file(cold_md, tmp_path):
    """The frames as ASE's own Trajectory writer stores them (momenta included)."""
    path = tmp_path / "cu.traj"
    with Trajectory(path, "w") as t:
        for f in cold_md[0]:
            t.write(f)
    return path


def _number(pattern: str, text: str) -> float:
    m = re.search(pattern, text)
    assert m, f"{pattern!r} not in {text!r}"
    return float(m.group(1))


def test_the_run_is_colder_than_named_not_a_wrong_interval(cold_md, traj_file, tmp_path):
    frames, true_t = cold_md
    assert true_t < 0.6 * NAMED_K  # the premise: equipartition halved the drawn temperature
    out = tmp_path / "mine.h5"
    with pytest.raises(DynamatError) as err:
        import_reference([traj_file], out, name="Cu32_600K", dt_fs=FRAME_DT_FS)
    msg = str(err.value)
    assert "the interval is right" in msg and "give --dt-fs" not in msg and "--temperature" in msg, msg
    assert _number(r"own velocities do \((\d+) K\)", msg) == pytest.approx(true_t, rel=0.01)
    assert not out.exists()
    # the same frames at the temperature they ran at: imported, the velocities' temperature kept as provenance
    [res] = import_reference([traj_file], out, name="Cu32", dt_fs=FRAME_DT_FS, temperature_K=round(true_t))
    assert res.check.ok and res.warnings == []
    assert res.velocity_temperature_K == pytest.approx(true_t, rel=0.01)
    assert res.velocity_implied_dt_fs == pytest.approx(FRAME_DT_FS, rel=0.1)
    assert reference_attrs(out, "Cu32")["velocity_temperature_K"] == pytest.approx(true_t, rel=0.01)


def test_a_wrong_interval_is_named_from_the_velocities_not_the_name(traj_file, tmp_path):
    """At twice the interval the finite differences read a quarter of the temperature; against the named
    600 K that would suggest 2.8 fs, against the files' own velocities the 4 fs the frames are apart."""
    with pytest.raises(DynamatError) as err:
        import_reference([traj_file], tmp_path / "x.h5", name="Cu32_600K", dt_fs=2 * FRAME_DT_FS)
    msg = str(err.value)
    assert "of the file's own velocities" in msg, msg
    assert _number(r"give --dt-fs ([\d.]+)", msg) == pytest.approx(FRAME_DT_FS, rel=0.1)
    with pytest.raises(DynamatError) as err:  # and where the source gives no interval at all
        import_reference([traj_file], tmp_path / "x.h5", name="Cu32_600K")
    assert _number(r"own velocities \(\d+ K\) suggest ([\d.]+) fs", str(err.value)) == pytest.approx(FRAME_DT_FS,
                                                                                                    rel=0.1)


def test_without_velocities_both_ways_out_are_named(cold_md, tmp_path):
    """A VASP-like source (positions only): equipartition cannot tell a colder run from closer frames."""
    frames = [labelled_frame(f, momenta=False) for f in cold_md[0]]
    src = tmp_path / "cu.extxyz"
    write(src, frames, format="extxyz")
    assert "momenta" not in src.read_text().splitlines()[1]
    with pytest.raises(DynamatError) as err:
        import_reference([src], tmp_path / "x.h5", name="Cu32_600K", dt_fs=FRAME_DT_FS)
    msg = str(err.value)
    assert "give --dt-fs" in msg and "the run is not at 600 K" in msg and "--temperature" in msg, msg


def test_a_kept_temperature_the_velocities_contradict_is_warned(traj_file, tmp_path):
    """--force keeps the named 600 K; the warning says what the velocities say (runs would be at 600 K)."""
    out = tmp_path / "mine.h5"
    r = dynamat_cmd("reference", "import", str(traj_file), "--out", str(out), "--name", "Cu32_600K",
                    "--dt-fs", str(FRAME_DT_FS), "--force")
    assert r.returncode == 0, r.stderr
    assert re.search(r"warning: Cu32_600K: the files' own velocities say \d+ ± \d+ K, not the 600 K", r.stderr)
    assert "of the files' own velocities" in r.stdout
    assert_one_line_error(dynamat_cmd("reference", "import", str(traj_file), "--out", str(tmp_path / "y.h5"),
                                      "--name", "Cu32_600K", "--dt-fs", str(FRAME_DT_FS)))


def test_velocities_in_other_units_are_not_taken_as_evidence(cold_md, tmp_path):
    """Velocities 1000 × too fast (a LAMMPS dump in real units, Å/fs, read as metal's Å/ps) say 10⁶ × the
    temperature: they are left out, never turned into a suggested interval of a few thousandths of a fs."""
    frames, true_t = cold_md
    fast = [labelled_frame(f) for f in frames]
    for f, g in zip(fast, frames):
        f.set_momenta(g.get_momenta() * 1000)
    src = tmp_path / "fast.extxyz"
    write(src, fast, format="extxyz")
    with pytest.raises(DynamatError) as err:
        import_reference([src], tmp_path / "x.h5", name="Cu32_600K", dt_fs=FRAME_DT_FS)
    msg = str(err.value)
    assert "own velocities" not in msg and "the run is not at 600 K" in msg, msg
    [res] = import_reference([src], tmp_path / "x.h5", name="Cu32", dt_fs=FRAME_DT_FS, temperature_K=round(true_t))
    assert res.velocity_temperature_K is None and res.warnings == []


def test_a_drifting_centre_of_mass_is_named_in_the_temperature_warning(cold_md, tmp_path):
    """The same frames carried along at a constant velocity (ASE MD from a draw without ``Stationary``): the
    temperature over 3N − 3 degrees of freedom is the same, and the warning names the drift's share of the
    kinetic energy, computed here from ASE's momenta; without a drift no such clause."""
    frames, true_t = cold_md
    drift = np.array([0.001, -0.0008, 0.0005])  # Å/fs
    moving = [labelled_frame(f) for f in frames]
    shares = []
    for i, (f, g) in enumerate(zip(moving, frames)):
        f.set_momenta(g.get_momenta() + np.outer(g.get_masses(), drift) / units.fs)  # ASE's momenta: amu Å / its time
        f.positions = g.positions + drift * i * FRAME_DT_FS
        p = f.get_momenta()
        shares.append(p.sum(0) @ p.sum(0) / f.get_masses().sum() / np.einsum("nk,nk,n->", p, p, 1 / f.get_masses()))
    src = tmp_path / "drifting.extxyz"
    write(src, moving, format="extxyz")
    [res] = import_reference([src], tmp_path / "x.h5", name="Cu32_600K", dt_fs=FRAME_DT_FS, force=True)
    assert res.velocity_temperature_K == pytest.approx(true_t, rel=0.01)
    (warning,) = res.warnings
    assert _number(r"its centre of mass moves with ([\d.]+) % of the kinetic energy", warning) == pytest.approx(
        100 * np.mean(shares), abs=0.06) and 0.05 < np.mean(shares) < 0.5
    still = tmp_path / "still.extxyz"
    write(still, frames, format="extxyz")
    [res] = import_reference([still], tmp_path / "y.h5", name="Cu32_600K", dt_fs=FRAME_DT_FS, force=True)
    assert "the files' own velocities say" in res.warnings[0] and "centre of mass" not in res.warnings[0]
