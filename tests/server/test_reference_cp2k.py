"""``dynamat reference generate --engine cp2k``: i-PI drives CP2K through the same supervisor (issue 22 §2).

Tiny settings (8-atom Si, SZV basis, 100 Ry, Γ point, one OpenMP thread) so a run takes seconds; the
realistic input is in the README. The proof: the forces, stress and energy stored for a frame equal CP2K's
own ENERGY_FORCE single point on that frame, run directly with the same settings.
"""

import json
import os
import re
import shutil
import signal
import subprocess
from pathlib import Path

import ase
import ase.io
import numpy as np
import pytest
from ase import units
from ase.build import bulk

from dynamat.cp2k import render
from dynamat.io.reference_h5 import read_reference, reference_attrs
from dynamat.scoring.core import score_singlepoint
from dynamat.trajectory import voigt_to_full

from conftest import BIN, assert_one_line_error, dynamat_cmd, wait_for_step, wait_until

CP2K = shutil.which("cp2k.psmp") or shutil.which("cp2k")
needs_cp2k = pytest.mark.skipif(CP2K is None, reason="CP2K is not installed (apt-get install cp2k cp2k-data; "
                                "`make system-deps` does it as root)")

TINY = """&GLOBAL
  PROJECT cp2k
  RUN_TYPE DRIVER
  PRINT_LEVEL LOW
&END GLOBAL
&MOTION
  &DRIVER
    HOST ${DM_HOST}
    PORT 0
    UNIX
  &END DRIVER
&END MOTION
&FORCE_EVAL
  METHOD QS
  STRESS_TENSOR ANALYTICAL
  &DFT
    BASIS_SET_FILE_NAME BASIS_MOLOPT
    POTENTIAL_FILE_NAME GTH_POTENTIALS
    &MGRID
      CUTOFF 100
      REL_CUTOFF 20
    &END MGRID
    &SCF
      SCF_GUESS ATOMIC
      EPS_SCF 1.0E-8
      MAX_SCF 100
      &OT
        MINIMIZER DIIS
        PRECONDITIONER FULL_ALL
      &END OT
    &END SCF
    &XC
      &XC_FUNCTIONAL PBE
      &END XC_FUNCTIONAL
    &END XC
  &END DFT
  &SUBSYS
    &CELL
${DM_CELL}
    &END CELL
    &COORD
${DM_COORD}
    &END COORD
    &KIND Si
      BASIS_SET SZV-MOLOPT-SR-GTH
      POTENTIAL GTH-PBE-q4
    &END KIND
  &END SUBSYS
  &PRINT
    &FORCES ON
    &END FORCES
    &STRESS_TENSOR ON
    &END STRESS_TENSOR
  &END PRINT
&END FORCE_EVAL
"""
ARGS = ("--engine", "cp2k", "--name", "Si_600K", "--temperature", "600", "--timestep-fs", "1", "--stride", "2",
        "--equilibrate-ps", "0", "--seed", "3", "--class", "semiconductor")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    d = tmp_path_factory.mktemp("cp2k_inputs")
    atoms = bulk("Si", "diamond", a=5.43, cubic=True)
    atoms.positions += np.random.default_rng(1).normal(0.0, 0.03, atoms.positions.shape)  # off the lattice
    ase.io.write(d / "si8.extxyz", atoms, format="extxyz")
    (d / "tiny.inp").write_text(TINY)
    return d


