"""Bond-angle distribution and its error (not in the paper; Matbench-discovery's ADF metric).

Bonds use the exact minimum image of :mod:`dynamat.metrics.neighbours`, so the distribution is
the same in any cell shape (a rounded fractional difference misses bonds in skewed cells).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from dynamat.metrics.neighbours import as_cells, min_image_radius, minimum_image

__all__ = ["AngleCounter", "bond_angle_distribution", "bond_angle_distribution_error"]


def bond_cutoffs(numbers, cells, pbc, bond_tolerance: float = 1.25) -> tuple[np.ndarray, np.ndarray]:
    """Bond cutoffs in Å per element pair: (``species`` (N,), ``table`` (S, S)), the cutoff of atoms
    i, j being ``table[species[i], species[j]]`` = ``bond_tolerance`` × (r_cov,i + r_cov,j), ASE
    covalent radii. By element, not atom: an (N, N) matrix is 0.8 GB at 10,000 atoms.

    Periodic systems cap them at the minimum-image radius (half the shortest lattice vector),
    below which each neighbour has one image, so no atom bonds twice to the same partner.
    """
    from ase.data import covalent_radii

    if bond_tolerance <= 0:
        raise ValueError("bond_tolerance must be positive")
    elements, species = np.unique(np.asarray(numbers, dtype=int), return_inverse=True)
    rc = covalent_radii[elements]
    cut = bond_tolerance * (rc[:, None] + rc[None, :])
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if pbc.any():
        cut = np.minimum(cut, min_image_radius(cells, pbc))
    return species.reshape(-1), cut


def _lengths(vec: np.ndarray) -> np.ndarray:
    """|v| of (m, 3) vectors: ``np.linalg.norm(vec, axis=-1)`` to the bit (the same products and
    sums, in the same order), without its slow reduction over an axis of length 3."""
    sq = vec * vec
    d = np.add(sq[:, 0], sq[:, 1])
    d += sq[:, 2]
    return np.sqrt(d, out=d)


@lru_cache(maxsize=64)
def _triu_flat(k: int) -> np.ndarray:
    """Flat indices a·k + b (a < b) of the upper triangle of a k×k matrix."""
    a, b = np.triu_indices(k, 1)
    return a * k + b


#: angles evaluated per numpy call: the block's arrays stay cache-sized (~0.5 MiB each)
_ANGLES_PER_BLOCK = 1 << 16
#: cells per unit of cosine in the binning table: 2¹⁶ = (2⁸)², so unit bond vectors scaled by
#: ``_SQRT_CELLS`` give K·cos in one Gram product (a power of two scales every product and sum
#: exactly), and c·K + K is exact to 2⁻³⁶
_TABLE_CELLS = 1 << 16
_SQRT_CELLS = 1 << 8
#: distance in cosine (≫ round-off, ≪ a cell) within which a cell counts as touching a bin edge
_EDGE_MARGIN = 1e-9


def _exact_angle_counts(cos: np.ndarray, edges: np.ndarray) -> np.ndarray:
    """Histogram of the angles arccos(cos) in degrees over ``edges`` (equal bins, last closed)."""
    np.minimum(cos, 1.0, out=cos)  # np.clip's values, at a fraction of its cost
    np.maximum(cos, -1.0, out=cos)
    ang = np.degrees(np.arccos(cos, out=cos), out=cos)
    # equal bins given by count and range: numpy's direct binning, with the same edges and the
    # same edge rule as bins=edges, without sorting
    return np.histogram(ang, bins=len(edges) - 1, range=(edges[0], edges[-1]))[0]


@lru_cache(maxsize=8)
def _cosine_bin_table(lo_deg: float, hi_deg: float, n_bins: int) -> np.ndarray:
    """Bin of every cosine cell [t/K − 1, (t+1)/K − 1), t = 0…2K, for angle bins over [lo, hi]°.

    A cell whose cosines all lie further than ``_EDGE_MARGIN`` from the cosine of every bin edge
    holds angles of one bin only (arccos is monotonic) and gets that bin (``n_bins + 1``: outside
    [lo, hi], not counted); a cell touching an edge gets ``n_bins``, and its cosines are binned by
    :func:`_exact_angle_counts`. So the table gives that function's counts without an arccos per
    angle: the margin (≥ 5.7e-8° in angle) dwarfs the round-off of either path.
    """
    k = _TABLE_CELLS
    t = np.arange(2 * k + 1)
    cell_lo, cell_hi = t / k - 1.0 - _EDGE_MARGIN, (t + 1) / k - 1.0 + _EDGE_MARGIN
    edges = np.linspace(lo_deg, hi_deg, n_bins + 1)
    edge_cos = np.sort(np.cos(np.radians(edges)))
    touches = np.searchsorted(edge_cos, cell_hi, "right") > np.searchsorted(edge_cos, cell_lo, "left")
    # a cell's midpoint stands for all of it: away from the edges any rounding gives its bin
    mid_deg = np.degrees(np.arccos(np.clip((t + 0.5) / k - 1.0, -1.0, 1.0)))
    table = np.floor((mid_deg - lo_deg) * (n_bins / (hi_deg - lo_deg))).astype(np.intp)
    # angles outside [lo, hi] are not counted (np.histogram drops them): a bin of its own
    table[(table < 0) | (table >= n_bins)] = n_bins + 1
    table[touches] = n_bins
    # bins in one byte where they fit: the lookup then reads and writes an eighth of the memory
    return table.astype(np.uint8) if n_bins + 2 <= 256 else table


def _angle_counts(key: np.ndarray, order: np.ndarray, ku: np.ndarray, n_groups: int,
                  edges: np.ndarray) -> np.ndarray:
    """Histogram of the angles between every two bond vectors ``ku`` (unit × ``_SQRT_CELLS``) of
    equal ``key`` < ``n_groups`` (bonds keyed ``n_groups`` are skipped).

    ``key`` names each bond's centre (frame × N + atom) and ``order`` sorts it, so a centre's bonds
    are one contiguous run of ``order``; centres of equal coordination k are handled together:
    one batched k×k Gram matrix of their bond vectors, of which the upper triangle holds K·cos.
    Cosines are binned through :func:`_cosine_bin_table` (exactly :func:`_exact_angle_counts`).
    """
    n_bins = len(edges) - 1
    table = _cosine_bin_table(float(edges[0]), float(edges[-1]), n_bins)
    coord = np.bincount(key, minlength=n_groups + 1)[:n_groups]
    start = np.concatenate([[0], np.cumsum(coord)[:-1]])
    counts = np.zeros(n_bins + 2, dtype=np.int64)
    cell = np.empty(_ANGLES_PER_BLOCK, dtype=np.intp)
    near_edge = []  # K·cos of cells touching a bin edge, binned exactly in one call at the end
    for k in np.unique(coord[coord >= 2]):
        k = int(k)
        flat = _triu_flat(k)
        first = start[coord == k]
        step = max(1, _ANGLES_PER_BLOCK // k**2)
        for c0 in range(0, len(first), step):
            rows = np.take(order, first[c0 : c0 + step, None] + np.arange(k))
            bonds = np.take(ku, rows, axis=0)  # (centres, k, 3)
            # Bᵀ as a copy: given a view of B itself, numpy takes B·Bᵀ as a symmetric product (BLAS
            # syrk), twice as slow at k×3 and not the same bits as the general product.
            # No clip: |cos| ≤ 1 + 1e-15 lands in the end cells 0 and 2K all the same.
            gram = np.matmul(bonds, np.ascontiguousarray(bonds.transpose(0, 2, 1)))
            kcos = np.take(gram.reshape(len(bonds), k * k), flat, axis=1).ravel()
            # fused add and truncation (= floor, as K·cos + K ≥ 0)
            c = np.add(kcos, _TABLE_CELLS, out=cell[: len(kcos)], casting="unsafe")
            binned = np.take(table, c, mode="wrap")  # c ∈ [0, 2K]: no bounds checks needed
            counts += np.bincount(binned, minlength=n_bins + 2)
            near_edge.append(kcos[binned == n_bins])
    if near_edge:
        counts[:n_bins] += _exact_angle_counts(np.concatenate(near_edge) / _TABLE_CELLS, edges)
    return counts[:n_bins]


class AngleCounter:
    """Bond-angle counts accumulated from candidate neighbour pairs, chunk by chunk of frames.

    The pair visitor of :func:`dynamat.metrics.rdf.rdf_histogram`: its ``visit`` receives the
    pairs (i < j) that the RDF's pass found within ``r_near`` (a superset of the bonds), keeps
    the bonds by their exact minimum-image length, and histograms the angles at each centre.
    """

    def __init__(self, numbers, cells, pbc, *, n_bins: int = 180, bond_tolerance: float = 1.25):
        self.numbers = np.asarray(numbers, dtype=int)
        self.pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
        self.species, self.cutoff = bond_cutoffs(self.numbers, cells, self.pbc, bond_tolerance)
        self.r_near = float(self.cutoff.max())
        self.one_cutoff = bool(np.all(self.cutoff == self.r_near))
        self.edges = np.linspace(0.0, 180.0, n_bins + 1)
        self.counts = np.zeros(n_bins, dtype=np.int64)

    #: candidate pairs handled per step: the step's arrays stay cache-sized (~1 MiB)
    PAIRS_PER_STEP = 1 << 15

    def visit(self, positions, cells, i, j, frame) -> np.ndarray:
        """Angle counts of the bonds among candidate pairs (i, j) of ``positions[frame]``."""
        n, n_frames = positions.shape[1], len(positions)
        fixed = bool(np.all(cells == cells[0]))
        per_frame = max(1, len(frame) // max(1, n_frames))
        # a few frames per step; frame-local keys f·N + atom, and N·F for non-bonds, stay 16-bit
        step = max(1, min(self.PAIRS_PER_STEP // per_frame, 0xFFFF // n)) if fixed else 1
        # pairs grouped by step (a radix sort of 8- or 16-bit keys; within a step, the order of the
        # frames does not matter: the centres are sorted again)
        group = frame // step
        n_groups = -(-n_frames // step)
        order = np.argsort(group.astype(np.min_scalar_type(n_groups)), kind="stable")
        i, j, frame = np.take(i, order), np.take(j, order), np.take(frame, order)
        bounds = np.searchsorted(np.take(group, order), np.arange(n_groups + 1))
        counts = np.zeros(len(self.edges) - 1, dtype=np.int64)
        for g in range(n_groups):
            f0 = g * step
            rows = slice(bounds[g], bounds[g + 1])
            counts += self._frames(positions, cells[f0], i[rows], j[rows], frame[rows], f0, n,
                                   min(step, n_frames - f0))
        return counts

    def _frames(self, positions, cell, i, j, frame, f0: int, n: int, n_frames: int) -> np.ndarray:
        """Angle counts of candidate pairs of the ``n_frames`` frames f0… that share ``cell``."""
        flat = positions.reshape(-1, 3)
        atom0 = frame * n
        vec = np.take(flat, atom0 + j, axis=0)
        vec -= np.take(flat, atom0 + i, axis=0)
        vec = minimum_image(vec, cell, self.pbc, cutoff=self.r_near)
        dist = _lengths(vec)
        # one element: one cutoff, no (i, j) lookup
        sp = self.species
        cut = self.r_near if self.one_cutoff else self.cutoff[np.take(sp, i), np.take(sp, j)]
        bond = (dist > 1e-12) & (dist <= cut)
        m, local = len(dist), atom0 - f0 * n
        # each bond serves both ends: r_i − r_j is exactly −(r_j − r_i), and so is its image
        # 16-bit keys (a radix sort) whenever they fit: always, but for cells of over 65,535 atoms
        key = np.empty(2 * m, dtype=np.min_scalar_type(n_frames * n))
        np.add(local, i, out=key[:m], casting="unsafe")
        np.add(local, j, out=key[m:], casting="unsafe")
        if not bond.all():  # non-bonds get a key of their own, skipped: no copies of the rest
            off = ~bond
            key[:m][off] = key[m:][off] = n_frames * n
            dist[off] = 1.0
        # unit vectors × 2⁸, written once: (v / (d/2⁸)) is (v/d)·2⁸ to the bit
        ku = np.empty((2 * m, 3))
        np.divide(vec, (dist / _SQRT_CELLS)[:, None], out=ku[:m])
        np.negative(ku[:m], out=ku[m:])
        order = np.argsort(key, kind="stable")
        return _angle_counts(key, order, ku, n_frames * n, self.edges)

    def add(self, counts: np.ndarray) -> None:
        self.counts += counts

    def distribution(self) -> tuple[np.ndarray, np.ndarray]:
        """(angles in degrees, unit-area density per degree) of everything visited."""
        if self.counts.sum() == 0:
            raise ValueError("no bonded pairs of neighbours found: no bond angles to histogram")
        width = np.diff(self.edges)
        return 0.5 * (self.edges[1:] + self.edges[:-1]), self.counts / (self.counts.sum() * width)


def _all_pairs(positions, cells, counter: AngleCounter, pairs_per_chunk: int = 1 << 18) -> None:
    """Every unique pair as a candidate: for cells not periodic in all three directions."""
    n = positions.shape[1]
    iu = np.triu_indices(n, 1)
    step = max(1, pairs_per_chunk // max(1, len(iu[0])))
    for a in range(0, len(positions), step):
        pos, cell = positions[a : a + step], cells[a : a + step]
        f = np.repeat(np.arange(len(pos)), len(iu[0]))
        counter.add(counter.visit(pos, cell, np.tile(iu[0], len(pos)), np.tile(iu[1], len(pos)), f))


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
    subsamples frames. Candidate neighbours come from the RDF's chunked pair kernel
    (:class:`AngleCounter`), so no per-frame N × N matrix is built.
    """
    from dynamat.metrics.rdf import rdf_histogram  # rdf re-exports this module

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
    positions, cells = positions[::frame_stride], cells[::frame_stride]
    counter = AngleCounter(numbers, cells, pbc, n_bins=n_bins, bond_tolerance=bond_tolerance)
    if pbc.all() and len(numbers) >= 2:
        r_max = min_image_radius(cells, pbc)
        rdf_histogram(positions, cells, n_bins=500, r_max=r_max, pbc=pbc, pair_visitor=counter)
    else:
        _all_pairs(positions, cells, counter)
    return counter.distribution()


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
