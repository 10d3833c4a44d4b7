"""Pure helpers of the report: Pareto front, Pearson r, Eq. 11/12 composites."""

import math

import numpy as np
import pytest

from dynamat.report.pareto import pareto_front, pareto_staircase, pearson_r
from dynamat.report.tables import combined_scores


def test_pareto_front_known_answer_with_ties_and_dominated_points():
    #        name  cost   error   expected
    pts = [("A", 1.0, 10.0, True),    # cheapest at its error
           ("B", 1.0, 12.0, False),   # same cost as A, higher error -> dominated
           ("C", 2.0, 8.0, True),
           ("D", 2.0, 8.0, True),     # exact duplicate of C: neither dominates -> both optimal
           ("E", 3.0, 8.0, False),    # same error as C/D, higher cost -> dominated
           ("F", 4.0, 5.0, True),
           ("G", 5.0, 9.0, False),    # dominated by C, D and F
           ("H", math.nan, 1.0, False),  # no cost -> never optimal
           ("I", 6.0, None, False),   # no error -> never optimal
           ("J", 0.5, 20.0, True),    # cheapest of all
           ("K", 7.0, 5.0, False)]    # same error as F, costlier
    mask = pareto_front([p[1] for p in pts], [p[2] for p in pts])
    got = {p[0] for p, m in zip(pts, mask) if m}
    assert got == {p[0] for p in pts if p[3]}
    x, y = pareto_staircase([p[1] for p in pts], [p[2] for p in pts])
    assert list(x) == [0.5, 1.0, 2.0, 2.0, 4.0]
    assert list(y) == [20.0, 10.0, 8.0, 8.0, 5.0]


def _brute_force(c, e):
    n = len(c)
    out = np.zeros(n, bool)
    for i in range(n):
        if not (np.isfinite(c[i]) and np.isfinite(e[i])):
            continue
        out[i] = not any(
            np.isfinite(c[j]) and np.isfinite(e[j]) and c[j] <= c[i] and e[j] <= e[i]
            and (c[j] < c[i] or e[j] < e[i]) for j in range(n))
    return out


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_definition_on_random_sets_with_ties(seed):
    rng = np.random.default_rng(seed)
    c = rng.integers(0, 6, 40).astype(float)  # small integer grid -> many ties
    e = rng.integers(0, 6, 40).astype(float)
    c[rng.integers(0, 40, 3)] = np.nan
    assert (pareto_front(c, e) == _brute_force(c, e)).all()


def test_pareto_front_empty_and_length_mismatch():
    assert pareto_front([], []).size == 0
    assert not pareto_front([np.nan], [1.0]).any()
    with pytest.raises(ValueError):
        pareto_front([1, 2], [1])


def test_pearson_r_matches_numpy_corrcoef():
    rng = np.random.default_rng(3)
    x = rng.normal(size=12)
    y = 0.7 * x + rng.normal(scale=0.5, size=12)
    r, n = pearson_r(x, y)
    assert n == 12
    assert r == pytest.approx(np.corrcoef(x, y)[0, 1], abs=1e-12)
    # missing values are dropped pairwise, not zero-filled
    xm = list(x) + [None, 5.0]
    ym = list(y) + [1.0, math.nan]
    assert pearson_r(xm, ym) == (pytest.approx(r, abs=1e-12), 12)
    assert pearson_r(x, -y)[0] == pytest.approx(-r, abs=1e-12)


def test_pearson_r_undefined_cases():
    assert math.isnan(pearson_r([1, 2], [3, 4])[0])          # n < 3
    assert math.isnan(pearson_r([1, 1, 1], [1, 2, 3])[0])    # zero variance


def test_combined_scores_eq11_eq12_and_propagation():
    out = combined_scores(10.0, 40.0, 25.0, 1.0, 2.0, 2.0)
    assert out["E_RPV_pct"] == pytest.approx(25.0)
    assert out["L_RPV_pct"] == pytest.approx((100 + 1600 + 625) / 75)
    assert out["E_RPV_pct_unc"] == pytest.approx(3.0 / 3.0)
    # numerical derivative check of the propagated Lehmer uncertainty
    x = np.array([10.0, 40.0, 25.0])
    u = np.array([1.0, 2.0, 2.0])
    L = lambda v: (v ** 2).sum() / v.sum()  # noqa: E731
    grads = [(L(x + h) - L(x - h)) / 2e-6 for h in np.eye(3) * 1e-6]
    assert out["L_RPV_pct_unc"] == pytest.approx(math.sqrt(sum((g * s) ** 2 for g, s in zip(grads, u))), rel=1e-6)
    assert combined_scores(10.0, None, 25.0)["E_RPV_pct"] is None
