"""``reference generate --structure``: a structure the MD cannot start from (non-finite positions or cell,
a file ASE cannot read) is refused in one line naming the file, before any MD or folder."""

import ase.build
import ase.io
import numpy as np

from conftest import assert_one_line_error, dynamat_cmd


def _generate_args(structure, out, name, *extra):
    return ["reference", "generate", "--engine", "driver", "--model", "emt", "--structure", str(structure),
            "--name", name, "--timestep-fs", "2", "--equilibrate-ps", "0", "--out", str(out), *extra]


def test_structure_the_md_cannot_start_from_is_refused_before_any_md(tmp_path):
    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.positions[3, 1] = np.nan
    ase.io.write(tmp_path / "nan.extxyz", atoms, format="extxyz")
    res = dynamat_cmd(*_generate_args(tmp_path / "nan.extxyz", tmp_path / "ref.h5", "CuN_300K", "--temperature",
                                      "300", "--time-ps", "0.02"))
    assert_one_line_error(res, "nan.extxyz", "non-finite positions", "atom 3")
    atoms = ase.build.bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    atoms.cell[0, 0] = np.inf
    ase.io.write(tmp_path / "infcell.extxyz", atoms, format="extxyz")
    res = dynamat_cmd(*_generate_args(tmp_path / "infcell.extxyz", tmp_path / "ref.h5", "CuN_300K",
                                      "--temperature", "300", "--time-ps", "0.02"))
    assert_one_line_error(res, "infcell.extxyz", "cell", "non-finite")
    (tmp_path / "junk.cif").write_text("this is junk\n")
    res = dynamat_cmd(*_generate_args(tmp_path / "junk.cif", tmp_path / "ref.h5", "CuN_300K", "--temperature",
                                      "300", "--time-ps", "0.02"))
    line = assert_one_line_error(res, "cannot read a structure from", "junk.cif", "not a structure file ASE can "
                                 "read as cif")
    assert not line.rstrip().endswith(":")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["infcell.extxyz", "junk.cif", "nan.extxyz"]
