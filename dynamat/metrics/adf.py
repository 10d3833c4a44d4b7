"""Bond-angle distribution and its error (not in the paper; Matbench-discovery's ADF metric).

Bonds use the exact minimum image of :mod:`dynamat.metrics.neighbours`, so the distribution is
the same in any cell shape (a rounded fractional difference misses bonds in skewed cells).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dynamat.metrics.neighbours import as_cells, min_image_radius, pair_vectors

__all__ = ["bond_angle_distribution", "bond_angle_distribution_error"]


def bond_cutoffs(numbers, cells, pbc, bond_tolerance: float = 1.25) -> np.ndarray:
    """(N, N) bond cutoffs in Å: ``bond_tolerance`` × (r_cov,i + r_cov,j), ASE covalent radii.

    Periodic systems cap them at the minimum-image radius (half the shortest lattice vector),
    below which each neighbour has one image, so no atom bonds twice to the same partner.
    """
    from ase.data import covalent_radii

    if bond_tolerance <= 0:
        raise ValueError("bond_tolerance must be positive")
    rc = covalent_radii[np.asarray(numbers, dtype=int)]
    cut = bond_tolerance * (rc[:, None] + rc[None, :])
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if pbc.any():
        cut = np.minimum(cut, min_image_radius(cells, pbc))
    return cut


@lru_cache(maxsize=64)
def _triu(k: int) -> tuple[np.ndarray, np.ndarray]:
    return np.triu_indices(k, 1)


def _bond_pairs(bonded: np.ndarray, vec: np.ndarray, dist: np.ndarray):
    """Index pairs (into the bond list) of every two bonds sharing a centre, and unit bond vectors.

    Bonds are listed centre by centre (row-major ``nonzero``), so centre c's bonds are one
    contiguous run; centres of equal coordination k are handled together with one k×k triangle.
    """
    cen, nbr = np.nonzero(bonded)
    u = vec[cen, nbr] / dist[cen, nbr, None]
    coord = np.bincount(cen, minlength=len(bonded))
    start = np.concatenate([[0], np.cumsum(coord)[:-1]])
    left, right = [], []
    for k in np.unique(coord[coord >= 2]):
        a, b = _triu(int(k))
        s = start[coord == k][:, None]
        left.append((s + a).ravel())
        right.append((s + b).ravel())
    if not left:
        return np.zeros(0, int), np.zeros(0, int), u
    return np.concatenate(left), np.concatenate(right), u


def bond_angle_distribution(
    positions,
    cells,
    numbers,
    *,
    pbc=True,
    n_bins: int = 180,
    bond_tolerance: float = 1.25,
    frame_stride: int = 1,
) -> tuple[np.ndarray, np.ndarray]:
    """Time-averaged bond-angle distribution, (angles in degrees, unit-area density per degree).

    A pair is bonded when its minimum-image distance is at most ``bond_tolerance`` times the sum
    of the two ASE covalent radii (capped by :func:`bond_cutoffs`); each unordered pair of bonds
    sharing a centre contributes one angle, histogrammed on ``n_bins`` equal bins over
    [0°, 180°]. This is Matbench-discovery's ``calc_adf`` (``metrics/md.py``). ``frame_stride``
    subsamples frames (angles decorrelate slowly, and this is O(frames · N²)).
    """
    positions = np.asarray(positions, dtype=float)
    if positions.ndim == 2:
        positions = positions[None]
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"positions must be (M, N, 3), got {positions.shape}")
    numbers = np.asarray(numbers, dtype=int)
    if len(numbers) != positions.shape[1]:
        raise ValueError("numbers must have one entry per atom")
    cells = np.broadcast_to(as_cells(cells, len(positions)), (len(positions), 3, 3))
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    cutoff = bond_cutoffs(numbers, cells, pbc, bond_tolerance)
    r_cut = float(cutoff.max())
    edges = np.linspace(0.0, 180.0, n_bins + 1)
    counts = np.zeros(n_bins)
    for f in range(0, len(positions), frame_stride):
        vec, dist = pair_vectors(positions[f], cells[f], pbc, cutoff=r_cut)
        bonded = (dist > 1e-12) & (dist <= cutoff)
        left, right, u = _bond_pairs(bonded, vec, dist)
        if len(left):
            cos = np.clip(np.einsum("pk,pk->p", u[left], u[right]), -1.0, 1.0)
            counts += np.histogram(np.degrees(np.arccos(cos)), bins=edges)[0]
    if counts.sum() == 0:
        raise ValueError("no bonded pairs of neighbours found: no bond angles to histogram")
    width = np.diff(edges)
    return 0.5 * (edges[1:] + edges[:-1]), counts / (counts.sum() * width)


def bond_angle_distribution_error(angles, adf_ref, adf_mlip) -> float:
    """ADF error in percent (Matbench-discovery definition, not in the paper).

    ``100 · min(1, W1(ref, mlip) / W1(ref, sin θ))``: the Wasserstein-1 distance (degrees)
    between the two unit-area angle densities, divided by the reference's distance to the
    structureless sin θ background of random bond directions (the angular ideal gas).
    A reference at zero distance from the background scores 0 if the two are identical, else
    100 (Matbench-discovery returns 100 in both cases; see :mod:`dynamat.metrics.matbench`).
    """
    w1, w1_bg = adf_w1_terms(angles, adf_ref, adf_mlip)
    if w1_bg <= 0:
        return 0.0 if w1 == 0 else 100.0
    return 100.0 * min(1.0, w1 / w1_bg)


def adf_w1_terms(angles, adf_ref, adf_mlip) -> tuple[float, float]:
    """(W1(ref, mlip), W1(ref, sin θ)) in degrees for two angle densities on one grid, after checking
    them: the two terms of the ADF error, ours and Matbench-discovery's alike."""
    from scipy.stats import wasserstein_distance

    angles = np.asarray(angles, dtype=float)
    ref = np.asarray(adf_ref, dtype=float)
    mlip = np.asarray(adf_mlip, dtype=float)
    if not (angles.shape == ref.shape == mlip.shape) or angles.ndim != 1:
        raise ValueError("angles, adf_ref and adf_mlip must be 1-D of equal length")
    for name, d in (("adf_ref", ref), ("adf_mlip", mlip)):
        if not np.all(np.isfinite(d)) or np.any(d < 0) or d.sum() <= 0:
            raise ValueError(f"{name} must be finite, non-negative and non-zero")
    return (float(wasserstein_distance(angles, angles, ref, mlip)),
            float(wasserstein_distance(angles, angles, ref, np.sin(np.radians(angles)))))
