"""Combined observable errors (paper Eqs. 11–12) and their propagated uncertainties. Percent in and out.

The one home of Eq. 11–12: ``score_md`` (per system, bootstrap uncertainty from replicates of the
three errors put through :func:`e_rpv` / :func:`l_rpv`) and the report's model-level rows
(:func:`combined_scores`, first-order propagation of the three means' uncertainties) both call it.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["combined_scores", "e_rpv", "l_rpv"]


def _three(e_rdf, e_p, e_vdos) -> np.ndarray:
    e = np.array([e_rdf, e_p, e_vdos], dtype=float)
    if not np.all(np.isfinite(e)):
        raise ValueError(f"errors must be finite, got {e.tolist()}")
    if np.any(e < 0):
        raise ValueError(f"errors must be non-negative, got {e.tolist()}")
    return e


def e_rpv(e_rdf: float, e_p: float, e_vdos: float) -> float:
    """Ē_RPV = (E_RDF + E_P + E_VDOS) / 3 (paper Eq. 11)."""
    return float(_three(e_rdf, e_p, e_vdos).mean())


def l_rpv(e_rdf: float, e_p: float, e_vdos: float) -> float:
    """L_RPV = Σ E² / Σ E, the Lehmer mean of the three errors (paper Eq. 12).

    Each error is weighted by its own size, so the worst observable (usually pressure)
    dominates; L_RPV ≥ Ē_RPV with equality when the three are equal. 0/0 (all three errors
    zero, a perfect model) is defined as 0.
    """
    e = _three(e_rdf, e_p, e_vdos)
    s = e.sum()
    return 0.0 if s == 0 else float((e**2).sum() / s)


def combined_scores(
    e_rdf: float | None, e_p: float | None, e_vdos: float | None,
    u_rdf: float | None = None, u_p: float | None = None, u_vdos: float | None = None,
) -> dict[str, float | None]:
    """Eq. 11 and Eq. 12 of the three errors (``E_RPV_pct``, ``L_RPV_pct``), None when one is missing,
    with first-order propagated standard errors (``<key>_unc``) when all three uncertainties are given.

    The three errors are taken as independent (they come from different observables, or from means
    over systems of them): σ_E = sqrt(Σ u_i²)/3 and σ_L = sqrt(Σ (∂L/∂E_i · u_i)²) with
    ∂L/∂E_i = (2 E_i S₁ − S₂)/S₁² (S_k = Σ E^k); σ_L is None at S₁ = 0, where L is not differentiable.
    """
    out: dict[str, float | None] = {"E_RPV_pct": None, "E_RPV_pct_unc": None,
                                    "L_RPV_pct": None, "L_RPV_pct_unc": None}
    xs = [e_rdf, e_p, e_vdos]
    if any(x is None for x in xs):
        return out
    out["E_RPV_pct"] = e_rpv(*xs)
    out["L_RPV_pct"] = l_rpv(*xs)
    us = [u_rdf, u_p, u_vdos]
    if all(u is not None for u in us):
        out["E_RPV_pct_unc"] = math.sqrt(sum(u * u for u in us)) / 3.0
        s1 = sum(xs)
        if s1 > 0:
            s2 = sum(x * x for x in xs)
            grads = [(2 * x * s1 - s2) / (s1 * s1) for x in xs]
            out["L_RPV_pct_unc"] = math.sqrt(sum((g * u) ** 2 for g, u in zip(grads, us)))
    return out
