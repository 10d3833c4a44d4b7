"""A reference system reads only its own data: HDF5 links and virtual datasets that make one group
hand out another file's or another system's frames are refused, in one line, by every command that
reads a reference (they share one reader); a plain file in the published layout is still read.

The case from the issue: a copper group whose ``positions`` came from Cu3Au ran, scored and listed
silently (E_RDF 44 % instead of 8.6 %)."""

import h5py
import numpy as np
import pytest
from ase import Atoms
from ase.io import write
from published_layout import write_published_file

from conftest import dynamat_cmd
from dynamat.errors import ReferenceFormatError
from dynamat.io.reference_h5 import list_systems, read_reference, reference_attrs

CU = "bulkCu_300K-Artrith_VASP"
CUAU = "bulkCuAu_500K-Artrith_VASP"  # 32 atoms as well: its positions fit the copper group's shape


def _external(path, other):
    with h5py.File(path, "a") as f:
        del f[CU]["positions"]
        f[CU]["positions"] = h5py.ExternalLink(str(other), f"/{CUAU}/positions")
    return f"external link to {other}:/{CUAU}/positions"


def _soft(path, other):
    with h5py.File(path, "a") as f:
        del f[CU]["positions"]
        f[CU]["positions"] = h5py.SoftLink(f"/{CUAU}/positions")
    return f"soft link to /{CUAU}/positions"


def _hard(path, other):
    with h5py.File(path, "a") as f:
        del f[CU]["positions"]
        f[CU]["positions"] = f[CUAU]["positions"]
    return "dataset 'positions' is a hard link shared with /"  # named from either side: one object


def _virtual(path, other):
    with h5py.File(other, "r") as src:
        shape, dtype = src[CUAU]["positions"].shape, src[CUAU]["positions"].dtype
    with h5py.File(path, "a") as f:
        del f[CU]["positions"]
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[:] = h5py.VirtualSource(str(other), f"/{CUAU}/positions", shape=shape)
        f[CU].create_virtual_dataset("positions", layout)
    return f"virtual dataset mapping {other}:/{CUAU}/positions"


def _virtual_in_file(path, other):
    with h5py.File(path, "a") as f:
        shape, dtype = f[CUAU]["positions"].shape, f[CUAU]["positions"].dtype
        del f[CU]["positions"]
        layout = h5py.VirtualLayout(shape=shape, dtype=dtype)
        layout[:] = h5py.VirtualSource(".", f"/{CUAU}/positions", shape=shape)
        f[CU].create_virtual_dataset("positions", layout)
    return f"virtual dataset mapping /{CUAU}/positions"


def _raw_file(path, other):
    """HDF5 external storage: the dataset's bytes live in a plain file beside the reference."""
    with h5py.File(other, "r") as src:
        data = src[CUAU]["positions"][()]
    raw = path.with_suffix(".raw")
    raw.write_bytes(data.astype("<f8").tobytes())
    with h5py.File(path, "a") as f:
        del f[CU]["positions"]
        f[CU].create_dataset("positions", shape=data.shape, dtype="<f8", external=[(str(raw), 0, data.nbytes)])
    return f"keeps its data in the external file {raw}"


def _group_soft(path, other):
    with h5py.File(path, "a") as f:
        del f[CU]
        f[CU] = h5py.SoftLink(f"/{CUAU}")
    return f"is a soft link to /{CUAU}"


BORROWS = {"external": _external, "soft": _soft, "hard": _hard, "virtual": _virtual, "virtual-in-file": _virtual_in_file,
           "raw-file": _raw_file,
           "group-soft": _group_soft}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A plain published-layout file, a second one (the 'other file'), a trajectory of the plain copper."""
    root = tmp_path_factory.mktemp("links")
    plain = write_published_file(root / "plain.h5", names=[CU, CUAU], n_frames=40)
    other = write_published_file(root / "other.h5", names=[CUAU], n_frames=40, seed=7)
    traj = read_reference(plain, CU)
    frames = [Atoms(numbers=traj.numbers, positions=p, cell=traj.cells[k], pbc=True)
              for k, p in enumerate(traj.positions)]
    write(root / "cu.extxyz", frames, format="extxyz")
    return root, plain, other


def _borrowing_file(files, kind, name):
    root, plain, other = files
    path = root / f"{name}.h5"
    path.write_bytes(plain.read_bytes())
    needle = BORROWS[kind](path, other)
    return path, needle


def _refused(res, path, needle):
    assert res.returncode == 2, (res.returncode, res.stdout, res.stderr)
    err = res.stderr.strip()
    assert len(err.splitlines()) == 1 and err.startswith("dynamat: error:"), err
    assert str(path) in err and "system '" in err and CU in err and needle in err, err


@pytest.mark.parametrize("kind", sorted(BORROWS))
def test_the_reader_refuses_borrowed_data(files, kind):
    path, needle = _borrowing_file(files, kind, f"reader_{kind}")
    # the linked data do read through plain h5py: without the check they would be used
    with h5py.File(path, "r") as f:
        assert f[CU]["positions"].shape[1] == 32
    for read in (lambda: read_reference(path, CU), lambda: reference_attrs(path, CU), lambda: list_systems(path)):
        with pytest.raises(ReferenceFormatError, match="must hold its own data") as exc:
            read()
        assert str(path) in str(exc.value) and CU in str(exc.value) and needle in str(exc.value)
    # the system whose data is borrowed is not to blame, except for a hard link, which is one object
    # under two names and belongs to neither alone
    if kind == "hard":
        with pytest.raises(ReferenceFormatError, match=f"shared with /{CU}/positions"):
            read_reference(path, CUAU)
    elif kind != "group-soft":
        assert read_reference(path, CUAU).n_frames == 40


@pytest.mark.parametrize("kind", sorted(BORROWS))
def test_every_command_refuses_borrowed_data(files, kind, tmp_path):
    root, _, _ = files
    path, needle = _borrowing_file(files, kind, f"cli_{kind}")
    _refused(dynamat_cmd("systems", "--reference", str(path)), path, needle)
    _refused(dynamat_cmd("score", "--system", CU, "--reference", str(path),
                         "--trajectory", str(root / "cu.extxyz"), "--dt-fs", "2"), path, needle)
    out = tmp_path / "runs"
    _refused(dynamat_cmd("run", "--model", "emt", "--system", CU, "--reference", str(path), "--steps", "2",
                         "--out", str(out)), path, needle)
    assert not list(out.rglob("init.xyz"))  # nothing ran from the other system's frames


def test_a_plain_file_and_links_inside_a_system_are_read(files, tmp_path):
    root, plain, _ = files
    res = dynamat_cmd("systems", "--reference", str(plain))
    assert res.returncode == 0, res.stderr
    assert CU in res.stdout and CUAU in res.stdout
    res = dynamat_cmd("score", "--system", CU, "--reference", str(plain),
                      "--trajectory", str(root / "cu.extxyz"), "--dt-fs", "2")
    assert res.returncode == 0, res.stderr
    res = dynamat_cmd("inputs", "--system", CU, "--reference", str(plain), "--out", str(tmp_path / "in"))
    assert res.returncode == 0, res.stderr
    # a link that stays inside its own group names the system's own data: accepted
    path = tmp_path / "inside.h5"
    path.write_bytes(plain.read_bytes())
    with h5py.File(path, "a") as f:
        f[CU]["positions_alias"] = h5py.SoftLink("positions")
        f[CU]["cell_alias"] = f[CU]["cell"]
    assert list_systems(path) == sorted([CU, CUAU])
    np.testing.assert_array_equal(read_reference(path, CU).positions, read_reference(plain, CU).positions)
