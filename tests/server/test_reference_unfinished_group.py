"""A reference file with a writer's unfinished group reads as if the group were not there.

``dynamat reference generate`` stores a replica under ``.<name>.tmp`` and renames it when complete;
a kill in between leaves the hidden group behind, either half written (no attributes yet) or whole
but still saying ``replica_of = <name>``, ``replica_index = 0``. Neither may be listed as a system,
claim to be a replica (which the replica check would refuse, refusing the file) or spoil the file's check."""

import json
import shutil

import h5py

from conftest import dynamat_cmd
from dynamat.io.reference_h5 import check_reference_file, list_systems, read_reference, reference_replicas
from dynamat.reference import default_reference

CU = "bulkCu_300K-demo_EMT"


def _with_leftovers(tmp_path):
    path = tmp_path / "ref.h5"
    shutil.copy(default_reference(), path)
    with h5py.File(path, "a") as f:
        f.copy(f[CU], f, name=f".{CU}.tmp")  # killed after the last frame, before the rename
        f[f".{CU}.tmp"].attrs.update(replica_of=CU, replica_index=0)
        half = f.create_group(f".{CU}_r1.tmp")  # killed while writing frames: no attributes yet
        half["positions"] = f[CU]["positions"][:3]
    return path


def test_readers_skip_a_writers_unfinished_groups(tmp_path):
    path = _with_leftovers(tmp_path)
    systems = list_systems(default_reference())
    assert list_systems(path) == systems and check_reference_file(path) == systems
    assert reference_replicas(path, CU) == [CU]
    assert (read_reference(path, CU).positions == read_reference(default_reference(), CU).positions).all()
    res = dynamat_cmd("systems", "--reference", str(path), "--json")
    assert res.returncode == 0, res.stderr
    assert [d["name"] for d in json.loads(res.stdout)] == systems
