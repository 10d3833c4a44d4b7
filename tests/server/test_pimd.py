"""Path-integral MD through i-PI and dynamat-driver (real processes, no mocks).

1. An Einstein crystal of hydrogen atoms (the ``harmonic`` model) at βħω ≈ 4: the centroid-virial
   kinetic energy per degree of freedom follows the exact P-bead value and approaches
   (ħω/4)·coth(βħω/2) within 2 % at P = 16; P = 1 gives k_B T/2.
2. Batched bead evaluation (all P beads in one socket request) gives the same trajectory and
   forces as one bead per request, and as a driver that unpacks batches (``--no-batch``).
"""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from dynamat.catalogue import Protocol, System
from dynamat.io.ipi_output import read_ipi_xyz, read_properties
from dynamat.engines.ipi_input import MDSettings, render_input
from dynamat.metrics.rdf import all_bead_rdf
from dynamat.pimd import (
    bead_convergence,
    bead_files,
    quantum_classical_differences,
    quantum_kinetic_energy,
    read_bead_positions,
    read_bead_trajectory,
    read_centroid_trajectory,
)
from dynamat.runner import RunOptions, supervise

from conftest import dynamat_cmd

# --- units: energies in eV, times in fs, masses in amu, lengths in Å ---------------------------
HBAR_EV_FS = 0.6582119569  # ħ in eV·fs (CODATA 2018)
KB_EV_PER_K = 8.617333262e-5  # k_B in eV/K
AMU_A2_PER_FS2_IN_EV = 1.66053906660e-27 * 1e-20 / 1e-30 / 1.602176634e-19  # 1 amu·Å²/fs² in eV (103.64)
MASS_H_AMU = 1.00794  # i-PI's mass table (ipi.utils.units.Elements), which the dynamics use

T_K = 300.0
K_SPRING = 2.6  # eV/Å²: ħω = 0.1036 eV, βħω = 4.01 at 300 K
KT = KB_EV_PER_K * T_K
OMEGA = np.sqrt(K_SPRING / (MASS_H_AMU * AMU_A2_PER_FS2_IN_EV))  # rad/fs
X = HBAR_EV_FS * OMEGA / KT  # βħω


def k_quantum_per_dof() -> float:
    """Exact quantum kinetic energy of one harmonic degree of freedom, (ħω/4)·coth(βħω/2)."""
    return HBAR_EV_FS * OMEGA / 4.0 / np.tanh(X / 2.0)


def k_discretised_per_dof(p: int) -> float:
    """Exact ⟨K_cv⟩ per dof of the P-bead ring polymer of a harmonic oscillator.

    Free ring-polymer modes k have ω_k = 2 (P/βħ) sin(πk/P); each internal mode contributes
    k_B T/2 · ω² / (ω² + ω_k²) to the centroid-virial term.
    """
    k = np.arange(1, p)
    return KT / 2.0 * (1.0 + np.sum(1.0 / (1.0 + (2.0 * p / X * np.sin(np.pi * k / p)) ** 2)))


def einstein_crystal(n: int):
    return bulk("H", "sc", a=2.0).repeat((n, n, n))  # sites 2 Å apart; the model has no pair terms


def test_analytic_reference_values():
    assert 3.9 < X < 4.1
    assert k_discretised_per_dof(1) == pytest.approx(KT / 2)
    # the P-bead value increases towards the quantum limit
    vals = [k_discretised_per_dof(p) for p in (1, 2, 4, 8, 16, 64, 512)]
    assert np.all(np.diff(vals) > 0)
    assert vals[-1] == pytest.approx(k_quantum_per_dof(), rel=1e-4)
    assert abs(k_discretised_per_dof(16) / k_quantum_per_dof() - 1) < 0.01


def test_render_picks_pimd_template_and_batches_beads():
    s = MDSettings("svr", 0.25, 254.5, 10, 100, 300.0, nbeads=8)
    xml = render_input(s, init_file="init.xyz", species="Cu3AuCu28")
    assert "<thermostat mode='pile_l'>" in xml and "<tau units='femtosecond'> 254.5 </tau>" in xml
    assert "<batch_size> 8 </batch_size>" in xml and "nbeads='8'" in xml
    assert "kinetic_cv{electronvolt}(Cu), kinetic_cv{electronvolt}(Au)" in xml
    assert "x_centroid{ase}" in xml and "v_centroid{ase}" in xml
    assert "<batch_size> 2 </batch_size>" in render_input(s, init_file="i.xyz", species="Cu", batch_size=2)
    classical = render_input(MDSettings("svr", 0.25, 254.5, 10, 100, 300.0), init_file="i.xyz", species="Cu")
    assert "<thermostat mode='svr'>" in classical and "<batch_size> 1 </batch_size>" in classical
    trpmd = render_input(MDSettings("trpmd", 0.25, 254.5, 10, 100, 300.0, nbeads=4), init_file="i.xyz", species="Cu")
    assert "<thermostat mode='pile_g'>" in trpmd and "<pile_lambda> 0.5 </pile_lambda>" in trpmd


