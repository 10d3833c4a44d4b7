"""NPT through i-PI's barostats: the run, its cell and stress, EMT's lattice constant, and the volume scores.

Six real runs, started together (about 60 s on 2 shared cores): EMT copper at 50 K from its own zero-pressure
lattice constant (the equation-of-state proof), and on the demo system at 300 K two EMT seeds, LJ and an NPT
reference generated with EMT (``dynamat reference generate --engine driver``), all at 0 GPa with the isotropic
barostat, and a short EMT run with the flexible one.
"""

from __future__ import annotations

import html
import json
import re
import subprocess
from dataclasses import replace
from pathlib import Path

import ase.io
import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.eos import EquationOfState
from ase.units import GPa, Bohr, Hartree, kB

from conftest import BIN, DEMO, assert_one_line_error, dynamat_cmd
from dynamat.catalogue import ENSEMBLE_KNOBS
from dynamat.engines.ipi import _stress_plan
from dynamat.engines.ipi_input import MDSettings
from dynamat.io.ipi_output import read_properties
from dynamat.io.reference_h5 import read_reference, reference_attrs
from dynamat.io.run_folder import read_run_trajectory
from dynamat.layout import RunFolder
from dynamat.metrics.uncertainty import block_bootstrap_mean_se
from dynamat.metrics.volume import lattice_parameters, volumes_A3
from dynamat.reference import initial_atoms
from dynamat.runner import RunOptions, supervise
from dynamat.units import EV_PER_A3_TO_GPA

SYSTEM = "bulkCu_300K-demo_EMT"
NPT = ["--ensemble", "npt", "--pressure-GPa", "0", "--tau-barostat-fs", "100", "--timestep-fs", "2"]
STEPS = 700  # 1.4 ps; the first 5 x 100 fs are the burn-in
FLEX_STEPS = 300  # the flexible barostat's short run
BURN_IN = 250  # steps of 2 fs: the generated reference's equilibration (0.5 ps), then 0.9 ps stored
EOS_STEPS = 1200  # 2.4 ps at 50 K


def _static_eos(atoms):
    """EMT's zero-pressure volume (Å³) and bulk modulus (eV/Å³) of ``atoms`` from a Birch-Murnaghan fit."""
    vols, energies = [], []
    for s in np.linspace(0.98, 1.02, 9):
        a = atoms.copy()
        a.set_cell(atoms.cell * s, scale_atoms=True)
        a.calc = EMT()
        vols.append(a.get_volume())
        energies.append(a.get_potential_energy())
    v0, _, b0 = EquationOfState(vols, energies, eos="birchmurnaghan").fit()
    return v0, b0


def _log_det_hessian(atoms) -> float:
    """Σ ln λ over the non-zero eigenvalues of EMT's Hessian (central differences of the forces, 5 mÅ)."""
    a = atoms.copy()
    a.calc = EMT()
    x0, h = a.positions.copy(), 0.005
    hess = np.zeros((3 * len(a), 3 * len(a)))
    for j in range(3 * len(a)):
        f = []
        for sign in (1, -1):
            x = x0.copy()
            x.flat[j] += sign * h
            a.positions = x
            f.append(a.get_forces().ravel())
        hess[:, j] = -(f[0] - f[1]) / (2 * h)
    lam = np.linalg.eigvalsh(0.5 * (hess + hess.T))
    return float(np.log(lam[3:]).sum())  # the three translations are zero modes


def _quasi_harmonic_expansion(atoms, v0: float, b0: float, temperature_K: float) -> float:
    """Classical quasi-harmonic Δa/a: the thermal pressure P_th = (3N−3) k T γ̄ / V, with γ̄ = −d ln ω̄/d ln V
    (geometric mean frequency, from the Hessian at ±1 % volume), expands the crystal by ΔV/V = P_th / B."""
    lds = []
    for f in (0.99, 1.01):
        a = atoms.copy()
        a.set_cell(atoms.cell * f ** (1 / 3), scale_atoms=True)
        lds.append(_log_det_hessian(a))
    dof = 3 * len(atoms) - 3
    gamma = -0.5 * (lds[1] - lds[0]) / np.log(1.01 / 0.99) / dof
    return dof * kB * temperature_K * gamma / (v0 * b0) / 3.0


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """The three demo-system runs (as a user starts them) and, meanwhile, the 50 K EOS run (library call)."""
    root = tmp_path_factory.mktemp("npt")
    procs = {}
    for name, model, seed in (("emt1", "emt", 1), ("emt2", "emt", 2), ("lj", "lj", 1)):
        cmd = [str(BIN / "dynamat"), "run", "--model", model, "--system", SYSTEM, "--steps", str(STEPS),
               "--out", str(root / name), "--seed", str(seed), *NPT]
        procs[name] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    # the NPT reference, generated with emt1's seed and protocol from the demo's first frame
    ase.io.write(root / "start.extxyz", initial_atoms(DEMO, SYSTEM), format="extxyz")
    cmd = [str(BIN / "dynamat"), "reference", "generate", "--engine", "driver", "--model", "emt", "--structure",
           str(root / "start.extxyz"), "--name", SYSTEM, "--temperature", "300", "--seed", "1",
           "--equilibrate-ps", str(BURN_IN * 2 / 1000), "--time-ps", str((STEPS - BURN_IN) * 2 / 1000),
           "--out", str(root / "generated.h5"), *NPT]
    procs["generated"] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cmd = [str(BIN / "dynamat"), "run", "--model", "emt", "--system", SYSTEM, "--steps", str(FLEX_STEPS),
           "--out", str(root / "flex"), "--seed", "3", *NPT, "--barostat", "flexible"]
    procs["flex"] = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)  # 32 atoms
    v0, b0 = _static_eos(cu)
    start = cu.copy()
    start.set_cell(cu.cell * (v0 / cu.get_volume()) ** (1 / 3), scale_atoms=True)
    settings = MDSettings(thermostat="svr", timestep_fs=2.0, tau_fs=100.0, stride=10, steps=EOS_STEPS,
                          temperature_K=50.0, seed=7, ensemble="npt", pressure_GPa=0.0, barostat="isotropic",
                          tau_barostat_fs=200.0)
    eos_dir = root / "eos"
    supervise("emt", start, settings, eos_dir, RunOptions())
    out = {"eos": eos_dir, "eos_fit": (start, v0, b0), "root": root}
    for name, p in procs.items():
        _, err = p.communicate(timeout=600)
        assert p.returncode == 0, err
        assert "barostat time constants" not in err  # the generated reference equilibrates 5 τ_barostat
        out[name] = root / name / ("lj" if name == "lj" else "emt") / SYSTEM
    out["generated"] = root / "generated.h5"
    return out


