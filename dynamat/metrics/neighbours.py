"""Exact minimum-image geometry shared by every pair observable (RDF, ADF, FD velocities).

Cells are ``(M, 3, 3)`` or ``(3, 3)`` in Å with lattice vectors as rows. Rounding fractional
coordinates gives the minimum image only in orthorhombic cells; in a skewed cell the nearest
image can be one lattice step further away. Here the candidate lattice offsets are enumerated
from a proven bound (:func:`_offset_bounds`) and pruned exactly (:func:`_image_offsets`), so the
result is the true minimum image for every vector shorter than the requested cutoff, in any
cell. The RDF kernel (:mod:`dynamat.metrics.rdf_kernel`) uses the same offsets in its
vectorised form; :func:`minimum_image` and :func:`pair_vectors` are the plain-array versions.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
from ase.geometry import complete_cell, minkowski_reduce

__all__ = ["min_image_radius", "minimum_image", "pair_vectors"]


def as_cells(cells, n_frames: int | None = None) -> np.ndarray:
    """Validated ``(F, 3, 3)`` float cells in Å, F ∈ {1, n_frames}."""
    cells = np.asarray(cells, dtype=float)
    if cells.shape == (3, 3):
        cells = cells[None]
    if cells.ndim != 3 or cells.shape[1:] != (3, 3):
        raise ValueError(f"cells must be (3, 3) or (M, 3, 3) in Å, got shape {cells.shape}")
    if n_frames is not None and len(cells) not in (1, n_frames):
        raise ValueError(f"cells has {len(cells)} frames but positions has {n_frames}")
    if not np.all(np.isfinite(cells)):
        raise ValueError("cells contain non-finite values")
    return cells


def unique_cells(cells: np.ndarray) -> np.ndarray:
    """The distinct cells of an ``(F, 3, 3)`` array."""
    # NVT trajectories repeat one cell; reducing it once instead of per frame is what keeps
    # 80k-frame trajectories cheap.
    if np.all(cells == cells[0]):
        return cells[:1]
    return np.unique(cells.reshape(len(cells), 9), axis=0).reshape(-1, 3, 3)


def min_image_radius(cells, pbc=True) -> float:
    """Half the shortest lattice vector λ₁ in Å, minimised over frames (the RDF's R_max).

    Below λ₁/2 every pair has one unique nearest image.
    The paper takes "half the shortest cell vector". For a skewed basis an integer combination
    of the cell vectors can be shorter than every basis vector, so the basis is Minkowski-reduced
    first (``ase.geometry.minkowski_reduce``); its first vector is then the shortest lattice
    vector λ₁. Below λ₁/2 every pair has a unique nearest image, so a minimum-image histogram is
    complete; above it, pairs would be missed or double-counted. Only periodic directions count.
    """
    cells = as_cells(cells)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if not pbc.any():
        raise ValueError("the minimum-image radius needs at least one periodic direction")
    shortest = np.inf
    for cell in unique_cells(cells):
        if abs(np.linalg.det(cell)) < 1e-12:
            raise ValueError("cell is singular (zero volume)")
        reduced, _ = minkowski_reduce(cell, pbc)
        shortest = min(shortest, float(np.linalg.norm(reduced[pbc], axis=1).min()))
    return shortest / 2


_CORNERS = np.array([[i, j, k] for i in (-0.5, 0.5) for j in (-0.5, 0.5) for k in (-0.5, 0.5)])


def _offset_bounds(cells: np.ndarray, pbc: np.ndarray, r_max: float) -> np.ndarray:
    """Largest |n_k| of a lattice offset that can matter, over all given cells.

    After rounding the fractional difference to s (|s_k| ≤ ½ along periodic k), the true
    minimum image is w = (s + n)·C for some integer n. Its k-th fractional coordinate is
    w·c*_k (c*_k the k-th reciprocal column of C⁻¹), so |w| < r_max gives
    |n_k| ≤ r_max·|c*_k| + ½. Valid for any cell and any pbc (non-periodic n_k are 0).
    """
    recip = np.linalg.norm(np.linalg.inv(cells), axis=-2)  # (F, 3) column norms
    n_lim = np.floor(r_max * recip + 0.5 + 1e-9).astype(int).max(axis=0)
    n_lim[~pbc] = 0
    return n_lim


@lru_cache(maxsize=64)
def _image_offsets(cell_bytes: bytes, pbc_key: tuple[bool, ...], r_max: float) -> np.ndarray:
    """Lattice offsets n that can bring a rounded pair vector of this cell below r_max.

    Candidates within :func:`_offset_bounds` are kept only if the shifted half-cell box
    actually comes within r_max of the origin (a bounded least-squares problem), so the list
    is exact and short: for r_max ≤ λ₁/2 empty in orthorhombic cells and typically 2–8 entries
    otherwise; larger r_max (an unlimited :func:`minimum_image`) keeps more. Both signs of n.
    """
    from scipy.optimize import lsq_linear

    cell = np.frombuffer(cell_bytes).reshape(3, 3)
    pbc = np.array(pbc_key)
    half_diag = np.linalg.norm(_CORNERS @ cell, axis=1).max()
    ranges = [np.arange(-m, m + 1) for m in _offset_bounds(cell[None], pbc, r_max)]
    grid = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
    lo = np.where(pbc, -0.5, -np.inf)
    hi = np.where(pbc, 0.5, np.inf)
    keep = []
    for n in grid:
        if not n.any():
            continue
        # cheap rejection, valid only when every direction is rounded (|s·C| ≤ half_diag)
        if pbc.all() and np.linalg.norm(n @ cell) - half_diag >= r_max:
            continue
        res = lsq_linear(cell.T, -(cell.T @ n), bounds=(lo, hi), method="bvls", tol=1e-14)
        if np.sqrt(2 * res.cost) < r_max * (1 + 1e-9) + 1e-12:
            keep.append(n)
    return np.array(keep, dtype=float).reshape(-1, 3)


class _FrameGeometry:
    """The trajectory's cells in one Minkowski-reduced basis, and the image offsets they need."""

    #: beyond this many distinct cells (a variable-cell run) the offsets are not pruned per cell
    MAX_PRUNED_CELLS = 16

    def __init__(self, cells: np.ndarray, pbc: np.ndarray, r_max: float):
        self.pbc = pbc
        self.fixed = len(cells) == 1 or bool(np.all(cells == cells[0]))
        # One unimodular change of basis for all frames: reduction only buys speed (fewer image
        # offsets), the offset enumeration is exact for any basis.
        _, op = minkowski_reduce(cells[0], pbc)
        self.op = op.astype(float)
        basis = self.reduced(cells[:1] if self.fixed else unique_cells(cells))
        red = self.reduced(cells)
        metric = np.einsum("fik,fjk->fij", red, red)
        off = metric[:, [0, 0, 1], [1, 2, 2]]
        diag = metric[:, [0, 1, 2], [0, 1, 2]]
        scale = np.sqrt(diag[:, [0, 0, 1]] * diag[:, [1, 2, 2]])
        # orthorhombic: rounding each fractional component is already the minimum image
        self.orthorhombic = bool(np.all(np.abs(off) <= 1e-12 * scale))
        if self.orthorhombic:
            offsets = np.zeros((0, 3))
        elif len(basis) <= self.MAX_PRUNED_CELLS:
            offsets = np.concatenate([
                _image_offsets(np.ascontiguousarray(c).tobytes(), tuple(pbc), float(r_max))
                for c in basis
            ])
        else:  # every candidate within the bound: a superset, so still exact, just slower
            ranges = [np.arange(-m, m + 1) for m in _offset_bounds(basis, pbc, r_max)]
            offsets = np.stack(np.meshgrid(*ranges, indexing="ij"), -1).reshape(-1, 3)
            offsets = offsets[offsets.any(axis=1)].astype(float)
        if len(offsets):
            offsets = np.unique(offsets, axis=0)
            # the half-cell box is symmetric, so ±n come in pairs: keep one sign of each
            first = offsets[np.arange(len(offsets)), np.argmax(offsets != 0, axis=1)]
            offsets = offsets[first > 0]
        self.offsets = offsets
        self._half_diag = float(np.linalg.norm(_CORNERS @ basis, axis=-1).max())

    def max_bin(self, n_bins: int, r_max: float) -> int:
        """Upper bound on the bin index of any rounded pair vector (sizes the bincount)."""
        return int(np.ceil(self._half_diag * n_bins / r_max)) + 1

    def reduced(self, cells: np.ndarray) -> np.ndarray:
        return np.einsum("ij,fjk->fik", self.op, cells)


def _half_diagonal(cell: np.ndarray) -> float:
    """Half the longest diagonal of the cell in Å: no rounded vector |s·C| (|s_k| ≤ ½) exceeds it."""
    return float(np.linalg.norm(_CORNERS @ cell, axis=-1).max())


def minimum_image(vectors, cell, pbc=True, *, cutoff: float | None = None) -> np.ndarray:
    """Exact minimum-image representatives of displacement vectors ``(..., 3)`` in Å.

    Every vector whose minimum image is shorter than ``cutoff`` (Å) comes back as that minimum
    image, in any cell shape; a vector whose minimum image is longer comes back as some image no
    shorter than ``cutoff``. Default ``cutoff``: no limit (exact for every vector). This is the
    quantity ASE's ``find_mic`` returns; the search is bounded and pruned as in
    :func:`_image_offsets` instead of assuming a fixed set of neighbour cells.
    """
    v = np.asarray(vectors, dtype=float)
    if v.shape[-1:] != (3,):
        raise ValueError(f"vectors must have shape (..., 3), got {v.shape}")
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if not pbc.any():
        return v.copy()
    # complete_cell fills zero vectors of non-periodic directions, so the cell is invertible
    reduced, _ = minkowski_reduce(complete_cell(np.asarray(cell, dtype=float)), pbc)
    reduced = np.ascontiguousarray(reduced, dtype=float)
    flat = v.reshape(-1, 3)
    frac = flat @ np.linalg.inv(reduced)
    if pbc.all():  # the same numbers, without the copies a boolean column index makes
        frac -= np.rint(frac)
    else:
        frac[:, pbc] -= np.rint(frac[:, pbc])
    best = frac @ reduced
    best_d2 = np.einsum("ij,ij->i", best, best)
    if cutoff is None:
        # the rounded vector is itself an image, so the minimum is never longer than it
        limit = _half_diagonal(reduced) if pbc.all() else float(np.sqrt(best_d2.max(initial=0)))
    else:
        limit = float(cutoff)
    if limit <= 0 or not len(flat):
        return best.reshape(v.shape)
    offsets = _image_offsets(reduced.tobytes(), tuple(bool(p) for p in pbc), limit)
    if not len(offsets):
        return best.reshape(v.shape)
    # An image w shorter than λ₁/2 (λ₁ the shortest lattice vector: the first row of the reduced
    # basis) is already the minimum: any other image w + t has |w + t| ≥ λ₁ − |w| > |w|. Only the
    # rest need the offset search (frame-to-frame steps of an MD trajectory: almost none).
    todo = None
    if pbc.all():
        half = 0.5 * float(np.linalg.norm(reduced, axis=1).min())
        todo = np.flatnonzero(best_d2 >= half * half)
    sub, sub_d2 = (best, best_d2) if todo is None else (best[todo], best_d2[todo])
    base = sub.copy()
    for shift in offsets @ reduced:  # one offset at a time: memory stays O(len(vectors))
        cand = base + shift
        d2 = np.einsum("ij,ij->i", cand, cand)
        better = d2 < sub_d2
        sub[better] = cand[better]
        sub_d2[better] = d2[better]
    if todo is not None:
        best[todo] = sub
    return best.reshape(v.shape)


def pair_vectors(positions, cell, pbc=True, *, cutoff: float | None = None):
    """Minimum-image pair vectors ``vec[i, j] = r_j − r_i`` (N, N, 3) Å and distances (N, N) Å.

    Exact for every pair closer than ``cutoff`` (default: every pair); see :func:`minimum_image`.
    """
    pos = np.asarray(positions, dtype=float)
    if pos.ndim != 2 or pos.shape[1] != 3:
        raise ValueError(f"positions must be (N, 3) in Å, got {pos.shape}")
    vec = minimum_image(pos[None, :, :] - pos[:, None, :], cell, pbc, cutoff=cutoff)
    return vec, np.linalg.norm(vec, axis=-1)