@pytest.fixture(scope="module")
def convergence(tmp_path_factory):
    """P = 1, 4, 16 runs of a 64-atom hydrogen Einstein crystal (PILE-L, 0.5 fs, 1200 steps)."""
    out = tmp_path_factory.mktemp("beads")
    protocol = Protocol(name="einstein-test", paper_thermostat="-", ipi_thermostat="pile_l",
                        timestep_fs=0.5, tau_fs=20.0, stride=10, time_ps=0.6)
    system = System(name="einstein_H64", system_class="test", temperature_K=T_K, dims=3,
                    protocol=protocol, in_catalogue=False)
    conv = bead_convergence("harmonic", system, einstein_crystal(4), out, beads=(1, 4, 16), steps=1200,
                            seed=31, driver_args=("-o", f"k={K_SPRING}"), discard_fraction=0.1)
    return conv


def test_centroid_virial_kinetic_energy_converges_to_quantum_value(convergence):
    rows = {r["nbeads"]: r for r in convergence.rows}
    assert sorted(rows) == [1, 4, 16]
    per_dof = {p: r["kinetic_cv_eV_per_atom"] / 3 for p, r in rows.items()}
    se = {p: r["kinetic_cv_se_eV_per_atom"] / 3 for p, r in rows.items()}
    # P = 1: classical equipartition, k_B T / 2 (the estimator is exact there)
    assert per_dof[1] == pytest.approx(KT / 2, rel=1e-5)
    # statistical errors well below the 2 % test
    for p in (4, 16):
        assert 0 < se[p] < 0.005 * per_dof[p], (p, se[p], per_dof[p])
    # each P matches the exact P-bead ring-polymer value (time-step bias allowed: 0.3 %)
    for p in (4, 16):
        exact = k_discretised_per_dof(p)
        assert abs(per_dof[p] - exact) < 4 * se[p] + 0.003 * exact, (p, per_dof[p], exact, se[p])
    # and converges towards (ħω/4) coth(βħω/2): within 2 % at P = 16
    assert per_dof[1] < per_dof[4] < per_dof[16]
    assert abs(per_dof[16] / k_quantum_per_dof() - 1) < 0.02, (per_dof[16], k_quantum_per_dof())
    # successive values that differ by far more than their errors are flagged
    assert rows[1]["agrees_with_previous"] is None
    assert rows[4]["agrees_with_previous"] is False and not convergence.converged
    assert "NOT converged" in convergence.table()