def test_npt_run_moves_the_cell_with_stress_every_step(runs):
    run = runs["emt1"]
    xml = RunFolder(run).input_xml.read_text()
    assert "<dynamics mode='npt'>" in xml and "<barostat mode='isotropic'>" in xml
    rec = json.loads(RunFolder(run).run_json.read_text())
    assert rec["status"] == "completed"
    assert {k: rec["protocol"][k] for k in ("ensemble", "pressure_GPa", "barostat", "tau_barostat_fs")} == {
        "ensemble": "npt", "pressure_GPa": 0.0, "barostat": "isotropic", "tau_barostat_fs": 100.0}
    assert rec["protocol"]["burn_in_ps"] == pytest.approx(0.5)
    # the driver was given no stress schedule: the model's stress on every request (the barostat reads it)
    timing = json.loads(RunFolder(run).driver_timing_json("").read_text())
    assert timing["stress"] == {"policy": "model stress on every request"}
    assert timing["n_evaluations_with_stress"] == timing["n_evaluations"] == STEPS + 1  # step 0, then one a step
    npt = MDSettings("svr", 2.0, 100.0, 10, 100, 300.0, ensemble="npt", pressure_GPa=0.0, tau_barostat_fs=100.0)
    nvt = MDSettings("svr", 2.0, 100.0, 10, 100, 300.0)
    assert _stress_plan("", npt, RunOptions(), 1) == {}
    assert _stress_plan("", nvt, RunOptions(), 1)["stress_stride"] == 10
    # the reader's per-frame cells are i-PI's: their volumes are i-PI's own volume column, and they move
    traj = read_run_trajectory(run)
    props = read_properties(RunFolder(run).properties)
    vol = props["volume{angstrom3}"][np.isin(props["step"].astype(int), traj.steps)]
    np.testing.assert_allclose(np.abs(np.linalg.det(traj.cells)), vol, atol=1e-4)
    assert np.ptp(vol) > 1.0 and np.isfinite(traj.stress).all()


def test_flexible_barostat_moves_the_cell_shape_consistently_with_ipi_volume(runs):
    """The flexible barostat (all cell components) shears the cubic cell: the angles leave 90° (the isotropic
    run's stay at 90° exactly), i-PI keeps its cell upper triangular, and the determinant of every saved
    cell is i-PI's own volume column on that step."""
    run = runs["flex"]
    assert "<barostat mode='flexible'>" in RunFolder(run).input_xml.read_text()
    assert json.loads(RunFolder(run).run_json.read_text())["protocol"]["barostat"] == "flexible"
    traj, iso = read_run_trajectory(run), read_run_trajectory(runs["emt1"])
    assert traj.n_frames == FLEX_STEPS // 10 + 1
    props = read_properties(RunFolder(run).properties)
    vol = props["volume{angstrom3}"][np.isin(props["step"].astype(int), traj.steps)]
    np.testing.assert_allclose(np.abs(np.linalg.det(traj.cells)), vol, atol=1e-4)
    assert np.ptp(vol) > 1.0
    angles, iso_angles = lattice_parameters(traj.cells)[:, 3:], lattice_parameters(iso.cells)[:, 3:]
    assert np.abs(angles[0] - 90.0).max() < 1e-6 and np.abs(angles[-1] - 90.0).max() > 0.01  # sheared from cubic
    np.testing.assert_allclose(iso_angles, 90.0, atol=1e-6)
    lengths = lattice_parameters(traj.cells)[-1, :3]
    assert np.ptp(lengths) > 1e-4  # the three lengths move separately (isotropic scaling keeps them equal)
    np.testing.assert_array_equal(traj.cells[:, [0, 0, 1], [1, 2, 2]], 0.0)  # i-PI's h is upper triangular: a along x, b in xy


