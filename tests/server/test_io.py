"""Readers and writers: DynaMat v1.0 HDF5, extxyz, i-PI outputs."""

import h5py
import numpy as np
import pytest
from ase import Atoms, units
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

from dynamat.errors import DynamatError, ReferenceFormatError
from dynamat.io import read_extxyz, read_reference, write_reference
from dynamat.io.ipi_output import _last_unique, read_properties
from dynamat.io.reference_h5 import list_systems, reference_n_frames
from dynamat.trajectory import Trajectory
from dynamat.units import EV_PER_A3_TO_GPA


def _traj(m=5, n=4, seed=0, name="sys"):
    rng = np.random.default_rng(seed)
    return Trajectory(
        numbers=[29, 79, 29, 29][:n],
        positions=rng.normal(size=(m, n, 3)),
        cells=np.eye(3) * 5 + rng.normal(scale=0.1, size=(m, 3, 3)),
        dt_fs=2.5,
        energies=rng.normal(size=m),
        forces=rng.normal(size=(m, n, 3)),
        stress=rng.normal(size=(m, 6)),
        steps=np.arange(m) * 10,
        temperature_K=300.0,
        name=name,
    )


def test_reference_roundtrip(tmp_path):
    t = _traj()
    path = tmp_path / "ref.h5"
    write_reference(path, t, {"system_class": "alloy"})
    write_reference(path, _traj(name="other"))
    assert list_systems(path) == ["other", "sys"]
    back = read_reference(path, "sys")
    for key in ("positions", "cells", "energies", "forces", "stress", "steps"):
        np.testing.assert_array_equal(getattr(back, key), getattr(t, key))
    assert back.dt_fs == 2.5 and back.temperature_K == 300.0
    sub = read_reference(path, "sys", frames=slice(0, None, 2))
    assert sub.n_frames == 3 and sub.dt_fs == 5.0
    np.testing.assert_array_equal(sub.positions, t.positions[::2])
    assert reference_n_frames(path, "sys") == 5


def test_reference_stress_units_are_converted(tmp_path):
    t = _traj()
    path = tmp_path / "ref.h5"
    gpa = t.stress * EV_PER_A3_TO_GPA
    write_reference(path, Trajectory(**{**t.__dict__, "stress": gpa}), {"stress_unit": "GPa"})
    np.testing.assert_allclose(read_reference(path, "sys").stress, t.stress, rtol=1e-12)
    with h5py.File(path, "a") as f:
        f["sys"]["stress"][...] = gpa * 10  # kbar
        f["sys"].attrs["stress_unit"] = "kbar"
    np.testing.assert_allclose(read_reference(path, "sys").stress, t.stress, rtol=1e-12)


def test_bad_reference_files(tmp_path):
    with pytest.raises(DynamatError, match="not found"):
        read_reference(tmp_path / "nope.h5", "sys")
    junk = tmp_path / "junk.h5"
    junk.write_bytes(b"this is not hdf5" * 10)
    with pytest.raises(ReferenceFormatError, match="not a readable HDF5"):
        read_reference(junk, "sys")
    path = tmp_path / "ref.h5"
    write_reference(path, _traj())
    with pytest.raises(DynamatError, match="not in"):
        read_reference(path, "missing")
    with h5py.File(path, "a") as f:
        del f["sys"]["cell"]
    with pytest.raises(ReferenceFormatError, match="lacks"):
        read_reference(path, "sys")


def test_extxyz_reader(tmp_path):
    rng = np.random.default_rng(1)
    frames = []
    for i in range(4):
        a = Atoms("Cu2Au", positions=rng.normal(size=(3, 3)), cell=np.eye(3) * 4, pbc=True)
        v_A_per_fs = rng.normal(scale=0.01, size=(3, 3))
        a.set_velocities(v_A_per_fs / units.fs)
        a.calc = SinglePointCalculator(a, energy=float(i), forces=np.full((3, 3), i), stress=np.arange(6) * i)
        a.info["v_expected"] = v_A_per_fs
        frames.append((a, v_A_per_fs))
    write(tmp_path / "t.extxyz", [a for a, _ in frames])
    t = read_extxyz(tmp_path / "t.extxyz", dt_fs=5.0)
    assert t.n_frames == 4 and t.dt_fs == 5.0
    np.testing.assert_allclose(t.velocities, np.array([v for _, v in frames]), atol=1e-7)
    np.testing.assert_allclose(t.energies, [0, 1, 2, 3])
    np.testing.assert_allclose(t.stress[2], np.arange(6) * 2)
    with pytest.raises(DynamatError, match="not found"):
        read_extxyz(tmp_path / "missing.xyz", 1.0)
    # a `velocities` column (units unstated) is no velocities: ASE's get_velocities read it as zeros, atoms at rest
    for a, v in frames:
        a.arrays["velocities"] = v.copy()
        a.set_momenta(None)
    write(tmp_path / "v.extxyz", [a for a, _ in frames])
    assert "velocities:R:3" in (tmp_path / "v.extxyz").read_text()
    assert read_extxyz(tmp_path / "v.extxyz", dt_fs=5.0).velocities is None


def test_properties_deduplicated_by_step(tmp_path):
    p = tmp_path / "simulation.out"
    p.write_text(
        "# column   1     --> step : x\n# column   2     --> time{femtosecond} : x\n"
        "# cols.  3-4     --> virial_md{ev/ang3} : x\n"
        "0 0.0 1 2\n10 2.5 3 4\n20 5.0 5 6\n10 2.5 30 40\n20 5.0 50 60\n30 7.5 7 8\n"
    )
    props = read_properties(p)
    np.testing.assert_array_equal(props["step"], [0, 10, 20, 30])
    np.testing.assert_array_equal(props["virial_md{ev/ang3}"][:, 0], [1, 30, 50, 7])
    np.testing.assert_array_equal(_last_unique(np.array([0, 1, 2, 1, 2, 3])), [0, 3, 4, 5])
