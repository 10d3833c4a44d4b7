"""``reference generate`` and the replica set it stores: --overwrite replaces the whole set (no stale
``<name>_r<k>`` of an earlier, larger set), a rerun of a killed command keeps the replicas it stored and
resumes the rest. Real i-PI, dynamat-driver and EMT on 32 Cu atoms."""

import os
import signal
import subprocess

import ase.build
import ase.io
import h5py
import numpy as np
import pytest

from dynamat.io.reference_h5 import read_reference, reference_replicas

from conftest import BIN, assert_one_line_error, dynamat_cmd, wait_for_step


@pytest.fixture(scope="module")
def cu_cif(tmp_path_factory):
    path = tmp_path_factory.mktemp("structure") / "cu.cif"
    ase.io.write(path, ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2))
    return path


def _generate_args(structure, out, name, *extra):
    return ["reference", "generate", "--engine", "driver", "--model", "emt", "--structure", str(structure),
            "--name", name, "--timestep-fs", "2", "--equilibrate-ps", "0", "--out", str(out), *extra]


def _groups(path):
    with h5py.File(path, "r") as f:
        return {n: (float(f[n].attrs["temperature_kelvin"]), int(f[n].attrs["seed"])) for n in f}


def test_overwrite_with_fewer_replicas_removes_the_earlier_set(tmp_path, cu_cif):
    out = tmp_path / "refv.h5"
    res = dynamat_cmd(*_generate_args(cu_cif, out, "CuV_300K", "--temperature", "300", "--time-ps", "0.04",
                                      "--replicas", "2", "--seed", "1"))
    assert res.returncode == 0, res.stderr
    assert _groups(out) == {"CuV_300K": (300.0, 1), "CuV_300K_r1": (300.0, 2)}
    res = dynamat_cmd(*_generate_args(cu_cif, out, "CuV_300K", "--temperature", "1200", "--time-ps", "0.04",
                                      "--seed", "3", "--overwrite"))
    assert res.returncode == 0, res.stderr
    assert "removing CuV_300K_r1" in res.stderr
    # the 300 K replica would otherwise set the noise floor of every score against the 1200 K system
    assert _groups(out) == {"CuV_300K": (1200.0, 3)}
    assert reference_replicas(out, "CuV_300K") == ["CuV_300K"]


def test_rerun_of_a_killed_replica_set_keeps_the_stored_replicas_and_resumes(tmp_path, cu_cif):
    out = tmp_path / "refr.h5"
    args = _generate_args(cu_cif, out, "CuR_300K", "--temperature", "300", "--time-ps", "1.2", "--replicas", "2",
                          "--seed", "11")
    proc = subprocess.Popen([str(BIN / "dynamat"), *args], start_new_session=True, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    # replica 0 is stored before replica 1 starts; kill the job past replica 1's first restart point (step 100)
    wait_for_step(tmp_path / "refr.h5.work" / "emt" / "CuR_300K_r1" / "simulation.out", 160, timeout=240)
    os.killpg(proc.pid, signal.SIGTERM)
    proc.wait(timeout=60)
    assert proc.returncode != 0
    assert list(_groups(out)) == ["CuR_300K"]  # replica 1 was not complete: not stored
    first = read_reference(out, "CuR_300K")
    # another request under the same name is still refused in one line, the file untouched
    before = out.read_bytes()
    other = dynamat_cmd(*_generate_args(cu_cif, out, "CuR_300K", "--temperature", "400", "--time-ps", "1.2",
                                        "--replicas", "2", "--seed", "11"))
    assert_one_line_error(other, "already holds CuR_300K", "temperature_kelvin", "--overwrite")
    assert out.read_bytes() == before
    res = dynamat_cmd(*args)
    assert res.returncode == 0, res.stderr
    assert "CuR_300K: already stored" in res.stderr and "keeping it" in res.stderr
    assert "resuming" in res.stderr  # replica 1 goes on from its restart point
    assert _groups(out) == {"CuR_300K": (300.0, 11), "CuR_300K_r1": (300.0, 12)}
    again, r1 = read_reference(out, "CuR_300K"), read_reference(out, "CuR_300K_r1")
    np.testing.assert_array_equal(again.positions, first.positions)  # kept, not rerun
    np.testing.assert_array_equal(r1.steps, first.steps)  # the whole production, every saved step once
    assert not np.allclose(r1.positions[-1], first.positions[-1], atol=1e-3)  # its own seed


def test_a_rerun_from_a_moved_project_keeps_the_stored_replicas(tmp_path, cu_cif):
    """The structure file's path (and the codes' versions) are not compared: a project folder moved, or CP2K
    answering `--version` differently on another node, refused the stored replicas and its advice
    (--overwrite) deleted them."""
    import shutil

    out = tmp_path / "refm.h5"
    args = ("--temperature", "300", "--time-ps", "0.04", "--seed", "1")
    assert dynamat_cmd(*_generate_args(cu_cif, out, "CuM_300K", *args)).returncode == 0
    moved = tmp_path / "moved" / "cu.cif"
    moved.parent.mkdir()
    shutil.copy(cu_cif, moved)
    before = read_reference(out, "CuM_300K").positions
    res = dynamat_cmd(*_generate_args(moved, out, "CuM_300K", *args, "--replicas", "2"))
    assert res.returncode == 0, res.stderr
    assert _groups(out) == {"CuM_300K": (300.0, 1), "CuM_300K_r1": (300.0, 2)}
    np.testing.assert_array_equal(read_reference(out, "CuM_300K").positions, before)  # kept, not run again