def _cp2k_pids(run_dir: Path) -> list[int]:
    """The CP2K processes working in ``run_dir`` (the ones this test's run started)."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and Path(os.readlink(proc / "cwd")) == run_dir \
                    and b"cp2k" in (proc / "cmdline").read_bytes().split(b"\0")[0]:
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


@pytest.fixture(scope="module")
def generated(tmp_path_factory, inputs):
    """A 4-step CP2K reference whose CP2K is SIGKILLed once after step 2: the supervisor restarts it."""
    out = tmp_path_factory.mktemp("cp2k_ref") / "ref.h5"
    run_dir = out.parent / "ref.h5.work" / "cp2k" / "Si_600K"
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.Popen([str(BIN / "dynamat"), "reference", "generate", "--structure", str(inputs / "si8.extxyz"),
                             "--out", str(out), "--cp2k-input", str(inputs / "tiny.inp"), "--time-ps", "0.004", *ARGS],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_step(run_dir / "simulation.out", 2, timeout=300)
    for pid in wait_until(lambda: _cp2k_pids(run_dir), 30, "CP2K's process"):
        os.kill(pid, signal.SIGKILL)
    stdout, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr
    return out


@needs_cp2k
def test_stored_labels_equal_cp2k_single_point_on_the_frame(generated, tmp_path):
    ref = read_reference(generated, "Si_600K")
    assert list(ref.steps) == [0, 2, 4]  # no frame lost or repeated by the restart
    rec = json.loads((generated.parent / "ref.h5.work" / "cp2k" / "Si_600K" / "run.json").read_text())
    assert len(rec["restarts"]) == 1 and "CP2K" in rec["restarts"][0]["reason"]
    i = ref.n_frames - 1  # a frame after the restart
    text = _single_point(tmp_path, ref, i)
    np.testing.assert_allclose(ref.forces[i], parse_forces_eV_A(text), atol=1e-5, rtol=0)
    np.testing.assert_allclose(voigt_to_full(ref.stress[i]), parse_stress_eV_A3(text), atol=1e-6, rtol=0)
    # i-PI's Hartree differs from CODATA's by ~1e-7 relative: 1e-4 eV on this cell's ~840 eV
    assert ref.energies[i] == pytest.approx(parse_energy_eV(text), abs=3e-4)
    # the reference scored against itself: zero errors
    sp = score_singlepoint(ref.energies, ref.forces, ref.energies, ref.forces, ref.n_atoms)
    assert sp["energy_rmse_eV_per_atom"] == 0.0 and sp["force_rmse_eV_per_A"] == 0.0


def _single_point(tmp_path, ref, i) -> str:
    """CP2K's own ENERGY_FORCE printout on stored frame ``i`` (its positions and its cell)."""
    atoms = ase.Atoms(numbers=ref.numbers, positions=ref.positions[i], cell=ref.cells[i], pbc=True)
    (tmp_path / "sp.inp").write_text(render(TINY.replace("RUN_TYPE DRIVER", "RUN_TYPE ENERGY_FORCE"), atoms, "unused"))
    subprocess.run([CP2K, "-i", "sp.inp", "-o", "sp.out"], cwd=tmp_path, check=True, timeout=300,
                   env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True)
    return (tmp_path / "sp.out").read_text()


@needs_cp2k
def test_npt_reference_moves_the_cell_that_cp2k_computes_in(tmp_path, inputs):
    """--ensemble npt with CP2K: i-PI's barostat, fed CP2K's virial every step, moves the cell, and each
    stored frame's forces and stress are CP2K's on that frame's own cell: a CP2K that kept the first cell
    would give other forces on the last frame. 20 GPa and a 20 fs barostat are far from a production
    setting: they make the cell move within 4 steps."""
    out = tmp_path / "npt.h5"
    res = dynamat_cmd("reference", "generate", "--structure", str(inputs / "si8.extxyz"), "--out", str(out),
                      "--cp2k-input", str(inputs / "tiny.inp"), "--time-ps", "0.004", *ARGS,
                      "--ensemble", "npt", "--pressure-GPa", "20", "--barostat", "isotropic", "--tau-barostat-fs", "20")
    assert res.returncode == 0, res.stderr
    assert "under 5 barostat time constants (0.1 ps)" in res.stderr  # --equilibrate-ps 0: said, not refused
    ref = read_reference(out, "Si_600K")
    volumes = np.abs(np.linalg.det(ref.cells))
    p_int = -ref.stress[0, :3].mean() * units.GPa ** -1  # GPa, CP2K's at the start: ~16 (this tiny basis' Pulay stress)
    assert list(ref.steps) == [0, 2, 4] and p_int < 20.0
    assert volumes[1] < volumes[0] and len(set(volumes)) == 3  # squeezed first (20 GPa > P_int), then it swings
    text = _single_point(tmp_path, ref, ref.n_frames - 1)
    np.testing.assert_allclose(ref.forces[-1], parse_forces_eV_A(text), atol=1e-5, rtol=0)
    np.testing.assert_allclose(voigt_to_full(ref.stress[-1]), parse_stress_eV_A3(text), atol=1e-6, rtol=0)


@needs_cp2k
def test_provenance_names_code_settings_and_input(generated):
    a = reference_attrs(generated, "Si_600K")
    assert a["reference_code"] == "CP2K" and a["engine"] == "cp2k" and a["code_version"] != "unknown"
    assert (a["functional"], a["dispersion"], a["kpoints"]) == ("PBE", "none", "Gamma")
    assert a["basis"] == "SZV-MOLOPT-SR-GTH" and float(a["cutoff_Ry"]) == 100.0
    assert "RUN_TYPE DRIVER" in a["input_text"] and "Si " in a["input_text"]
    assert a["stress_unit"] == "eV/A^3" and a["dt_fs"] == 2.0


