"""Pressure (paper Eqs. 5–9): EMT stresses, the kinetic term, histogram error, bin rule."""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.velocitydistribution import thermalize_momenta

from dynamat.metrics.pressure import (
    pressure_GPa,
    pressure_hist_edges,
    pressure_hist_error,
    pressure_hist_error_sensitivity,
    pressure_mae,
    pressure_md_GPa,
    pressure_wasserstein_GPa,
)
from dynamat.metrics.vdos import kinetic_temperature
from dynamat.units import ASE_TIME_FS, KB_EV_PER_K


@pytest.fixture(scope="module")
def emt_cu():
    atoms = bulk("Cu", "fcc", a=3.55, cubic=True).repeat(2)  # compressed: P ≠ 0
    atoms.rattle(0.05, seed=1)
    atoms.calc = EMT()
    return atoms


def test_configurational_pressure_of_emt_equals_minus_trace_over_three(emt_cu):
    stress = emt_cu.get_stress()  # ASE Voigt, eV/Å³, configurational (no ideal-gas term)
    p = pressure_GPa(stress)[0]
    assert p == pytest.approx(-stress[:3].sum() / 3 / units.GPa, rel=1e-12)
    assert p > 1.0  # compressed copper pushes outwards
    # and it is the thermodynamic −dE/dV under a uniform affine strain
    e = []
    for eps in (-1e-5, 1e-5):
        a = emt_cu.copy()
        a.calc = EMT()
        a.set_cell(emt_cu.cell * (1 + eps), scale_atoms=True)
        e.append((a.get_potential_energy(), a.get_volume()))
    dedv = (e[1][0] - e[0][0]) / (e[1][1] - e[0][1])
    assert p == pytest.approx(-dedv / units.GPa, rel=1e-4)


def test_kinetic_term_is_not_mixed_in(emt_cu):
    atoms = emt_cu.copy()
    atoms.calc = EMT()
    thermalize_momenta(atoms, temperature_K=300, rng=np.random.default_rng(0))
    v = atoms.get_velocities()[None] / ASE_TIME_FS  # Å/fs
    m = atoms.get_masses()
    vol = atoms.get_volume()
    p_conf = pressure_GPa(atoms.get_stress())
    p_md = pressure_md_GPa(atoms.get_stress(), v, m, vol)  # i-PI's pressure_md analogue
    # pressure_md − configurational = N k_B T / V with T from 3N degrees of freedom
    t3n = kinetic_temperature(v, m, remove_com=False)
    expected = len(atoms) * KB_EV_PER_K * t3n / vol / units.GPa
    np.testing.assert_allclose(p_md - p_conf, expected, rtol=1e-10)
    assert (p_md - p_conf)[0] > 0.05  # ~0.15 GPa for 32 Cu at ~300 K: not negligible
    # ASE agrees when asked for the ideal-gas term explicitly
    full = atoms.get_stress(include_ideal_gas=True)
    np.testing.assert_allclose(p_md, pressure_GPa(full), rtol=1e-10)


def test_two_dimensional_pressure_uses_in_plane_components_only():
    s = np.array([[1.0, 3.0, 100.0, 7.0, 8.0, 9.0]]) * units.GPa
    assert pressure_GPa(s, dims=2)[0] == pytest.approx(-2.0)
    assert pressure_GPa(s, dims=3)[0] == pytest.approx(-104 / 3)
    with pytest.raises(ValueError, match="dims"):
        pressure_GPa(s, dims=1)
    with pytest.raises(ValueError, match="Voigt"):
        pressure_GPa(np.zeros((3, 3)))


def test_pressure_mae_averages_each_side_separately():
    assert pressure_mae([1.0, 2.0, 3.0], [5.0, 7.0]) == pytest.approx(4.0)
    assert pressure_mae([1.0, 3.0], [3.0, 1.0]) == 0.0  # unpaired: same means, no error
    with pytest.raises(ValueError, match="empty"):
        pressure_mae([], [1.0])
    with pytest.raises(ValueError, match="non-finite"):
        pressure_mae([np.nan], [1.0])


def test_pressure_hist_error_limits_and_closed_form():
    rng = np.random.default_rng(0)
    p = rng.normal(size=2000)
    assert pressure_hist_error(p, p) == 0.0
    assert pressure_hist_error(p, p + 100.0) == 100.0  # disjoint samples
    # explicit edges: reference all in bin 0, MLIP half in bin 0 and half in bin 1
    ref = np.full(10, 0.5)
    mlip = np.r_[np.full(5, 0.5), np.full(5, 1.5)]
    assert pressure_hist_error(ref, mlip, bins=[0.0, 1.0, 2.0]) == pytest.approx(50.0)
    # mass outside explicit edges counts as non-overlap rather than vanishing
    assert pressure_hist_error(ref, mlip, bins=[0.0, 1.0]) == pytest.approx(50.0)
    # a shift of one standard deviation of a Gaussian: overlap error 2Φ(½) − 1 ≈ 38 %
    big = rng.normal(size=200_000)
    assert pressure_hist_error(big, rng.normal(size=200_000) + 1.0) == pytest.approx(38.3, abs=1.5)


def test_bin_rule_follows_reference_width_not_the_offset():
    rng = np.random.default_rng(1)
    ref = rng.normal(size=1000)
    e_near = pressure_hist_edges(ref, rng.normal(size=1000) + 0.5)
    width = 2 * np.subtract(*np.percentile(ref, [75, 25])) * 1000 ** (-1 / 3)
    assert np.diff(e_near)[0] == pytest.approx(width, rel=0.15)
    # far-off model: the bin count is capped instead of exploding
    e_far = pressure_hist_edges(ref, rng.normal(size=1000) + 1e4)
    assert len(e_far) - 1 == 200
    assert len(pressure_hist_edges(np.ones(5), np.ones(5))) == 2  # degenerate: one bin


def test_pressure_wasserstein_is_the_shift():
    rng = np.random.default_rng(2)
    p = rng.normal(size=500)
    assert pressure_wasserstein_GPa(p, p + 0.7) == pytest.approx(0.7)
    assert pressure_wasserstein_GPa(p, p) == 0.0


def test_pressure_hist_error_sensitivity_by_hand():
    # ref 0, 1.7, 2.9, 10 GPa; mlip 0, 1.2, 3.1, 10 GPa (pooled range [0, 10]).
    # Bin rule: IQR_ref = 4.675 − 1.275 = 3.4, h = 2 · 3.4 · 4^(−1/3) ≈ 4.3 GPa → 3 bins,
    # raised to the floor of 10 bins (1 GPa wide).
    #   10 bins: 1.7 | 1.2 share bin 1; 2.9 | 3.1 fall in bins 2 | 3 → Σ|Δ| = ½ → E_P = 25 %
    #    5 bins (2 GPa): both pairs share a bin (0 and 1) → 0 %
    #   20 bins (½ GPa): 1.2 | 1.7 in bins 2 | 3 and 2.9 | 3.1 in 5 | 6 → Σ|Δ| = 1 → 50 %
    out = pressure_hist_error_sensitivity([0, 1.7, 2.9, 10], [0, 1.2, 3.1, 10])
    assert (out["bins"], out["bins_half"], out["bins_double"]) == (10, 5, 20)
    assert out["error_pct"] == pytest.approx(25.0)
    assert out["error_half_bins_pct"] == pytest.approx(0.0)
    assert out["error_double_bins_pct"] == pytest.approx(50.0)
    assert out["error_pct"] == pressure_hist_error([0, 1.7, 2.9, 10], [0, 1.2, 3.1, 10])