def test_resume_with_other_ensemble_arguments_is_refused(runs, tmp_path):
    run = runs["emt1"]
    before = RunFolder(run).run_json.read_bytes()
    base = ["run", "--model", "emt", "--system", SYSTEM, "--steps", str(STEPS + 100), "--out", str(run.parents[1]),
            "--seed", "1", "--timestep-fs", "2"]
    other_p = dynamat_cmd(*base, "--ensemble", "npt", "--pressure-GPa", "1", "--tau-barostat-fs", "100")
    assert_one_line_error(other_p, "--pressure-GPa 0", "--pressure-GPa 1")
    as_nvt = dynamat_cmd(*base)
    assert_one_line_error(as_nvt, "--ensemble npt", "--ensemble nvt")
    assert RunFolder(run).run_json.read_bytes() == before
    bad = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--out", str(tmp_path / "x"), "--pressure-GPa", "1")
    assert_one_line_error(bad, "only matters with --ensemble npt")
    bad = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--out", str(tmp_path / "x"), "--ensemble", "npt")
    assert_one_line_error(bad, "needs --pressure-GPa")
    assert not (tmp_path / "x").exists()


def test_emt_copper_at_50K_and_0GPa_gives_the_eos_lattice_constant_plus_thermal_expansion(runs):
    """a_MD = a_EOS (1 + Δa/a) within 3 standard errors, Δa/a the classical quasi-harmonic expansion at 50 K
    (0.095 %, 3.4 mÅ: 28 standard errors, so a run that ignored the barostat or the temperature fails)."""
    start, v0, b0 = runs["eos_fit"]
    a_eos = (v0 / 8) ** (1 / 3)  # 2 x 2 x 2 conventional cells
    traj = read_run_trajectory(runs["eos"])
    keep = traj.steps >= EOS_STEPS // 5  # 0.48 ps = 2.4 barostat time constants of equilibration
    a_md = lattice_parameters(traj.cells[keep])[:, :3].mean(axis=1) / 2
    se = block_bootstrap_mean_se(a_md)
    expansion = _quasi_harmonic_expansion(start, v0, b0, 50.0)
    assert 5e-4 < expansion < 2e-3  # Cu's α_L ~ 1.7e-5/K: the order of 50 K x α
    assert abs(a_md.mean() - a_eos * (1 + expansion)) < 3 * se
    assert abs(a_md.mean() - a_eos) > 5 * se  # the expansion is resolved, not hidden in the noise