@needs_cp2k
def test_scf_that_does_not_converge_is_one_line(tmp_path, inputs):
    bad = tmp_path / "bad.inp"
    bad.write_text(TINY.replace("MAX_SCF 100", "MAX_SCF 2"))
    res = dynamat_cmd("reference", "generate", "--structure", str(inputs / "si8.extxyz"), "--out",
                      str(tmp_path / "ref.h5"), "--cp2k-input", str(bad), "--time-ps", "0.004", *ARGS)
    assert_one_line_error(res, "SCF did not converge", "MAX_SCF", code=None, after_progress=True)
    assert not (tmp_path / "ref.h5").exists()


def test_missing_cp2k_says_how_to_install_it(tmp_path, inputs):
    env_before = os.environ.get("DYNAMAT_CP2K")
    os.environ["DYNAMAT_CP2K"] = str(tmp_path / "no-such-cp2k")
    try:
        res = dynamat_cmd("reference", "generate", "--structure", str(inputs / "si8.extxyz"), "--out",
                          str(tmp_path / "ref.h5"), "--time-ps", "0.004", *ARGS)
    finally:
        if env_before is None:
            del os.environ["DYNAMAT_CP2K"]
        else:
            os.environ["DYNAMAT_CP2K"] = env_before
    assert_one_line_error(res, "apt-get install cp2k")
    assert list(tmp_path.iterdir()) == []


def test_template_without_the_socket_host_is_refused(tmp_path, inputs):
    bad = tmp_path / "bad.inp"
    bad.write_text(TINY.replace("${DM_HOST}", "myhost"))
    res = dynamat_cmd("reference", "generate", "--structure", str(inputs / "si8.extxyz"), "--out",
                      str(tmp_path / "ref.h5"), "--cp2k-input", str(bad), "--time-ps", "0.004", *ARGS)
    assert_one_line_error(res, "DM_HOST")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.inp"]


def test_npt_with_a_template_without_stress_is_refused(tmp_path, inputs):
    """i-PI's barostat reads the virial CP2K sends every step: a template that computes no stress would send
    zeros, and the cell would collapse; the default template (analytical stress) passes this check."""
    bad = tmp_path / "nostress.inp"
    bad.write_text("\n".join(ln for ln in TINY.splitlines() if "STRESS_TENSOR" not in ln))
    res = dynamat_cmd("reference", "generate", "--structure", str(inputs / "si8.extxyz"), "--out",
                      str(tmp_path / "ref.h5"), "--cp2k-input", str(bad), "--time-ps", "0.004", *ARGS,
                      "--ensemble", "npt", "--pressure-GPa", "0")
    assert_one_line_error(res, "STRESS_TENSOR ANALYTICAL", "--ensemble npt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nostress.inp"]
    from dynamat.cp2k import Cp2kClient

    Cp2kClient(bulk("Si", "diamond", a=5.43), "semiconductor", needs_stress=True)  # the default template has it
    Cp2kClient(bulk("Si", "diamond", a=5.43), "semiconductor", template=bad)  # NVT needs no stress from CP2K


# CP2K's own printout of a single point, read here only: the independent side of the comparison above
def parse_forces_eV_A(text: str) -> np.ndarray:
    """The last ``ATOMIC FORCES in [a.u.]`` block of a CP2K output, in eV/Å."""
    blocks = text.split("ATOMIC FORCES in [a.u.]")
    if len(blocks) < 2:
        raise AssertionError("no ATOMIC FORCES block in the CP2K output")
    rows = []
    for line in blocks[-1].splitlines()[3:]:
        parts = line.split()
        if len(parts) != 6 or not parts[0].isdigit():
            break
        rows.append([float(x) for x in parts[3:]])
    return np.array(rows) * (units.Hartree / units.Bohr)


def parse_stress_eV_A3(text: str) -> np.ndarray:
    """The last analytical stress tensor of a CP2K output as ASE's 3×3 stress in eV/Å³ (CP2K prints it in
    GPa with positive = compressive, ASE's sign is the opposite)."""
    at = text.rfind("Analytical stress tensor [GPa]")
    if at < 0:
        raise AssertionError("no analytical stress tensor in the CP2K output")
    lines = text[at:].splitlines()[2:5]
    s = np.array([[float(x) for x in ln.split()[2:5]] for ln in lines])
    return -s * units.GPa


def parse_energy_eV(text: str) -> float:
    """The last ``ENERGY| Total FORCE_EVAL`` of a CP2K output, in eV."""
    m = re.findall(r"ENERGY\| Total FORCE_EVAL \( QS \) energy \[a\.u\.\]:\s+(\S+)", text)
    if not m:
        raise AssertionError("no total energy in the CP2K output")
    return float(m[-1]) * units.Hartree
