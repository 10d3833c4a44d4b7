"""score_md / score_singlepoint on synthetic trajectories with known answers."""

import json

import numpy as np
import pytest
from ase.build import bulk
from scipy.signal import lfilter

from dynamat.scoring import ERROR_KEYS, MD_KEYS, score_md, score_singlepoint
from dynamat.trajectory import Trajectory
from conftest import einstein_oscillations


def einstein_md(n_frames, dt_fs, temperature_k=300.0, seed=0, p_mean_gpa=0.0, stress=True,
                velocities=False, freq=(3.0, 7.0)):
    """32 Cu atoms on fcc sites, each Cartesian component an oscillator holding k_B T.

    Stress: an AR(1) pressure series (τ ≈ 10 frames) around ``p_mean_gpa``.
    """
    rng = np.random.default_rng(seed)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    disp, vel = einstein_oscillations(rng, len(atoms), atoms.get_masses()[:, None], n_frames, dt_fs, temperature_k,
                                      freq)
    pos = atoms.positions + disp
    s = None
    if stress:
        p = lfilter([1.0], [1.0, -0.9], rng.normal(scale=0.05, size=n_frames)) + p_mean_gpa
        s = np.zeros((n_frames, 6))
        s[:, :3] = -p[:, None] / 160.21766208  # GPa → eV/Å³, ASE sign
    return Trajectory(numbers=atoms.numbers, positions=pos, cells=atoms.cell[:], dt_fs=dt_fs,
                      stress=s, velocities=vel if velocities else None,
                      temperature_K=temperature_k)


def test_identical_trajectories_score_zero_everywhere():
    ref = einstein_md(600, 4.0)
    out = score_md(ref, ref, n_boot=20)
    assert set(MD_KEYS) <= set(out)
    for key in ERROR_KEYS:
        assert out[key] == 0.0, key
        assert out[f"{key}_unc"] is not None and out[f"{key}_unc"] >= 0
        assert out[f"{key}_floor"] is not None and out[f"{key}_floor"] >= 0
    assert out["matched_duration_fs"] == pytest.approx(599 * 4.0)
    assert out["n_frames_ref"] == out["n_frames_mlip"] == 600
    assert out["velocity_source"] == "finite_difference"
    assert json.loads(json.dumps(out)) == out  # plain JSON types, ready for the results file


def test_ideal_gas_against_crystal_and_disjoint_pressures_score_100():
    crystal = einstein_md(300, 4.0, p_mean_gpa=0.0)
    rng = np.random.default_rng(1)
    gas = Trajectory(numbers=crystal.numbers, positions=rng.uniform(0, 7.22, (300, 32, 3)),
                     cells=crystal.cells, dt_fs=4.0, stress=crystal.stress - 1.0)  # +160 GPa
    out = score_md(gas, crystal, n_boot=0)
    assert out["rdf_error_pct"] == 100.0
    assert out["pressure_hist_error_pct"] == 100.0
    assert out["pressure_mae_GPa"] == pytest.approx(160.2, rel=1e-3)
    reverse = score_md(crystal, gas, n_boot=0)
    assert reverse["rdf_error_pct"] > 95.0
    assert reverse["E_RPV_pct"] == pytest.approx(
        (reverse["rdf_error_pct"] + 100.0 + reverse["vdos_error_pct"]) / 3)


def test_missing_stress_gives_none_not_zero():
    ref = einstein_md(300, 4.0)
    mlip = einstein_md(300, 4.0, seed=1, stress=False)
    out = score_md(ref, mlip, n_boot=10)
    for key in ("pressure_mae_GPa", "pressure_hist_error_pct", "E_RPV_pct", "L_RPV_pct"):
        assert out[key] is None and out[f"{key}_unc"] is None
    assert out["rdf_error_pct"] > 0 and out["vdos_error_pct"] > 0
    assert out["rdf_error_pct_unc"] > 0


def test_durations_are_matched_across_frame_intervals():
    ref = einstein_md(2000, 2.0)  # 3998 fs
    mlip = einstein_md(500, 4.0, seed=1)  # 1996 fs
    out = score_md(ref, mlip, n_boot=0)
    assert out["matched_duration_fs"] == pytest.approx(1996.0)
    assert out["n_frames_ref"] == 999 and out["n_frames_mlip"] == 500
    assert out["vdos_max_lag_fs"] == pytest.approx(499 * 2.0)


def test_same_dynamics_at_different_frame_intervals_scores_low(monkeypatch):
    fine = einstein_md(2000, 2.0, freq=(15.0, 40.0))  # fast modes: sinc² ≈ 0.83 at 4 fs
    coarse = fine[::2]  # the same run saved every 4 fs
    assert coarse.dt_fs == 4.0
    out = score_md(fine, coarse, n_boot=0)
    assert out["rdf_error_pct"] < 3.0
    assert out["pressure_mae_GPa"] < 0.02
    assert out["vdos_error_pct"] < 2.0  # the same as with exact velocities (1.3 %)
    # without equalising the two finite-difference filters the same dynamics look different
    import dynamat.scoring.core

    monkeypatch.setattr(dynamat.scoring.core, "fd_transfer", lambda nu, dt: 1.0)
    assert score_md(fine, coarse, n_boot=0)["vdos_error_pct"] > 3.0