def test_the_pressure_an_npt_trajectory_was_held_at_is_read_from_its_frames(runs, tmp_path):
    """An NPT trajectory made elsewhere (ASE, LAMMPS, VASP ISIF=3) stores no barostat: its frames' mean instantaneous
    pressure, configurational (Eq. 5) plus N k_B T / V, is the pressure it was held at. The 50 K EMT run at 0 GPa,
    stored without its barostat, gives 0 within 3 standard errors, where the configurational mean alone is off by
    more than 2; ``dynamat systems`` and a fixed-cell run's start line offer it as --pressure-GPa. An ideal gas
    (no stress) gives N k_B T / V exactly."""
    from dynamat.io.reference_h5 import write_reference
    from dynamat.metrics.pressure import instantaneous_pressure_GPa
    from dynamat.reference import load_system

    ideal = instantaneous_pressure_GPa(np.zeros((2, 6)), [1000.0, 2000.0], 100, 300.0)
    np.testing.assert_allclose(ideal, [100 * kB * 300 / 1000 / GPa, 100 * kB * 300 / 2000 / GPa], rtol=1e-4)

    t = read_run_trajectory(runs["eos"])
    t = t[np.flatnonzero(t.steps >= EOS_STEPS // 5)]
    name = "Cu_50K-ase_npt"  # a trajectory of the user's own
    t.name, t.temperature_K = name, 50.0
    ref_h5 = tmp_path / "ase_npt.h5"
    write_reference(ref_h5, t)
    _, entry, attrs = load_system(ref_h5, name)
    assert "pressure_GPa" not in attrs and entry.protocol.ensemble == "nvt"
    got = entry.start_cell
    p, se = got["reference_pressure_GPa"], got["reference_pressure_se_GPa"]
    assert abs(p) < 3 * se and 0.005 < se < 0.05
    conf = -t.stress[:, :3].mean() * EV_PER_A3_TO_GPA
    assert abs(conf) > 2 * se  # without the kinetic term (0.06 GPa here) the pressure is missed
    assert got["reference_pressure_source"] == f"mean instantaneous pressure of its {t.n_frames} stress-labelled frames (Eq. 5 + N k_B T/V)"
    listed = dynamat_cmd("systems", "--reference", str(ref_h5)).stdout
    assert f"its frames' mean pressure {p:.3g} ± {se:.2g} GPa (--ensemble npt --pressure-GPa that" in listed
    res = dynamat_cmd("run", "--model", "emt", "--system", name, "--reference", str(ref_h5), "--steps", "1",
                      "--out", str(tmp_path / "fixed"))
    assert res.returncode == 0, res.stderr
    assert f"--ensemble npt --pressure-GPa {p:.3g} runs its ensemble (its frames' mean pressure, ± {se:.2g} GPa)" in res.stderr


def test_generated_npt_reference_stores_the_frames_of_dynamat_run_with_their_cells(runs):
    """``reference generate --ensemble npt`` with the run's seed and protocol stores exactly the run's frames after
    the equilibration (positions and cells bit-identical), the cell of each frame, and the ensemble's provenance."""
    got, run = read_reference(runs["generated"], SYSTEM), read_run_trajectory(runs["emt1"])
    keep = run.steps >= BURN_IN
    assert got.n_frames == keep.sum() == (STEPS - BURN_IN) // 10 + 1
    np.testing.assert_array_equal(got.steps, run.steps[keep] - BURN_IN)
    np.testing.assert_array_equal(got.positions, run.positions[keep])
    np.testing.assert_array_equal(got.cells, run.cells[keep])
    np.testing.assert_array_equal(got.stress, run.stress[keep])
    assert np.ptp(volumes_A3(got.cells)) > 1.0  # the barostat moved the stored cells
    attrs = reference_attrs(runs["generated"], SYSTEM)
    assert {k: attrs[k] for k in ("ensemble", "pressure_GPa", "barostat", "tau_barostat_fs")} == {
        "ensemble": "npt", "pressure_GPa": 0.0, "barostat": "isotropic", "tau_barostat_fs": 100.0}
    rec = json.loads(RunFolder(runs["generated"].parent / "generated.h5.work" / "emt" / SYSTEM).run_json.read_text())
    assert rec["protocol"]["ensemble"] == "npt"
    timing = json.loads(RunFolder(runs["generated"].parent / "generated.h5.work" / "emt" / SYSTEM)
                        .driver_timing_json("").read_text())
    assert timing["n_evaluations_with_stress"] == timing["n_evaluations"] == STEPS + 1  # the barostat's every step


def test_a_fixed_cell_run_against_an_npt_reference_starts_in_its_mean_cell(runs, tmp_path):
    """A fixed-cell run (--ensemble nvt) against an NPT reference starts in the reference's mean cell, its start frame scaled
    into it, so its pressure is the reference's: EMT from the frame furthest from the mean volume gives the
    reference's mean pressure within 3 standard errors, where that frame's own cell would be off by B ΔV/V (the
    premise: beyond twice that bound). A fixed-cell reference's start frame is kept bit for bit."""
    ref_h5 = runs["generated"]
    ref = read_reference(ref_h5, SYSTEM)
    vols = volumes_A3(ref.cells)
    k = int(np.argmax(np.abs(vols - vols.mean())))
    start = initial_atoms(ref_h5, SYSTEM, k)
    np.testing.assert_allclose(start.cell.array, ref.cells.mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(start.get_scaled_positions(wrap=False),
                               ref.positions[k] @ np.linalg.inv(ref.cells[k]), atol=1e-12)
    listed = dynamat_cmd("systems", "--reference", str(ref_h5), "--json")
    np.testing.assert_allclose(json.loads(listed.stdout)[0]["start_cell"]["cell_A"], ref.cells.mean(axis=0), atol=1e-12)
    fixed, got = read_reference(DEMO, SYSTEM, frames=slice(3, 4)), initial_atoms(DEMO, SYSTEM, 3)
    assert np.array_equal(got.positions, fixed.positions[0]) and np.array_equal(got.cell.array, fixed.cells[0])

    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--reference", str(ref_h5), "--start-frame",
                      str(k), "--steps", "400", "--timestep-fs", "2", "--seed", "5", "--out", str(tmp_path),
                      "--ensemble", "nvt")  # without it, a run follows the reference's NPT (test below)
    assert res.returncode == 0, res.stderr
    assert "in the reference's mean cell" in res.stderr and "--ensemble npt --pressure-GPa 0 runs its" in res.stderr
    run_dir = tmp_path / "emt" / SYSTEM
    info = json.loads(RunFolder(run_dir).run_json.read_text())["system_info"]
    assert info["start_frame"] == k and info["start_cell"]["volume_A3"] == pytest.approx(
        abs(np.linalg.det(ref.cells.mean(axis=0))), rel=1e-12)
    run = read_run_trajectory(run_dir)
    np.testing.assert_allclose(run.cells[0], ref.cells.mean(axis=0), atol=1e-6)
    p_run = -run.stress[run.steps >= 50, :3].mean(axis=1) * EV_PER_A3_TO_GPA  # 100 fs to settle in the new cell
    p_ref = -ref.stress[:, :3].mean(axis=1) * EV_PER_A3_TO_GPA
    bound = 3 * np.hypot(block_bootstrap_mean_se(p_run), block_bootstrap_mean_se(p_ref))
    assert abs(p_run.mean() - p_ref.mean()) < bound
    _, _, b0 = runs["eos_fit"]
    offset = b0 * EV_PER_A3_TO_GPA * abs(vols[k] / vols.mean() - 1)  # the frame's own cell: B ΔV/V
    assert offset > 2 * bound, (offset, bound)
    scored = dynamat_cmd("score", "--reference", str(ref_h5), "--system", SYSTEM, "--run", str(run_dir))
    assert scored.returncode == 0, scored.stderr
    assert any("the distribution (Eq. 9) two ensembles" in n
               for n in json.loads(RunFolder(run_dir).score_json.read_text())["notes"])
    assert "two ensembles" in scored.stdout + scored.stderr


def test_runs_and_campaigns_against_an_npt_reference_take_its_ensemble(runs, tmp_path):
    """A reference stored with its barostat (as ``reference generate --ensemble npt`` and the import of an i-PI NPT
    run store it) is run in that ensemble without being told: ``dynamat systems`` says so and where from, a
    campaign's run is NPT at the file's pressure, barostat and time constant, and a rerun of the campaign finds
    that run to be the one asked for (skipped, not kept as another ensemble's). ``--ensemble nvt`` is the way to
    a fixed cell, and what cannot run NPT (the ASE engine) says so in one line, naming it."""
    from dynamat.io.reference_h5 import write_reference
    from test_campaign import campaign

    ref_h5 = tmp_path / "npt.h5"
    t = read_run_trajectory(runs["emt1"])
    t.name, t.temperature_K = SYSTEM, 300.0
    # another pressure and a short barostat (burn-in 5 x 10 fs) than the runs': what is run comes from this file
    file_ens = {"ensemble": "npt", "pressure_GPa": 0.5, "barostat": "isotropic", "tau_barostat_fs": 10.0}
    write_reference(ref_h5, t, dict(file_ens))
    listed = json.loads(dynamat_cmd("systems", "--reference", str(ref_h5), "--json").stdout)[0]
    assert {k: listed["protocol"][k] for k in ENSEMBLE_KNOBS} == file_ens
    assert listed["sources"]["pressure_GPa"] == "reference file (pressure_GPa)"
    assert "NPT at 0.5 GPa (isotropic barostat, tau 10 fs)" in dynamat_cmd("systems", "--reference", str(ref_h5)).stdout
    by_hand = dynamat_cmd("inputs", "--system", SYSTEM, "--reference", str(ref_h5), "--out", str(tmp_path / "hand"),
                          "--pressure-GPa", "2")  # the file's barostat at another pressure
    assert by_hand.returncode == 0, by_hand.stderr
    xml = (tmp_path / "hand" / "input.xml").read_text()
    assert "<pressure units='gigapascal'> 2.0 </pressure>" in xml and "<tau units='femtosecond'> 10.0 </tau>" in xml
    from dynamat.campaign.run import _steps_per_system
    from dynamat.campaign.spec import CampaignSpec

    spec = CampaignSpec(("emt",), (SYSTEM,), tmp_path / "c2", reference=ref_h5, steps=760, ensemble={"pressure_GPa": 2.0})
    assert _steps_per_system(spec)[2] == {SYSTEM: file_ens | {"pressure_GPa": 2.0}}  # what each pair runs and is kept as
    assert spec.job("emt", SYSTEM, 760).ensemble == {"pressure_GPa": 2.0}  # what the task resolves again, the same way

    out = tmp_path / "camp"
    args = ("--models", "emt", "--systems", SYSTEM, "--reference", str(ref_h5), "--steps", "760", "--out", str(out),
            "--no-report")  # 760: the scorer's 8 frames after the NPT burn-in, at the catalogue's 0.25 fs
    res = campaign(*args, timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    run = RunFolder.of(out, "emt", SYSTEM)
    rec = json.loads(run.run_json.read_text())
    assert rec["status"] == "completed" and {k: rec["protocol"][k] for k in ENSEMBLE_KNOBS} == file_ens
    assert rec["system_info"]["sources"]["tau_barostat_fs"] == "reference file (tau_barostat_fs)"
    assert "<pressure units='gigapascal'> 0.5 </pressure>" in run.input_xml.read_text()
    sc = json.loads(run.score_json.read_text())
    assert sc["ensemble"] == "npt" and not any("the run was held at" in n for n in sc.get("notes", []))
    other = dynamat_cmd("score", "--reference", str(ref_h5), "--system", SYSTEM, "--run", str(runs["emt1"]),
                        "--json", str(tmp_path / "other.json"))  # a run at 0 GPa against the file's 0.5 GPa
    assert other.returncode == 0, other.stderr
    assert "the run was held at 0 GPa, the reference at 0.5 GPa: its volume, lattice and pressure errors" in other.stderr
    res = campaign(*args, timeout=60)
    assert res.returncode == 0 and "1 pairs (1 skip)" in res.stderr and "another length or ensemble" not in res.stderr
    # a fixed cell against it: the scorer's caveat is said where the campaign's user reads, its output and report
    fixed_out = tmp_path / "fixed"
    res = campaign("--models", "emt", "--systems", SYSTEM, "--reference", str(ref_h5), "--steps", "560", "--out",
                   str(fixed_out), "--ensemble", "nvt", timeout=240)
    assert res.returncode == 0, res.stderr[-3000:]
    caveat = "pressure: the reference's cell moves (NPT) and this run's does not"
    assert re.search(rf"emt/{SYSTEM}: completed, .*\n    note: {re.escape(caveat)}", res.stderr), res.stderr[-3000:]
    assert "the scorer noted 1 run(s) (the page's Notes say what)" in res.stdout + res.stderr
    assert f"emt/{SYSTEM}: {caveat}" in html.unescape((fixed_out / "report" / "report.html").read_text())

    fixed = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--reference", str(ref_h5), "--steps", "760",
                        "--out", str(out), "--ensemble", "nvt")  # the folder's run is NPT: refused, kept
    assert_one_line_error(fixed, "holds a run with --ensemble npt --pressure-GPa 0.5", "asked for --ensemble nvt")
    ase_engine = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--reference", str(ref_h5), "--steps", "20",
                             "--engine", "ase", "--out", str(tmp_path / "ase"))
    assert_one_line_error(ase_engine, "an NPT reference's own", "--ensemble nvt")
    assert not (tmp_path / "ase").exists()


def test_an_npt_reference_with_a_slab_or_a_foreign_barostat_is_one_line():
    """get_system takes the file's ensemble only whole and checked: a slab (--dims 2) is told the way to a fixed
    cell, a barostat dynamat does not run is named as the file's; --ensemble nvt keeps the cell fixed."""
    from dynamat.catalogue import get_system
    from dynamat.errors import DynamatError

    attrs = {"temperature_kelvin": 300.0, "ensemble": "npt", "pressure_GPa": 1.0, "barostat": "flexible",
             "tau_barostat_fs": 200.0}
    s = get_system(SYSTEM, attrs)
    assert (s.protocol.ensemble, s.protocol.pressure_GPa, s.protocol.barostat, s.protocol.burn_in_ps) == (
        "npt", 1.0, "flexible", 1.0)  # 5 x 200 fs
    assert get_system(SYSTEM, attrs, ensemble="nvt").protocol.ensemble == "nvt"
    assert get_system(SYSTEM, attrs, ensemble="npt", pressure_GPa=2.0).protocol.barostat == "isotropic"
    with pytest.raises(DynamatError, match=r"2D slab.*its reference file says npt: give --ensemble nvt"):
        get_system(SYSTEM, attrs, dims=2)
    with pytest.raises(DynamatError, match="the reference file's ensemble attributes: --barostat must be one of"):
        get_system(SYSTEM, attrs | {"barostat": "mttk"})


def test_barostat_knobs_alone_adjust_an_npt_references_own():
    """``--pressure-GPa 2`` (or another knob) without ``--ensemble`` runs the file's barostat at that pressure,
    each value's source named; against a fixed-cell reference the knobs alone are one line, as before."""
    from dynamat.catalogue import get_system
    from dynamat.errors import DynamatError

    attrs = {"temperature_kelvin": 300.0, "ensemble": "npt", "pressure_GPa": 1.0, "barostat": "flexible",
             "tau_barostat_fs": 200.0}
    s = get_system(SYSTEM, attrs, pressure_GPa=2.0, tau_barostat_fs=400.0)
    p = s.protocol
    assert (p.ensemble, p.pressure_GPa, p.barostat, p.tau_barostat_fs, p.burn_in_ps) == (
        "npt", 2.0, "flexible", 400.0, 2.0)  # the burn-in follows the barostat asked for: 5 x 400 fs
    assert s.sources["pressure_GPa"] == "command line (--pressure-GPa, over the reference file's ensemble npt)"
    assert s.sources["barostat"] == "reference file (barostat)"
    for bad, msg in [(dict(barostat="mttk"), "--barostat must be one of"),
                     (dict(pressure_GPa=float("nan")), "--pressure-GPa must be a finite number"),
                     (dict(tau_barostat_fs=-1.0), "--tau-barostat-fs must be a positive")]:
        with pytest.raises(DynamatError, match=msg):
            get_system(SYSTEM, attrs, **bad)
    fixed = {"temperature_kelvin": 300.0}
    with pytest.raises(DynamatError, match="^--pressure-GPa only matters with --ensemble npt .system 'bulkCu_300K-"
                                           "demo_EMT': its reference stores no barostat to adjust.$"):
        get_system(SYSTEM, fixed, pressure_GPa=2.0)
    with pytest.raises(DynamatError, match="^--pressure-GPa, --barostat only matter with --ensemble npt "):
        get_system(SYSTEM, fixed, pressure_GPa=2.0, barostat="flexible")
    assert get_system(SYSTEM, fixed).protocol.ensemble == "nvt"


@pytest.mark.parametrize("pressure, tau, want", [
    ("<pressure units='bar'> 25000 </pressure>", "<tau units='picosecond'> 0.25 </tau>", (2.5, 250.0)),
    ("<pressure> 1e-4 </pressure>", "<tau> 4134.1373 </tau>", (1e-4 * Hartree / Bohr ** 3 / GPa, 100.0)),
    ("<pressure units='megapascal'> -100 </pressure>", "<tau units='femtosecond'> 50 </tau>", (-0.1, 50.0)),
])
def test_an_ipi_npt_input_is_read_in_its_own_units(tmp_path, pressure, tau, want):
    """The barostat of an i-PI input (a run folder imported as a reference) in the units i-PI reads it: bar,
    picoseconds, atomic units where none is said (1 a.u. of time = 0.0241888 fs), megapascal; a barostat mode
    dynamat does not run, and fixed-cell dynamics, give none."""
    from dynamat.io.run_folder import input_info

    def info(dynamics: str, baro: str = "isotropic") -> dict:
        (tmp_path / "input.xml").write_text(
            f"<simulation><system><ensemble><temperature units='kelvin'> 300 </temperature>{pressure}</ensemble>"
            f"<motion mode='dynamics'><dynamics mode='{dynamics}'><barostat mode='{baro}'>{tau}</barostat>"
            "</dynamics></motion></system></simulation>")
        return input_info(tmp_path)

    got = info("npt")["ensemble"]
    assert got["ensemble"] == "npt" and got["barostat"] == "isotropic"
    # i-PI's atomic units and bar are older CODATA values than ASE's: 3e-5 apart
    assert (got["pressure_GPa"], got["tau_barostat_fs"]) == pytest.approx(want, rel=1e-4)
    assert "ensemble" not in info("npt", "sc-isotropic") and "ensemble" not in info("nvt")


def _score(ref_h5: Path, run: Path) -> dict:
    res = dynamat_cmd("score", "--reference", str(ref_h5), "--system", SYSTEM, "--run", str(run))
    assert res.returncode == 0, res.stderr
    assert "E_<V>" in res.stdout and "E_V (Eq. 9 on V)" in res.stdout
    return json.loads(RunFolder(run).score_json.read_text())


@pytest.mark.parametrize("how", ["imported", "generated"])
def test_emt_npt_reference_scores_lj_far_off_and_another_emt_seed_within_the_noise_floor(runs, how):
    """The EMT run converted into a reference (its burn-in dropped), or the same frames generated by ``reference
    generate --ensemble npt``, scores LJ's cell far beyond the noise floor and EMT's other seed within it. The
    floor (reference halves) is itself one noisy draw, so 'within' allows 3 bootstrap standard errors of the
    error beside it."""
    ref_h5 = runs["root"] / f"{how}.h5"
    if how == "imported":
        imp = dynamat_cmd("reference", "import", str(runs["emt1"]), "--out", str(ref_h5), "--name", SYSTEM,
                          "--temperature", "300", "--drop-ps", "0.5")
        assert imp.returncode == 0, imp.stderr
        assert "the i-PI input ran NPT at 0 GPa (isotropic barostat, tau 100 fs)" in imp.stderr
    attrs = reference_attrs(ref_h5, SYSTEM)  # both ways store the barostat the frames ran under
    assert {k: attrs[k] for k in ENSEMBLE_KNOBS} == {"ensemble": "npt", "pressure_GPa": 0.0, "barostat": "isotropic",
                                                     "tau_barostat_fs": 100.0}
    emt, lj = _score(ref_h5, runs["emt2"]), _score(ref_h5, runs["lj"])
    keys = ("volume_error_pct", "volume_hist_error_pct", "lattice_length_error_pct")
    for k in keys:
        assert emt[k] <= emt[f"{k}_floor"] + 3 * emt[f"{k}_unc"], (k, emt[k], emt[f"{k}_floor"])
        assert lj[k] > lj[f"{k}_floor"] + 3 * lj[f"{k}_unc"], (k, lj[k], lj[f"{k}_floor"])
    assert lj["volume_error_pct"] > 5.0  # LJ's sigma is Cu's neighbour distance: its minimum lies 12 % further
    assert emt["lattice_angle_error_deg"] == pytest.approx(0.0, abs=1e-9)  # the isotropic barostat keeps the shape
    # the score's MLIP volume is i-PI's own volume column over the scored (post-burn-in, matched) steps
    props = read_properties(RunFolder(runs["lj"]).properties)
    steps = props["step"].astype(int)
    scored = (steps >= 250) & (steps < 250 + 10 * emt["n_frames_mlip"])
    assert lj["volume_mean_mlip_A3"] == pytest.approx(props["volume{angstrom3}"][scored].mean(), rel=1e-6)
    # the report shows the NPT table (and the page carries it)
    from dynamat.report.html import render_html
    from dynamat.report.tables import build_tables, load_results

    tables = build_tables(load_results([RunFolder(runs["emt2"]).score_json, RunFolder(runs["lj"]).score_json]))
    npt = tables["npt_cell"]
    assert [r["model"] for r in npt.rows] == ["emt+NPT", "lj+NPT"]  # NPT runs: entries of their own
    assert "Variable-cell (NPT)" in render_html([npt], [], [])


def test_npt_reference_replicas_give_the_cell_errors_their_floor(runs, tmp_path):
    """The two EMT seeds as reference replicas 0 and 1 (groups NAME, NAME_r1): an NPT run scored against them
    has, as its cell errors' floors, the errors of replica 1 against replica 0 over the matched duration."""
    from dynamat.io.reference_h5 import write_reference
    from dynamat.scoring.core import score_md

    ref_h5 = tmp_path / "two.h5"
    for k, name in enumerate(("emt1", "emt2")):
        t = read_run_trajectory(runs[name])
        t.name, t.temperature_K = SYSTEM if k == 0 else f"{SYSTEM}_r1", 300.0
        write_reference(ref_h5, t, {"replica_of": SYSTEM, "replica_index": k, "seed": k + 1})
    s = _score(ref_h5, runs["lj"])
    assert s["floor_source"] == "reference_replicas"
    r0, r1 = (read_reference(ref_h5, g) for g in (SYSTEM, f"{SYSTEM}_r1"))
    d = s["matched_duration_fs"]
    direct = score_md(r0.truncated_to(d), r1.truncated_to(d), n_boot=0, npt=True)
    for key in ("volume_error_pct", "volume_hist_error_pct", "lattice_length_error_pct", "lattice_angle_error_deg"):
        assert s[f"{key}_floor"] == pytest.approx(direct[key], rel=1e-12, abs=1e-12), key
    assert s["volume_error_pct_floor"] > 0 and s["lattice_length_error_pct"] > s["lattice_length_error_pct_floor"]


def test_npt_refuses_the_ase_engine_and_beads_before_touching_a_folder(tmp_path):
    from dynamat.errors import DynamatError

    npt = MDSettings("svr", 2.0, 100.0, 10, 100, 300.0, ensemble="npt", pressure_GPa=0.0, tau_barostat_fs=100.0)
    cu = bulk("Cu", "fcc", a=3.6, cubic=True)
    for opts, settings in ((RunOptions(engine="ase"), npt), (RunOptions(nbeads=4), replace(npt, nbeads=4))):
        with pytest.raises(DynamatError, match="i-PI's barostats"):
            supervise("emt", cu, settings, tmp_path / "run", opts)
    assert not (tmp_path / "run").exists()


def test_npt_protocol_knobs_and_their_burn_in():
    """The burn-in is 5 barostat time constants unless the protocol's own is longer (relaxed_nhc: 10 ps); the
    barostat survives --protocol; a slab is refused (the barostat would squeeze its vacuum)."""
    from dynamat.catalogue import get_system, with_protocol
    from dynamat.errors import DynamatError

    npt = dict(ensemble="npt", pressure_GPa=2.0, tau_barostat_fs=400.0)
    s = get_system("bulkCu_300K-demo_EMT", {"temperature_kelvin": 300.0}, **npt)
    assert (s.protocol.burn_in_ps, s.protocol.barostat, s.md_settings().pressure_GPa) == (2.0, "isotropic", 2.0)
    relaxed = with_protocol(s, "relaxed_nhc")
    assert relaxed.protocol.relax and relaxed.protocol.ensemble == "npt" and relaxed.protocol.burn_in_ps == 10.0
    assert get_system("bulkCu_300K-demo_EMT", {"temperature_kelvin": 300.0}).protocol.ensemble == "nvt"
    with pytest.raises(DynamatError, match="2D slab"):
        get_system("bulkCu_300K-demo_EMT", {"temperature_kelvin": 300.0}, dims=2, **npt)
    with pytest.raises(DynamatError, match="--barostat"):
        get_system("bulkCu_300K-demo_EMT", {"temperature_kelvin": 300.0}, barostat="berendsen", **npt)


def test_an_npt_run_shorter_than_its_burn_in_is_one_line_at_scoring(tmp_path):
    system = "bulkCu_300K-demo_EMT"
    assert dynamat_cmd("run", "--model", "emt", "--system", system, "--steps", "20", "--ensemble", "npt",
                       "--pressure-GPa", "0", "--out", str(tmp_path)).returncode == 0
    res = dynamat_cmd("score", "--system", system, "--run", str(tmp_path / "emt" / system))
    assert res.returncode == 2 and len(res.stderr.strip().splitlines()) == 1, res.stderr
    assert "burn-in" in res.stderr and "Traceback" not in res.stderr


def test_an_npt_run_whose_cell_blows_up_is_exploded_not_failed(tmp_path):
    """A huge tension tears the cell apart at once: i-PI sends the driver a non-finite cell. That is MD
    blowing up (status exploded, a result kept, not resumed), not a driver fault to rerun."""
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "50", "--ensemble", "npt",
                      "--pressure-GPa", "-1e9", "--out", str(tmp_path))
    assert res.returncode != 0 and "Traceback" not in res.stderr and "rerun to resume" not in res.stderr
    rec = json.loads((tmp_path / "emt" / SYSTEM / "run.json").read_text())
    assert rec["status"] == "exploded" and "non-finite" in rec["error"], rec


