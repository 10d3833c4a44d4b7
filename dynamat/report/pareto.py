"""Pure helpers for the accuracy-cost analysis: Pareto front and Pearson r.

Both minimise/compare plain float arrays; nothing here knows about models or files.

Pareto convention (paper Fig. 7, S13-S16: lower cost and lower error are both better)
-----------------------------------------------------------------------------------
Point ``j`` *dominates* point ``i`` when ``cost_j <= cost_i`` and ``error_j <= error_i``
with at least one of the two strictly smaller. A point is Pareto-optimal when no other
point dominates it. Consequences, chosen deliberately and tested:

* exact duplicates (same cost and same error) do not dominate each other, so two tied
  optimal models are *both* on the front;
* a tie in one coordinate is broken by the other: same cost but higher error, or same
  error but higher cost, is dominated;
* points with a non-finite cost or error (NaN, inf, None) never enter the comparison and
  are never optimal: a model without a cost measurement cannot be placed on the front.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

__all__ = ["as_float_array", "pareto_front", "pareto_staircase", "pearson_r"]


def as_float_array(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    """Convert to a 1-D float array, mapping None to NaN."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=float)


def pareto_front(cost: Sequence[float | None], error: Sequence[float | None]) -> np.ndarray:
    """Boolean mask of Pareto-optimal points when minimising both cost and error.

    See the module docstring for the treatment of ties and non-finite points.
    O(n log n): sort by (cost, error) and sweep, keeping the running minimum error.
    """
    c = as_float_array(cost)
    e = as_float_array(error)
    if c.shape != e.shape:
        raise ValueError(f"cost and error differ in length: {c.shape} vs {e.shape}")
    optimal = np.zeros(c.shape, dtype=bool)
    valid = np.flatnonzero(np.isfinite(c) & np.isfinite(e))
    if valid.size == 0:
        return optimal
    order = valid[np.lexsort((e[valid], c[valid]))]  # by cost, then error
    best_err = math.inf  # lowest error among points with strictly lower cost
    k = 0
    while k < order.size:
        # group of points with identical cost
        group_end = k
        while group_end + 1 < order.size and c[order[group_end + 1]] == c[order[k]]:
            group_end += 1
        group = order[k : group_end + 1]
        group_min = e[group[0]]  # sorted by error within a cost group
        if group_min < best_err:
            # only the lowest-error members of the group survive (exact duplicates tie)
            optimal[group[e[group] == group_min]] = True
            best_err = group_min
        k = group_end + 1
    return optimal


def pareto_staircase(cost: Sequence[float | None], error: Sequence[float | None]):
    """(x, y) of the step line through the Pareto-optimal points, sorted by cost,
    for drawing the front: horizontal then vertical segments (``where='post'``)."""
    c = as_float_array(cost)
    e = as_float_array(error)
    mask = pareto_front(c, e)
    idx = np.flatnonzero(mask)
    idx = idx[np.lexsort((e[idx], c[idx]))]
    return c[idx], e[idx]


def pearson_r(x: Sequence[float | None], y: Sequence[float | None]) -> tuple[float, int]:
    """Pearson correlation coefficient over the pairs where both values are finite.

    Returns ``(r, n)`` with ``n`` the number of pairs used; ``r`` is NaN when fewer than
    3 pairs remain or either variable has zero variance (r undefined).
    """
    a = as_float_array(x)
    b = as_float_array(y)
    if a.shape != b.shape:
        raise ValueError(f"x and y differ in length: {a.shape} vs {b.shape}")
    ok = np.isfinite(a) & np.isfinite(b)
    a, b = a[ok], b[ok]
    n = int(a.size)
    if n < 3:
        return math.nan, n
    da = a - a.mean()
    db = b - b.mean()
    denom = math.sqrt(float(np.dot(da, da)) * float(np.dot(db, db)))
    if denom == 0.0:
        return math.nan, n
    r = float(np.dot(da, db)) / denom
    return max(-1.0, min(1.0, r)), n