def test_stored_velocities_are_used_only_when_both_sides_have_them():
    a = einstein_md(400, 4.0, velocities=True)
    b = einstein_md(400, 4.0, seed=2, velocities=True)
    assert score_md(a, b, n_boot=0)["velocity_source"] == "stored"
    c = einstein_md(400, 4.0, seed=2, velocities=False)
    assert score_md(a, c, n_boot=0)["velocity_source"] == "finite_difference"


def test_kinetic_temperature_flags_a_wrong_frame_interval():
    ref = einstein_md(800, 2.0, temperature_k=300.0)
    wrong = einstein_md(800, 2.0, temperature_k=300.0, seed=1)
    wrong.dt_fs = 4.0  # saved every 2 fs but labelled 4 fs
    out = score_md(ref, wrong, n_boot=0)
    assert out["kinetic_temperature_ref_K"] == pytest.approx(300.0, rel=0.06)
    assert out["kinetic_temperature_mlip_K"] == pytest.approx(75.0, rel=0.06)
    assert out["frame_interval_suspect_ref"] is False
    assert out["frame_interval_suspect_mlip"] is True


def test_noise_floor_of_a_long_stationary_trajectory_is_small():
    ref = einstein_md(8000, 4.0)
    out = score_md(ref, ref, n_boot=50)
    assert out["rdf_error_pct_floor"] < 1.0
    assert out["pressure_mae_GPa_floor"] < 0.03  # σ_P = 0.11 GPa, τ ≈ 10 frames
    assert out["pressure_hist_error_pct_floor"] < 15.0
    assert out["vdos_error_pct_floor"] < 10.0
    # a genuinely different model stands clear of the floor and of its own error bar
    other = einstein_md(8000, 4.0, seed=3, p_mean_gpa=0.5, freq=(3.5, 8.0))
    diff = score_md(ref, other, n_boot=50)
    for key in ("pressure_mae_GPa", "pressure_hist_error_pct", "vdos_error_pct"):
        assert diff[key] > diff[f"{key}_floor"] + 3 * diff[f"{key}_unc"], key


def test_score_singlepoint():
    rng = np.random.default_rng(0)
    e = rng.normal(size=5) - 100
    f = rng.normal(size=(5, 4, 3))
    out = score_singlepoint(e, f, e, f, 4)
    assert out == {"energy_rmse_eV_per_atom": 0.0, "force_rmse_eV_per_A": 0.0,
                   "energy_fluctuation_rmse_eV_per_atom": 0.0}
    # a model with another energy zero: Eq. 1 needs isolated-atom referencing
    numbers = np.array([29, 29, 29, 79])
    shifted = e + 3 * 2.0 + 1.0
    raw = score_singlepoint(e, f, shifted, f, 4)
    assert raw["energy_rmse_eV_per_atom"] == pytest.approx(7.0 / 4)
    assert raw["energy_fluctuation_rmse_eV_per_atom"] == pytest.approx(0.0, abs=1e-12)
    fixed = score_singlepoint(e, f, shifted, f, 4, e_iso_ref={29: 0.0, 79: 0.0},
                              e_iso_pred={29: 2.0, 79: 1.0}, numbers=numbers)
    assert fixed["energy_rmse_eV_per_atom"] == pytest.approx(0.0, abs=1e-12)
    summed = score_singlepoint(e, f, shifted, f, 4, e_iso_ref=0.0, e_iso_pred=7.0)
    assert summed["energy_rmse_eV_per_atom"] == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="both sides"):
        score_singlepoint(e, f, e, f, 4, e_iso_ref=0.0)


def test_input_validation():
    ref = einstein_md(100, 4.0)
    with pytest.raises(ValueError, match="dt_fs"):
        score_md(ref, Trajectory(numbers=ref.numbers, positions=ref.positions, cells=ref.cells))
    small = Trajectory(numbers=ref.numbers[:4], positions=ref.positions[:, :4], cells=ref.cells,
                       dt_fs=4.0)
    with pytest.raises(ValueError, match="atom counts"):
        score_md(ref, small)
    with pytest.raises(ValueError, match="at least 8"):
        score_md(ref, ref[:3])
    with pytest.raises(ValueError, match="dims"):
        score_md(ref, ref, dims=1)


def test_the_fewest_matched_frames_score_with_finite_uncertainties():
    """MIN_MATCHED_FRAMES frames score: a bootstrap replicate that draws none of the few blocks whose origins
    reach the longest VACF lag has no spectrum there (0/0) and is left out of the standard error, as NaN
    replicates are; it failed the whole score ("MLIP spectrum must be finite", "errors must be finite").
    2000 replicates of 8 one-frame blocks: such a replicate is all but certain (each one 1 in 256)."""
    from dynamat.trajectory import MIN_MATCHED_FRAMES

    ref = einstein_md(400, 2.5, seed=1)
    mlip = einstein_md(MIN_MATCHED_FRAMES, 2.5, seed=2)
    res = score_md(ref, mlip, dims=3, n_boot=2000)
    assert res["n_frames_mlip"] == MIN_MATCHED_FRAMES
    for key in ("vdos_error_pct", "vdos_error_pct_unc", "rdf_error_pct_unc", "E_RPV_pct_unc"):
        assert key in res and np.isfinite(res[key]), (key, res.get(key))
