"""The variable-cell observables (dynamat.metrics.volume) against closed forms and physical values."""

from __future__ import annotations

import numpy as np
import pytest
from ase.build import bulk

from dynamat.metrics.volume import (
    density_g_cm3,
    lattice_errors,
    lattice_parameters,
    mean_volume_error_pct,
    thermal_expansion_coefficient,
    volume_hist_error_pct,
    volumes_A3,
)


def test_volume_and_density_of_copper_match_its_handbook_density():
    """fcc Cu at a = 3.615 Å (room temperature) has 8.93-8.96 g/cm³; the primitive and the cubic cell agree."""
    cubic, prim = bulk("Cu", "fcc", a=3.615, cubic=True), bulk("Cu", "fcc", a=3.615)
    assert volumes_A3(cubic.cell.array)[0] == pytest.approx(3.615**3, rel=1e-12)
    assert volumes_A3(prim.cell.array)[0] == pytest.approx(3.615**3 / 4, rel=1e-12)
    rho = density_g_cm3(cubic.cell.array, cubic.numbers)[0]
    assert rho == pytest.approx(density_g_cm3(prim.cell.array, prim.numbers)[0], rel=1e-12)
    assert 8.93 < rho < 8.96


def test_lattice_parameters_of_a_turned_hexagonal_cell():
    """a = b, c, α = β = 90°, γ = 120° whatever the cell's orientation (ASE's cellpar, independently)."""
    hcp = bulk("Mg", "hcp", a=3.2, c=5.2)
    rot = np.linalg.qr(np.random.default_rng(0).normal(size=(3, 3)))[0]
    cells = np.stack([hcp.cell.array, hcp.cell.array @ rot.T])
    par = lattice_parameters(cells)
    np.testing.assert_allclose(par, np.tile([3.2, 3.2, 5.2, 90, 90, 120], (2, 1)), atol=1e-10)
    np.testing.assert_allclose(par[0], hcp.cell.cellpar(), atol=1e-10)


def test_mean_volume_and_lattice_errors_closed_form():
    """A cell 1 % longer along a: volume error 1 %, length error 1 %; a sheared one: the angle's change."""
    ref = np.tile(np.diag([4.0, 5.0, 6.0]), (5, 1, 1))
    longer = ref * np.array([1.01, 1.0, 1.0])[:, None]
    assert mean_volume_error_pct(volumes_A3(ref), volumes_A3(longer)) == pytest.approx(1.0, rel=1e-12)
    err = lattice_errors(ref, longer)
    assert err["lattice_length_error_pct"] == pytest.approx(1.0, rel=1e-12)
    assert err["lattice_angle_error_deg"] == pytest.approx(0.0, abs=1e-12)
    sheared = ref.copy()
    sheared[:, 1, 0] = 5.0 * np.tan(np.radians(3.0))  # b tilted 3° towards a: γ = 87°
    assert lattice_errors(ref, sheared)["lattice_angle_error_deg"] == pytest.approx(3.0, rel=1e-9)


def test_volume_histogram_error_is_eq9_on_volumes():
    """Identical samples 0 %, disjoint ranges 100 %, two halves of one Gaussian well below both."""
    rng = np.random.default_rng(1)
    v = rng.normal(370.0, 1.5, 4000)
    assert volume_hist_error_pct(v, v) == 0.0
    assert volume_hist_error_pct(v, v + 50.0) == pytest.approx(100.0)
    assert 0.0 < volume_hist_error_pct(v[:2000], v[2000:]) < 15.0
    with pytest.raises(ValueError):
        volume_hist_error_pct(v, -v)


def test_thermal_expansion_coefficient_recovers_an_exponential_law():
    """⟨V⟩(T) = V0 exp(α T) gives α exactly (ln V is linear in T); one temperature is refused."""
    t = np.array([50.0, 150.0, 300.0])
    assert thermal_expansion_coefficient(t, 370.0 * np.exp(4.9e-5 * t)) == pytest.approx(4.9e-5, rel=1e-9)
    assert thermal_expansion_coefficient(t[:2], 370.0 * np.exp(4.9e-5 * t[:2])) == pytest.approx(4.9e-5, rel=1e-9)
    with pytest.raises(ValueError, match="two or more"):
        thermal_expansion_coefficient([300.0, 300.0], [370.0, 371.0])


def test_report_gives_thermal_expansion_where_npt_runs_span_temperatures(tmp_path):
    """Scores of one material at 100, 300 and 500 K (names differing in _<T>K): the NPT table's note gives the
    model's and the reference's α_V, each the slope of ln⟨V⟩ the scores hold; a lone temperature gives none."""
    import json

    from dynamat.report.tables import build_tables, load_results

    alpha_m, alpha_r = 6.0e-5, 5.0e-5
    for t in (100.0, 300.0, 500.0):
        d = tmp_path / "m" / f"bulkCu_{t:g}K"
        d.mkdir(parents=True)
        score = {"model": "m", "system": d.name, "status": "completed", "volume_error_pct": 1.0,
                 "volume_mean_mlip_A3": 370.0 * np.exp(alpha_m * t), "volume_mean_ref_A3": 371.0 * np.exp(alpha_r * t)}
        (d / "score.json").write_text(json.dumps(score))
    lone = tmp_path / "m" / "bulkAg_300K"
    lone.mkdir()
    (lone / "score.json").write_text(json.dumps({"model": "m", "system": lone.name, "status": "completed",
                                                 "volume_error_pct": 1.0, "volume_mean_mlip_A3": 400.0,
                                                 "volume_mean_ref_A3": 401.0}))
    notes = [n for n in build_tables(load_results(tmp_path))["npt_cell"].notes if n.startswith("thermal expansion")]
    assert len(notes) == 1 and "bulkCu" in notes[0] and "100-500 K" in notes[0]
    assert f"alpha_V = {alpha_m:.3g} /K" in notes[0] and f"reference {alpha_r:.3g} /K" in notes[0]


def test_scoring_treats_a_run_as_npt_from_run_json_or_a_changing_cell():
    """run.json's ensemble decides for a run folder; a trajectory made elsewhere is NPT when its cell changes
    beyond the written digits (so an NVT extxyz keeps its fixed-cell score)."""
    from types import SimpleNamespace

    from dynamat.scoring.run import is_npt

    fixed = SimpleNamespace(cells=np.tile(np.eye(3) * 7.18, (4, 1, 1)))
    moving = SimpleNamespace(cells=fixed.cells * np.array([1.0, 1.001, 1.002, 1.0])[:, None, None])
    assert not is_npt({}, fixed) and is_npt({}, moving)
    assert is_npt({"protocol": {"ensemble": "npt"}}, fixed)
    assert not is_npt({"protocol": {"ensemble": "nvt"}}, moving)
