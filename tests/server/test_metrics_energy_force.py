"""Single-point energy and force errors (paper Eqs. 1–2) and the combined scores (Eqs. 11–12)."""

import numpy as np
import pytest
from ase.build import bulk
from ase.calculators.emt import EMT

from dynamat.metrics.combined import e_rpv, l_rpv
from dynamat.metrics.energy_force import (
    energy_fluctuation_rmse_per_atom,
    energy_rmse_per_atom,
    force_component_rmse,
    force_rmse,
    reference_to_isolated_atoms,
)


@pytest.fixture(scope="module")
def emt_labels():
    """EMT energies and forces on rattled Cu frames: a model scored against its own labels."""
    base = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    e, f = [], []
    for seed in range(4):
        a = base.copy()
        a.rattle(0.05, seed=seed)
        a.calc = EMT()
        e.append(a.get_potential_energy())
        f.append(a.get_forces())
    return np.array(e), np.array(f), len(base)


def test_model_against_its_own_labels_is_exact(emt_labels):
    e, f, n = emt_labels
    assert energy_rmse_per_atom(e, e, n) == 0.0
    assert energy_fluctuation_rmse_per_atom(e, e, n) == 0.0
    assert force_rmse(f, f) == 0.0
    assert force_rmse(f, f + 0.1) > 0


def test_energy_rmse_closed_form():
    e_ref = np.array([0.0, 0.0, 0.0, 0.0])
    e_pred = np.array([4.0, -4.0, 4.0, -4.0])  # ΔU = ±4 eV on 8 atoms
    assert energy_rmse_per_atom(e_pred, e_ref, 8) == pytest.approx(0.5)  # sqrt(4·16 / (4·8²))
    # a constant offset is an Eq. 1 error but not a fluctuation error
    assert energy_rmse_per_atom(e_ref + 2.0, e_ref, 4) == pytest.approx(0.5)
    assert energy_fluctuation_rmse_per_atom(e_ref + 2.0, e_ref, 4) == 0.0
    assert energy_fluctuation_rmse_per_atom(e_pred, e_ref, 8) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="differ in length"):
        energy_rmse_per_atom([1.0], [1.0, 2.0], 1)
    with pytest.raises(ValueError, match="n_atoms"):
        energy_rmse_per_atom([1.0], [1.0], 0)


def test_force_rmse_divides_by_MN_not_3MN():
    f_ref = np.zeros((2, 3, 3))
    f_pred = np.zeros((2, 3, 3))
    f_pred[:, :, 0] = 3.0
    f_pred[:, :, 1] = 4.0  # every atom off by a vector of length 5
    assert force_rmse(f_pred, f_ref) == pytest.approx(5.0)
    assert force_component_rmse(f_pred, f_ref) == pytest.approx(5.0 / np.sqrt(3))
    with pytest.raises(ValueError, match=r"\(M, N, 3\)"):
        force_rmse(np.zeros((2, 3, 3)), np.zeros((2, 4, 3)))


def test_isolated_atom_referencing_removes_code_offsets():
    numbers = np.array([29, 29, 79])
    e = np.array([-10.0, -11.0])
    iso = {29: -1.0, 79: -2.5}
    np.testing.assert_allclose(reference_to_isolated_atoms(e, numbers, iso), e + 4.5)
    # two "codes" whose energies differ only by per-element constants agree after referencing
    iso_other = {29: 5.0, 79: 1.0}
    e_other = e + 2 * (5.0 + 1.0) + (1.0 + 2.5)
    a = reference_to_isolated_atoms(e, numbers, iso)
    b = reference_to_isolated_atoms(e_other, numbers, iso_other)
    assert energy_rmse_per_atom(b, a, 3) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ValueError, match="Z = \\[79\\]"):
        reference_to_isolated_atoms(e, numbers, {29: -1.0})


def test_combined_scores():
    assert e_rpv(3.0, 60.0, 21.0) == pytest.approx(28.0)
    assert l_rpv(3.0, 60.0, 21.0) == pytest.approx((9 + 3600 + 441) / 84)
    assert l_rpv(10.0, 10.0, 10.0) == pytest.approx(e_rpv(10.0, 10.0, 10.0))
    assert l_rpv(0.0, 0.0, 0.0) == 0.0  # 0/0 defined as 0
    assert l_rpv(3.0, 60.0, 21.0) > e_rpv(3.0, 60.0, 21.0)  # the worst error weighs more
    with pytest.raises(ValueError, match="non-negative"):
        e_rpv(-1.0, 2.0, 3.0)
    with pytest.raises(ValueError, match="finite"):
        l_rpv(np.nan, 2.0, 3.0)
