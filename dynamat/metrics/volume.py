"""Cell observables of variable-cell (NPT) runs: volume (density) distribution, lattice, thermal expansion.

Not in the paper, which is fixed-cell only (its stated limitation); each is the paper's construction applied
to the cell instead of the pressure. Cells are (M, 3, 3) Å, row vectors; volumes in Å³.

- mean-volume error  E_⟨V⟩ = 100 · |⟨V⟩_MLIP − ⟨V⟩_REF| / ⟨V⟩_REF  (%), Eq. 7's mean comparison made
  relative; equal to the mean-density error to first order (ρ = m/V);
- volume-histogram error  E_V = 100 · Σ_k |h_k^REF − h_k^MLIP| Δ_k / 2  (%), Eq. 9 on shared volume
  bins (the pressure histogram's edge rule: Freedman–Diaconis width from the reference);
- lattice errors  E_a = max_i 100 · |⟨a_i⟩_MLIP − ⟨a_i⟩_REF| / ⟨a_i⟩_REF  (%) over the three cell
  lengths, and  E_α = max_i |⟨α_i⟩_MLIP − ⟨α_i⟩_REF|  (degrees) over the three angles;
- thermal expansion  α_V = d ln⟨V⟩ / dT  (1/K), the least-squares slope of ln⟨V⟩ against T over runs
  at two or more temperatures (α_L = α_V / 3 for a cubic crystal).
"""

from __future__ import annotations

import numpy as np
from ase.data import atomic_masses

from dynamat.metrics.pressure import pressure_hist_edges, pressure_hist_error

__all__ = [
    "density_g_cm3",
    "lattice_errors",
    "lattice_parameters",
    "mean_volume_error_pct",
    "thermal_expansion_coefficient",
    "volume_hist_edges",
    "volume_hist_error_pct",
    "volumes_A3",
]

_AMU_PER_A3_TO_G_PER_CM3 = 1.66053906660  # 1 amu/Å³ = 1.66054 g/cm³


def _cells(cells) -> np.ndarray:
    c = np.asarray(cells, dtype=float)
    c = c[None] if c.ndim == 2 else c
    if c.ndim != 3 or c.shape[1:] != (3, 3):
        raise ValueError(f"cells must be (M, 3, 3) Å, got {c.shape}")
    if not np.all(np.isfinite(c)):
        raise ValueError("cells contain non-finite values")
    return c


def volumes_A3(cells) -> np.ndarray:
    """Cell volume per frame, V = |det h| (Å³), h the (3, 3) matrix of row lattice vectors."""
    return np.abs(np.linalg.det(_cells(cells)))


def density_g_cm3(cells, numbers) -> np.ndarray:
    """Mass density per frame, ρ = Σ_i m_i / V (g/cm³), masses from ASE's table by atomic number."""
    mass = float(atomic_masses[np.asarray(numbers, dtype=int)].sum())
    return mass * _AMU_PER_A3_TO_G_PER_CM3 / volumes_A3(cells)


def _sample(v, name: str) -> np.ndarray:
    v = np.asarray(v, dtype=float).reshape(-1)
    if v.size == 0 or not np.all(np.isfinite(v)) or np.any(v <= 0):
        raise ValueError(f"{name} must be a non-empty sample of positive, finite volumes")
    return v


def mean_volume_error_pct(v_ref, v_mlip) -> float:
    """E_⟨V⟩ = 100 · |⟨V⟩_MLIP − ⟨V⟩_REF| / ⟨V⟩_REF in %: each side averaged over its own frames (frames are
    never paired: the runs are independent realisations, as for the pressure MAE, Eq. 6–7)."""
    v_ref, v_mlip = _sample(v_ref, "v_ref"), _sample(v_mlip, "v_mlip")
    return 100.0 * abs(float(v_mlip.mean()) - float(v_ref.mean())) / float(v_ref.mean())


def volume_hist_edges(v_ref, v_mlip) -> np.ndarray:
    """Shared volume bins for Eq. 9: the pressure histogram's rule (:func:`pressure_hist_edges`: Freedman–
    Diaconis width from the reference's IQR over the pooled range, 10–200 bins)."""
    return pressure_hist_edges(_sample(v_ref, "v_ref"), _sample(v_mlip, "v_mlip"))


def volume_hist_error_pct(v_ref, v_mlip, bins=None) -> float:
    """E_V = 100 · Σ_k |h_k^REF − h_k^MLIP| Δ_k / 2 in % (Eq. 9 on volumes): the non-overlap of the two
    area-normalised volume histograms on shared edges (``bins``: None for :func:`volume_hist_edges`, a count,
    or edges). 0 = identical histograms, 100 = disjoint volume ranges."""
    v_ref, v_mlip = _sample(v_ref, "v_ref"), _sample(v_mlip, "v_mlip")
    return pressure_hist_error(v_ref, v_mlip, volume_hist_edges(v_ref, v_mlip) if bins is None else bins)


def lattice_parameters(cells) -> np.ndarray:
    """(M, 6): lengths a, b, c (Å) of the three lattice vectors and angles α = ∠(b, c), β = ∠(a, c),
    γ = ∠(a, b) (degrees) per frame; rotation-invariant, so a flexible cell that turns keeps its numbers."""
    c = _cells(cells)
    lengths = np.linalg.norm(c, axis=2)

    def angle(i, j):
        cos = np.einsum("mk,mk->m", c[:, i], c[:, j]) / (lengths[:, i] * lengths[:, j])
        return np.degrees(np.arccos(np.clip(cos, -1.0, 1.0)))

    return np.column_stack([lengths, angle(1, 2), angle(0, 2), angle(0, 1)])


def lattice_errors(cells_ref, cells_mlip) -> dict:
    """``lattice_length_error_pct`` E_a = max_i 100·|⟨a_i⟩_MLIP − ⟨a_i⟩_REF|/⟨a_i⟩_REF (%) and
    ``lattice_angle_error_deg`` E_α = max_i |⟨α_i⟩_MLIP − ⟨α_i⟩_REF| (degrees), each side averaged over its
    frames; the worst axis, so an anisotropic error is not averaged away."""
    p_ref, p_mlip = lattice_parameters(cells_ref).mean(axis=0), lattice_parameters(cells_mlip).mean(axis=0)
    return {
        "lattice_length_error_pct": float(np.max(100.0 * np.abs(p_mlip[:3] - p_ref[:3]) / p_ref[:3])),
        "lattice_angle_error_deg": float(np.max(np.abs(p_mlip[3:] - p_ref[3:]))),
    }


def thermal_expansion_coefficient(temperatures_K, mean_volumes_A3) -> float:
    """Volumetric thermal expansion α_V = d ln⟨V⟩/dT (1/K): the least-squares slope of ln⟨V⟩ against T over
    runs at two or more distinct temperatures (at the same pressure). α_L = α_V/3 for a cubic crystal."""
    t = np.asarray(temperatures_K, dtype=float).reshape(-1)
    v = np.asarray(mean_volumes_A3, dtype=float).reshape(-1)
    if t.shape != v.shape or len(np.unique(t)) < 2:
        raise ValueError("thermal expansion needs mean volumes at two or more distinct temperatures")
    if not (np.all(np.isfinite(t)) and np.all(np.isfinite(v)) and np.all(v > 0)):
        raise ValueError("temperatures and volumes must be finite, volumes positive")
    return float(np.polyfit(t, np.log(v), 1)[0])