def test_a_fast_barostat_is_scored_on_peculiar_velocities(tmp_path):
    """A 40 fs barostat breathes the cell fast: Cartesian finite differences counted its stretching of the
    crystal as atomic motion (4,000 K 'kinetic temperature', E_VDOS 88 % for EMT against EMT's own reference,
    the frame interval called suspect). The velocities are the peculiar ones: their temperature is i-PI's
    own over the scored steps, and EMT's VDOS stays near its noise floor."""
    res = dynamat_cmd("run", "--model", "emt", "--system", SYSTEM, "--steps", "2000", "--ensemble", "npt",
                      "--pressure-GPa", "0", "--tau-barostat-fs", "40", "--seed", "5", "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    run = RunFolder.of(tmp_path, "emt", SYSTEM)
    assert dynamat_cmd("score", "--system", SYSTEM, "--run", str(run.path)).returncode == 0
    sc = json.loads(run.score_json.read_text())
    props, proto = read_properties(run.properties), json.loads(run.run_json.read_text())["protocol"]
    burn_in = round(proto["burn_in_ps"] * 1000 / proto["timestep_fs"])  # the scored frames follow the burn-in
    scored = (props["step"] >= burn_in) & (props["step"] < burn_in + proto["stride"] * sc["n_frames_mlip"])
    assert scored.sum() == sc["n_frames_mlip"]
    assert sc["kinetic_temperature_mlip_K"] == pytest.approx(props["temperature{kelvin}"][scored].mean(), rel=0.08)
    assert not sc["frame_interval_suspect_mlip"] and sc["ensemble"] == "npt" and "nbeads" not in sc
    assert sc["vdos_error_pct"] < 3 * sc["vdos_error_pct_floor"] + 3 * sc["vdos_error_pct_unc"], sc["vdos_error_pct"]
