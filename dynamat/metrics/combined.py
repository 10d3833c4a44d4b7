"""Combined observable errors (paper Eqs. 11–12). Inputs and outputs in percent."""

from __future__ import annotations

import numpy as np

__all__ = ["e_rpv", "l_rpv"]


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
