"""Single-point energy and force errors on reference frames (paper Eqs. 1–2).

Energies in eV (total, per configuration), forces in eV/Å, shapes (M,) and (M, N, 3).
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

__all__ = [
    "energy_fluctuation_rmse_per_atom",
    "energy_rmse_per_atom",
    "force_component_rmse",
    "force_rmse",
    "reference_to_isolated_atoms",
]


def _energies(e_pred, e_ref) -> tuple[np.ndarray, np.ndarray]:
    e_pred = np.asarray(e_pred, dtype=float).reshape(-1)
    e_ref = np.asarray(e_ref, dtype=float).reshape(-1)
    if e_pred.shape != e_ref.shape:
        raise ValueError(f"energy arrays differ in length: {e_pred.shape} vs {e_ref.shape}")
    if e_pred.size == 0:
        raise ValueError("no energies given")
    if not (np.all(np.isfinite(e_pred)) and np.all(np.isfinite(e_ref))):
        raise ValueError("energies contain non-finite values")
    return e_pred, e_ref


def _n_atoms(n_atoms, m: int) -> np.ndarray:
    n = np.broadcast_to(np.asarray(n_atoms, dtype=float), (m,))
    if np.any(n < 1) or np.any(n != np.round(n)):
        raise ValueError(f"n_atoms must be positive integers, got {n_atoms}")
    return n


def energy_rmse_per_atom(e_pred_eV, e_ref_eV, n_atoms) -> float:
    """U_RMSE in eV/atom (paper Eq. 1): sqrt(Σ_i (U_i^MLIP − U_i^REF)² / (M N²)).

    That is the RMSE of total energies divided by N, equivalently the RMSE of per-atom
    energies. Absolute energies are only comparable when both sides share an energy zero; when
    the reference and model codes differ (VASP vs FHI-aims vs a model trained on another code),
    first subtract isolated-atom energies on each side with :func:`reference_to_isolated_atoms`.
    ``n_atoms`` may be a scalar or per-frame (M,).
    """
    e_pred, e_ref = _energies(e_pred_eV, e_ref_eV)
    n = _n_atoms(n_atoms, len(e_pred))
    return float(np.sqrt(np.mean(((e_pred - e_ref) / n) ** 2)))


def energy_fluctuation_rmse_per_atom(e_pred_eV, e_ref_eV, n_atoms) -> float:
    """RMSE of mean-subtracted per-atom energies in eV/atom (Matbench-discovery's energy_rmse).

    Not Eq. 1: subtracting each side's trajectory mean removes any constant offset between
    energy zeros, so it scores only how well the model follows the energy *fluctuations* along
    the trajectory. It is never larger than Eq. 1 after the best constant shift. Exactly
    Matbench-discovery's ``energy_rmse`` (``metrics/md.py::calc_energy_force_rmse``:
    (E − mean E)/N on each side, RMS of the difference; N is fixed along a trajectory).
    """
    e_pred, e_ref = _energies(e_pred_eV, e_ref_eV)
    n = _n_atoms(n_atoms, len(e_pred))
    a = e_pred / n
    b = e_ref / n
    return float(np.sqrt(np.mean(((a - a.mean()) - (b - b.mean())) ** 2)))


def reference_to_isolated_atoms(energies, numbers, e_iso_by_Z: Mapping[int, float]) -> np.ndarray:
    """Total energies minus the sum of isolated-atom energies, in eV (atomisation referencing).

    ``numbers``: (N,) atomic numbers (fixed composition) or (M, N); ``e_iso_by_Z``: Z → energy
    of the isolated atom in eV, computed with the same method as ``energies``. The result is a
    cohesive-type energy whose zero no longer depends on the code's pseudopotential or basis.
    """
    e = np.asarray(energies, dtype=float).reshape(-1)
    z = np.asarray(numbers, dtype=int)
    if z.ndim == 1:
        z = np.broadcast_to(z, (len(e), len(z)))
    if z.ndim != 2 or len(z) != len(e):
        raise ValueError(f"numbers must be (N,) or ({len(e)}, N), got {np.shape(numbers)}")
    missing = sorted(set(np.unique(z).tolist()) - {int(k) for k in e_iso_by_Z})
    if missing:
        raise ValueError(f"no isolated-atom energy for Z = {missing}")
    lut = np.zeros(int(z.max()) + 1)
    for k, v in e_iso_by_Z.items():
        if int(k) <= z.max():
            lut[int(k)] = float(v)
    return e - lut[z].sum(axis=1)


def _forces(f_pred, f_ref) -> tuple[np.ndarray, np.ndarray]:
    f_pred = np.asarray(f_pred, dtype=float)
    f_ref = np.asarray(f_ref, dtype=float)
    if f_pred.ndim == 2:
        f_pred = f_pred[None]
    if f_ref.ndim == 2:
        f_ref = f_ref[None]
    if f_pred.shape != f_ref.shape or f_pred.ndim != 3 or f_pred.shape[2] != 3:
        raise ValueError(f"forces must both be (M, N, 3), got {f_pred.shape} and {f_ref.shape}")
    if f_pred.size == 0:
        raise ValueError("no forces given")
    if not (np.all(np.isfinite(f_pred)) and np.all(np.isfinite(f_ref))):
        raise ValueError("forces contain non-finite values")
    return f_pred, f_ref


def force_rmse(f_pred, f_ref) -> float:
    """F_RMSE in eV/Å (paper Eq. 2): sqrt(Σ_i ‖F_i^MLIP − F_i^REF‖₂² / (M N)).

    F_i is the 3N-vector of configuration i, so the sum runs over all M·N·3 components but the
    divisor is M·N: this is the RMS length of the per-atom force-error vector. It is √3 times
    the per-component RMSE that many codes report (Matbench-discovery divides by 3MN); see
    :func:`force_component_rmse`.
    """
    f_pred, f_ref = _forces(f_pred, f_ref)
    m, n, _ = f_pred.shape
    return float(np.sqrt(np.sum((f_pred - f_ref) ** 2) / (m * n)))


def force_component_rmse(f_pred, f_ref) -> float:
    """Per-component force RMSE in eV/Å, sqrt(Σ ΔF² / (3 M N)) = Eq. 2 / √3. Not the paper's.

    Exactly Matbench-discovery's ``force_rmse`` (``metrics/md.py::calc_energy_force_rmse``:
    summed squared errors over 3·M·N components).
    """
    f_pred, f_ref = _forces(f_pred, f_ref)
    return float(np.sqrt(np.mean((f_pred - f_ref) ** 2)))