def test_classical_run_samples_equipartition(convergence):
    """P = 1 samples k_B T/2 per unconstrained dof (i-PI fixes the centre of mass: 3N − 3)."""
    run = convergence.rows[0]["run_dir"]
    props = read_properties(f"{run}/simulation.out")
    n = 64
    keep = slice(len(props["step"]) // 10, None)
    pot = props["potential{electronvolt}"][keep]
    expected = (3 * n - 3) * KT / 2
    from dynamat.metrics import block_bootstrap_mean_se

    assert abs(pot.mean() - expected) < 4 * block_bootstrap_mean_se(pot) + 0.01 * expected
    kin = quantum_kinetic_energy(run)
    assert kin["all"].per_dof_eV == pytest.approx(KT / 2, rel=1e-5) and kin["all"].se_eV == 0.0


def test_readers_and_quantum_classical_differences(convergence):
    classical, quantum = (convergence.rows[i]["run_dir"] for i in (0, -1))
    assert len(bead_files(quantum)) == 16 and bead_files(quantum)[0].name == "simulation.pos_00.extxyz"
    cen = read_centroid_trajectory(quantum)
    beads = read_bead_trajectory(quantum)
    assert beads.n_frames == 16 * cen.n_frames and cen.dt_fs == pytest.approx(5.0)
    # the centroid is the bead average (to the 8 printed decimals)
    mean = beads.positions.reshape(cen.n_frames, 16, 64, 3).mean(axis=1)
    assert np.abs(mean - cen.positions).max() < 1e-7
    # ring polymers spread: per-bead displacements exceed the centroid's
    spread = beads.positions.reshape(cen.n_frames, 16, 64, 3) - cen.positions[:, None]
    assert np.sqrt((spread**2).mean()) > 0.05
    d = read_bead_positions(quantum)
    r, g = all_bead_rdf(d["positions"], d["cells"], n_bins=100)
    assert len(r) == 100 and np.all(np.isfinite(g))
    diff = quantum_classical_differences(classical, quantum, n_bins=100)
    k = diff["kinetic"]["H"]
    assert k["quantum_excess_pct"] == pytest.approx(100 * (k_discretised_per_dof(16) / (KT / 2) - 1), abs=5)
    assert diff["nbeads_quantum"] == 16 and diff["nbeads_classical"] == 1
    # quantum delocalisation broadens the site-site peaks: a visible RDF difference, larger for beads
    assert diff["rdf_error_pct"] > diff["rdf_error_centroid_pct"] > 0
    # the harmonic model's virial stress k Σ Δ⊗Δ / V grows with the zero-point spread
    assert diff["pressure_quantum_GPa"] < diff["pressure_classical_GPa"]
    assert diff["potential_quantum_eV_per_atom"] > diff["potential_classical_eV_per_atom"]
    assert diff["vdos_error_pct"] is not None


# --- batched vs unbatched bead evaluation ------------------------------------------------------

FORCES = "<trajectory filename='frc' stride='1' format='ase' flush='1'> forces{ase} </trajectory>"


def _bead_run(tmp_path, name, *, batch_size, driver_args=(), n_drivers=1, nbeads=4):
    settings = MDSettings("pile_l", 0.5, 20.0, 1, 30, T_K, seed=4242, nbeads=nbeads)
    opts = RunOptions(batch_size=batch_size, n_drivers=n_drivers, nbeads=nbeads, stall_timeout_s=120,
                      driver_args=("-o", f"k={K_SPRING}", *driver_args), extra_outputs=FORCES)
    return supervise("harmonic", einstein_crystal(2), settings, tmp_path / name, opts)


def _outputs(run_dir):
    out = {}
    for what in ("pos", "frc"):
        for f in bead_files(run_dir, what):
            d = read_ipi_xyz(f)
            out[f.name] = (d["steps"], d["data"])
    props = read_properties(run_dir / "simulation.out")
    out["properties"] = (props["step"], np.column_stack([v for k, v in props.items() if k != "step"]))
    return out


def _assert_identical(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert np.array_equal(a[key][0], b[key][0]), key
        assert np.array_equal(a[key][1], b[key][1]), key  # to the printed precision


def test_batched_and_unbatched_beads_give_identical_trajectories(tmp_path):
    batched = _bead_run(tmp_path, "batched", batch_size=4)
    single = _bead_run(tmp_path, "single", batch_size=1)
    unpacked = _bead_run(tmp_path, "unpacked", batch_size=4, driver_args=("--no-batch",))
    ref = _outputs(batched.run_dir)
    assert len([k for k in ref if k.startswith("simulation.frc_")]) == 4
    assert ref["simulation.frc_0.extxyz"][1].shape == (31, 8, 6)  # 30 steps + step 0; pos + forces
    assert np.abs(ref["simulation.frc_0.extxyz"][1][..., 3:]).max() > 0
    # the beads really differ from each other (a ring polymer, not P copies)
    assert not np.array_equal(ref["simulation.pos_0.extxyz"][1], ref["simulation.pos_1.extxyz"][1])
    _assert_identical(ref, _outputs(single.run_dir))
    _assert_identical(ref, _outputs(unpacked.run_dir))
    # the driver got one request per force evaluation (31) with all beads, or one per bead
    assert batched.driver_timings[0]["n_requests"] == 31
    assert single.driver_timings[0]["n_requests"] == 4 * 31


@pytest.mark.slow
def test_one_driver_per_bead_gives_identical_trajectories(tmp_path):
    ref = _outputs(_bead_run(tmp_path, "batched", batch_size=4).run_dir)
    parallel = _bead_run(tmp_path, "parallel", batch_size=1, n_drivers=4)
    _assert_identical(ref, _outputs(parallel.run_dir))
    assert len(parallel.driver_timings) == 4


def test_beads_convergence_command(tmp_path):
    """The click command on a catalogue system (demo Cu, harmonic model), two short runs."""
    import json

    from click.testing import CliRunner

    from dynamat.cli.beads import beads_convergence_command

    res = CliRunner().invoke(beads_convergence_command, [
        "--model", "harmonic", "--system", "bulkCu_300K-demo_EMT", "--beads", "1,2", "--steps", "40",
        "--out", str(tmp_path), "--json", str(tmp_path / "conv.json"), "--driver-arg=-o", "--driver-arg=k=1.0",
    ])
    assert res.exit_code == 0, res.output
    assert "<K_cv>/atom" in res.output and "classical 3/2 kT" in res.output
    conv = json.loads((tmp_path / "conv.json").read_text())
    assert [r["nbeads"] for r in conv["rows"]] == [1, 2]
    kt = KB_EV_PER_K * 300.0
    assert conv["rows"][0]["kinetic_cv_eV_per_atom"] == pytest.approx(1.5 * kt, rel=1e-5)
    assert conv["rows"][1]["kinetic_cv_eV_per_atom"] > 1.5 * kt  # Cu at 300 K: a small quantum excess
    assert (tmp_path / "harmonic" / "bulkCu_300K-demo_EMT" / "beads_2" / "simulation.xc.extxyz").exists()
    # 40 steps leave too few properties rows for P = 2's error: not judged (it read 'converged' on ±0)
    from dynamat.pimd.convergence import MIN_SAMPLES

    assert conv["rows"][1]["n_samples"] < MIN_SAMPLES
    assert conv["rows"][1]["too_few_samples"] and conv["rows"][1]["agrees_with_previous"] is None
    assert conv["converged"] is False and "not judged" in res.output and "too few rows" in res.output

    # a report over the folder, beside a scored classical run: the study is a table of its own, and its
    # beads_<P>/ runs are not reported as benchmark runs without a score
    assert dynamat_cmd("run", "--model", "emt", "--system", "bulkCu_300K-demo_EMT", "--steps", "200", "--seed", "3",
                       "--out", str(tmp_path)).returncode == 0
    assert dynamat_cmd("score", "--run", str(tmp_path / "emt" / "bulkCu_300K-demo_EMT")).returncode == 0
    rep = dynamat_cmd("report", str(tmp_path), "--out", str(tmp_path / "report"), "--no-pdf")
    assert rep.returncode == 0, rep.stderr
    assert "without a score" not in rep.stdout + rep.stderr
    table = json.loads((tmp_path / "report" / "tables" / "beads_convergence.json").read_text())
    rows = table["rows"] if isinstance(table, dict) else table
    assert [(r["model"], r["nbeads"]) for r in rows] == [("harmonic", 1), ("harmonic", 2)]
    for r, c in zip(rows, conv["rows"]):
        assert r["kinetic_cv_meV_per_atom"] == pytest.approx(1e3 * c["kinetic_cv_eV_per_atom"], rel=1e-12)
    assert rows[0]["kinetic_cv_meV_per_atom"] == pytest.approx(1.5e3 * kt, rel=1e-5)
    assert rows[0]["converged"] is None and rows[1]["converged"] is None  # P = 2 not judged: too few samples
    assert "Path-integral convergence" in (tmp_path / "report" / "report.html").read_text()


@pytest.mark.parametrize("args, needle", [
    (["--steps", "0"], "'--steps': 0 is not in the range 1<=x<=100000000"),
    (["--discard", "1"], "'--discard': 1.0 is not in the range 0<=x<1"),
    (["--discard", "nan"], "'--discard': must be a finite number, got nan"),
    (["--z", "0"], "'--z': 0.0 is not in the range x>0"),
    (["--z", "inf"], "'--z': must be a finite number, got inf"),
    (["--beads", "1,2000"], "--beads wants integers from 1 to 1024"),
])
def test_beads_convergence_refuses_bad_arguments_before_any_run(tmp_path, args, needle):
    """One line and nothing else: no 'P = 1' progress line first, no run folder (they used to start the
    P = 1 run, --steps 0 refused only inside it, a bad --discard or --z only after every run)."""
    from conftest import assert_one_line_error, dynamat_cmd

    res = dynamat_cmd("beads-convergence", "--model", "emt", "--system", "bulkCu_300K-demo_EMT",
                      "--out", str(tmp_path / "out"), *args)
    assert_one_line_error(res, needle)
    assert not (tmp_path / "out").exists()


def test_pimd_run_is_scored_on_the_all_bead_rdf(tmp_path):
    """`dynamat score` on a path-integral run: E_RDF is the all-bead (quantum) g(r), equal to the RDF
    of the concatenated bead frames; the centroid one is kept as rdf_error_centroid_pct."""
    import json

    from conftest import DEMO, dynamat_cmd
    from dynamat.io import read_reference
    from dynamat.metrics.rdf import rdf_error, rdf_from_histogram, rdf_histogram, rdf_r_max

    system = "bulkCu_300K-demo_EMT"
    res = dynamat_cmd("run", "--model", "emt", "--system", system, "--beads", "4", "--steps", "200",
                      "--out", str(tmp_path))
    assert res.returncode == 0, res.stderr
    run_dir = tmp_path / "emt" / system
    res = dynamat_cmd("score", "--system", system, "--run", str(run_dir))
    assert res.returncode == 0, res.stderr
    score = json.loads((run_dir / "score.json").read_text())
    assert score["rdf_source"] == "all_beads"
    assert score["rdf_error_centroid_pct"] != score["rdf_error_pct"]
    beads = read_bead_trajectory(run_dir)
    ref = read_reference(DEMO, system)
    n = len(np.unique(beads.steps))
    assert beads.n_frames == 4 * n
    ref = ref.truncated_to(min(ref.duration_fs, (n - 1) * 2.5))
    r_max = min(rdf_r_max(ref.cells, ref.pbc), rdf_r_max(beads.cells, beads.pbc))
    r, g_ref = rdf_from_histogram(rdf_histogram(ref.positions, ref.cells, n_bins=500, r_max=r_max))
    _, g_beads = rdf_from_histogram(rdf_histogram(beads.positions, beads.cells, n_bins=500, r_max=r_max))
    assert rdf_error(g_ref, g_beads, r) == pytest.approx(score["rdf_error_pct"], rel=1e-9)


def test_run_json_and_inputs_record_the_thermostat_i_pi_runs(tmp_path):
    """With beads i-PI runs PILE-L whatever the classical protocol says: run.json's protocol and system_info
    (and `dynamat inputs`' line) record the mode input.xml holds, with a note of what it replaced (they said
    svr, or the --thermostat langevin asked for); an explicit --thermostat svr, which PILE-L cannot honour
    (it is no global velocity rescaling), is refused in one line before any folder is made."""
    import json
    import re

    from conftest import dynamat_cmd

    system = "bulkCu_300K-demo_EMT"
    for extra, was in (((), "svr"), (("--thermostat", "langevin"), "langevin")):
        out = tmp_path / f"from_{was}"
        res = dynamat_cmd("run", "--model", "emt", "--system", system, "--beads", "2", "--steps", "20",
                          "--out", str(out), *extra)
        assert res.returncode == 0, res.stderr
        run_dir = out / "emt" / system
        mode = re.search(r"<thermostat mode='(\w+)'>", (run_dir / "input.xml").read_text()).group(1)
        assert mode != was  # i-PI runs a path-integral thermostat, not the classical one asked
        rec = json.loads((run_dir / "run.json").read_text())
        assert rec["protocol"]["thermostat"] == rec["protocol"]["ipi_thermostat"] == mode
        assert rec["system_info"]["protocol"]["thermostat"] == mode
        source = rec["system_info"]["sources"]["thermostat"]
        assert source.startswith(mode) and f"replaces {was}" in source, source
        assert any(n.startswith("thermostat") and f"replaces {was}" in n for n in rec["notes"]), rec["notes"]
    out = tmp_path / "svr_asked"
    res = dynamat_cmd("run", "--model", "emt", "--system", system, "--beads", "2", "--steps", "20",
                      "--out", str(out), "--thermostat", "svr")
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert res.returncode != 0 and len(lines) == 1 and "--thermostat svr" in lines[0], res.stderr
    assert not out.exists()
    res = dynamat_cmd("inputs", "--system", system, "--out", str(tmp_path / "hand"), "--beads", "4", "--steps", "20")
    assert res.returncode == 0, res.stderr
    mode = re.search(r"<thermostat mode='(\w+)'>", (tmp_path / "hand" / "input.xml").read_text()).group(1)
    assert f"i-PI {mode} " in res.stdout and "replaces svr" in res.stdout, res.stdout
