"""Does a trajectory start unequilibrated? Frames at the start far more ordered than the rest.

An AIMD often starts from the ideal lattice (the public NequIP silicon tutorial file does): that first
frame, and the frames before the atoms have moved off their sites, put delta spikes into a reference
g(r) and bias every structural average. The rule, on the first :data:`WINDOW_PS` of frames:

1. positions unwrapped along time (minimum image of each step, in fractional coordinates, each
   frame's own cell) and the centre of geometry's drift removed;
2. d_t = mean over atoms of |r_i(t) − r̄_i|² (Å²), with r̄_i the average over the second half of the
   window (taken as equilibrated);
3. d_eq = the median of d_t over that second half;
4. the start is unequilibrated when frame 0 has d_0 < :data:`ORDER_FRACTION` · d_eq; the first
   equilibrated frame is then the first with d_t ≥ :data:`REACHED_FRACTION` · d_eq.

For a solid at temperature d_t is the thermal mean square displacement ⟨u²⟩, a χ² of 3N − 3 terms
(relative spread √(2/(3N − 3)), 0.31 for :data:`MIN_ATOMS` atoms: a quarter of d_eq is beyond 2.4
spreads even there), while the ideal lattice sits at the average sites: d_0 ≈ ⟨u²⟩/n_eff, n_eff the
number of independent configurations in the average. Vibrations of a solid decorrelate in about
0.1 ps, so the average needs ~1 ps to be the sites: under :data:`MIN_REFERENCE_PS` of reference frames
there is no verdict (a 0.2 ps file of 2 fs frames puts its own first frame at 1.3 × d_eq). In a liquid
or a gas the atoms leave their early positions, so early frames are *farther* from r̄ than late
ones and nothing is flagged: the rule only ever flags order (a liquid started from a lattice is not
caught once its atoms have left their sites).
"""

from __future__ import annotations

import numpy as np

__all__ = ["MAX_FRAME_ATOMS", "MIN_ATOMS", "MIN_REFERENCE_PS", "ORDER_FRACTION", "REACHED_FRACTION", "WINDOW_PS",
           "disorder_per_frame", "kinetic_temperature_settled", "unequilibrated_start"]

#: time read from the start, ps (its second half is the reference for "equilibrated")
WINDOW_PS = 4.0
#: frames × atoms read at most (24 MB of positions): a longer window is read at a stride of frames
MAX_FRAME_ATOMS = 1_000_000
#: no verdict on a shorter reference (second half of the window), ps
MIN_REFERENCE_PS = 1.0
#: no verdict under this many atoms (too few terms for d_t to be steady)
MIN_ATOMS = 8
#: frame 0 with less than this fraction of the equilibrated d is an ordered (unequilibrated) start
ORDER_FRACTION = 0.25
#: the first frame with at least this fraction of the equilibrated d is where equilibrium begins
REACHED_FRACTION = 0.75


def disorder_per_frame(positions, cells, pbc) -> np.ndarray:
    """d_t (Å²) of steps 1-2 of the module's rule, for every frame given.

    ``positions`` (M, N, 3) Å, ``cells`` (M, 3, 3) Å (or one (3, 3)), ``pbc`` (3,) bools."""
    pos = np.asarray(positions, dtype=float)
    m = len(pos)
    cells = np.broadcast_to(np.asarray(cells, dtype=float), (m, 3, 3))
    pbc = np.asarray(pbc, dtype=bool)
    if pbc.any():
        frac = np.einsum("fni,fij->fnj", pos, np.linalg.inv(cells))
        step = np.diff(frac, axis=0)
        step[..., pbc] -= np.round(step[..., pbc])  # no atom crosses half a cell between frames
        frac = np.concatenate([frac[:1], frac[:1] + np.cumsum(step, axis=0)])
        pos = np.einsum("fnj,fjk->fnk", frac, cells)
    pos = pos - pos.mean(axis=1, keepdims=True)  # the whole system's drift is no disorder
    mean_sites = pos[m // 2 :].mean(axis=0)
    return np.mean(np.sum((pos - mean_sites) ** 2, axis=-1), axis=1)


def unequilibrated_start(positions, cells, pbc, dt_fs: float) -> int | None:
    """The index of the first equilibrated frame (0: the start is fine), or None (no verdict: under
    MIN_ATOMS atoms or MIN_REFERENCE_PS of reference frames).

    ``positions`` (M, N, 3) Å may be an h5py dataset: only the window is read, at a stride of frames
    when it holds more than MAX_FRAME_ATOMS frame-atoms (the first equilibrated frame is then a
    multiple of the stride). ``dt_fs``: time between frames, fs."""
    m_all, n_atoms = int(positions.shape[0]), int(positions.shape[1])
    span = min(m_all, int(WINDOW_PS * 1000.0 / dt_fs) + 1)  # frames in the window
    stride = max(1, -(-span * n_atoms // MAX_FRAME_ATOMS))
    m = len(range(0, span, stride))
    if n_atoms < MIN_ATOMS or m < 4 or (m - m // 2) * stride * dt_fs < MIN_REFERENCE_PS * 1000.0:
        return None
    cells = cells[0:span:stride] if np.ndim(cells) == 3 else cells
    d = disorder_per_frame(positions[0:span:stride], cells, pbc)
    d_eq = float(np.median(d[m // 2 :]))
    if not (d_eq > 0 and d[0] < ORDER_FRACTION * d_eq):
        return 0
    return int(np.argmax(d >= REACHED_FRACTION * d_eq)) * stride


def kinetic_temperature_settled(temperatures_K, target_K: float, n_dof: int, n_sigma: float = 3.0) -> tuple[bool, str]:
    """Has the kinetic temperature of an equilibration settled at ``target_K``? (verdict, why).

    In the canonical ensemble the instantaneous kinetic temperature of ``n_dof`` degrees of freedom
    fluctuates with σ_T = T √(2 / n_dof) (Frenkel & Smit, *Understanding Molecular Simulation*, Eq. 4.1.16
    for the kinetic energy). The last half of the equilibration is settled when its mean lies within
    ``n_sigma`` σ_T of the target (a single frame's spread: generous, as the frames are correlated) and
    the means of its two quarters differ by less than that too (no drift left).
    """
    t = np.asarray(temperatures_K, float)
    tail = t[len(t) // 2:]
    sigma = target_K * np.sqrt(2.0 / max(int(n_dof), 1))
    off = float(tail.mean() - target_K)
    q = len(tail) // 2
    drift = float(tail[q:].mean() - tail[:q].mean()) if q else 0.0
    if abs(off) > n_sigma * sigma:
        return False, f"last half averages {tail.mean():.0f} K against {target_K:g} K (canonical spread {sigma:.0f} K)"
    if abs(drift) > n_sigma * sigma:
        return False, f"still drifting by {drift:+.0f} K over the last half (canonical spread {sigma:.0f} K)"
    return True, f"last half averages {tail.mean():.0f} K (target {target_K:g} K, spread {sigma:.0f} K)"
