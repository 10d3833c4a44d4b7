"""Radial distribution function and its error (paper Eqs. 3–4), classical and all-bead.

Everything here is a pure function of arrays: positions ``(M, N, 3)`` in Å, cells ``(M, 3, 3)``
(or one ``(3, 3)``) in Å with lattice vectors as rows. Positions may be wrapped or unwrapped,
and may be any array-like that supports frame slicing (an ``h5py`` dataset, a memmap): frames
are read ``chunk_frames`` at a time, so memory is bounded by the chunk, not the trajectory.

Normalisation. Eq. 3 writes ``g(r) = <Σ_j Σ_{j'≠j} δ(r − r_jj')> / (4π r² ρ N)`` with ρ = N/V,
whose large-r limit is (N − 1)/N rather than 1. The paper computes its RDFs with MDTraj, which
normalises the *unique-pair* histogram by ``n_pairs · Σ_frames(1/V) · shell volume``, i.e. by
ρ' = (N − 1)/V, so that an ideal gas gives exactly 1. ``normalization="mdtraj"`` (default)
reproduces MDTraj's formula bit for bit; ``normalization="eq3"`` is the literal Eq. 3 (ASE's
``get_rdf``), smaller by the factor (N − 1)/N. Frames are combined the MDTraj way, summing
counts and summing 1/V over frames, which equals the frame average of per-frame g(r) when the
cell is fixed (NVT, the paper's protocol).

Backends. ``backend="numpy"`` (default) is an exact float64 minimum-image kernel, vectorised
over pairs × frames. ``backend="mdtraj"`` calls ``mdtraj.compute_rdf`` chunk by chunk (the
paper's code path) and recombines the per-call normalised g(r) into counts exactly; MDTraj
stores coordinates in float32, so individual distances within ~1e-6 Å of a bin edge may land in
the neighbouring bin, a ~1e-5 relative effect on g(r). The two backends agree to that level;
the numpy one matches a float64 brute force to round-off and is several times faster. The
kernels live in :mod:`dynamat.metrics.rdf_kernel`, the minimum-image geometry they share with the
ADF in :mod:`dynamat.metrics.neighbours`. Matbench-discovery's RDF is ``normalization="eq3"``.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal

import numpy as np

# The bond-angle distribution used to live here; keep its names importable from this module.
from dynamat.metrics.adf import bond_angle_distribution, bond_angle_distribution_error
from dynamat.metrics.neighbours import _FrameGeometry, as_cells, min_image_radius
from dynamat.metrics.rdf_kernel import (
    _mdtraj_chunk_counts,
    _mdtraj_topology,
    _numpy_chunk_counts,
)

__all__ = [
    "RDFHistogram",
    "all_bead_rdf",
    "all_bead_rdf_histogram",
    "bond_angle_distribution",
    "bond_angle_distribution_error",
    "rdf",
    "rdf_error",
    "rdf_from_histogram",
    "rdf_histogram",
    "rdf_r_max",
]

Normalization = Literal["mdtraj", "eq3"]


def _default_threads() -> int:
    try:
        n = len(os.sched_getaffinity(0))  # respects SLURM/cgroup CPU sets, unlike cpu_count
    except AttributeError:
        n = os.cpu_count() or 1
    return max(1, min(4, n))


def rdf_r_max(cells, pbc=True) -> float:
    """Largest valid RDF radius R_max in Å: half the shortest lattice vector, min over frames.

    The paper's "half the shortest cell vector", with the basis Minkowski-reduced first so a
    skewed cell cannot overstate it; see :func:`dynamat.metrics.neighbours.min_image_radius`.
    """
    return min_image_radius(cells, pbc)


@dataclass
class RDFHistogram:
    """Unnormalised pair-distance counts, the sufficient statistic of g(r).

    ``counts[b, k]`` counts unique pairs (i < j) with r in bin k over the frames of block b;
    ``inv_volume_sum[b]`` is Σ 1/V (Å⁻³) over the same frames. Summing blocks and then
    normalising gives g(r) exactly, which is what chunking, bootstrapping and half-splitting use.
    """

    edges: np.ndarray  # (n_bins + 1,) Å
    counts: np.ndarray  # (n_blocks, n_bins) int64
    inv_volume_sum: np.ndarray  # (n_blocks,) Å⁻³
    n_frames: np.ndarray  # (n_blocks,)
    n_atoms: int

    @property
    def r(self) -> np.ndarray:
        return 0.5 * (self.edges[1:] + self.edges[:-1])


def rdf_from_histogram(
    hist: RDFHistogram,
    weights=None,
    *,
    normalization: Normalization = "mdtraj",
) -> tuple[np.ndarray, np.ndarray]:
    """g(r) from block counts, optionally weighting blocks (bootstrap resampling weights)."""
    n = hist.n_atoms
    if weights is None:
        counts = hist.counts.sum(axis=0)
        inv_v = hist.inv_volume_sum.sum()
    else:
        weights = np.asarray(weights, dtype=float)
        counts = weights @ hist.counts
        inv_v = weights @ hist.inv_volume_sum
    shell = (4.0 / 3.0) * np.pi * (hist.edges[1:] ** 3 - hist.edges[:-1] ** 3)
    if normalization == "mdtraj":
        norm = n * (n - 1) / 2 * inv_v * shell
    elif normalization == "eq3":
        norm = n * n / 2 * inv_v * shell  # ordered pairs / (N ρ) with ρ = N/V
    else:
        raise ValueError(f"normalization must be 'mdtraj' or 'eq3', got {normalization!r}")
    return hist.r, counts / norm


def rdf_histogram(
    positions,
    cells,
    *,
    n_bins: int = 500,
    r_max: float | None = None,
    pbc=True,
    block_length: int | None = None,
    chunk_frames: int = 512,
    backend: Literal["numpy", "mdtraj"] = "numpy",
    n_threads: int | None = None,
    pair_visitor=None,
) -> RDFHistogram:
    """Stream a trajectory into unique-pair distance counts, one row per block of frames.

    ``block_length`` frames per block (default: one block for the whole trajectory); blocks are
    the resampling units of the block bootstrap. ``n_threads``: chunks processed concurrently
    (default: the CPUs this process may use, at most 4); counts are integers, so the result
    does not depend on it. See :func:`rdf` for the other arguments.

    ``pair_visitor`` (numpy backend): an object with ``r_near`` (Å, at most ``r_max``) and
    ``visit(positions, cells, i, j, frame)``, called on each chunk with the unique pairs
    (i < j, frame within the chunk) this pass found within ``r_near`` plus at most one bin of
    slack; each call's result goes to ``pair_visitor.add`` in this thread. This shares one
    neighbour search between the RDF and the bond-angle distribution.
    """
    shape = getattr(positions, "shape", None)
    if shape is None:
        positions = np.asarray(positions, dtype=float)
        shape = positions.shape
    if len(shape) == 2:
        positions = np.asarray(positions, dtype=float)[None]
        shape = positions.shape
    if len(shape) != 3 or shape[2] != 3:
        raise ValueError(f"positions must be (M, N, 3) in Å, got shape {shape}")
    n_frames, n_atoms = int(shape[0]), int(shape[1])
    if n_frames < 1:
        raise ValueError("cannot compute an RDF of an empty trajectory")
    if n_atoms < 2:
        raise ValueError(f"an RDF needs at least 2 atoms, got {n_atoms}")
    if int(n_bins) != n_bins or n_bins < 1:
        raise ValueError(f"n_bins must be a positive integer, got {n_bins}")
    n_bins = int(n_bins)
    cells = as_cells(cells, n_frames)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,)).copy()
    limit = rdf_r_max(cells, pbc)
    if r_max is None:
        r_max = limit
    elif not (np.isfinite(r_max) and r_max > 0):
        raise ValueError(f"r_max must be a positive number of Å, got {r_max}")
    elif r_max > limit * (1 + 1e-12):
        raise ValueError(
            f"r_max = {r_max:.6g} Å exceeds half the shortest lattice vector ({limit:.6g} Å) "
            "for at least one frame; minimum-image distances would miss pairs beyond it"
        )
    if block_length is None:
        block_length = n_frames
    if int(block_length) != block_length or block_length < 1:
        raise ValueError(f"block_length must be a positive integer, got {block_length}")
    block_length = int(block_length)
    if chunk_frames < 1:
        raise ValueError(f"chunk_frames must be positive, got {chunk_frames}")
    n_blocks = -(-n_frames // block_length)
    frame_block = np.arange(n_frames) // block_length
    cells_full = np.broadcast_to(cells, (n_frames, 3, 3)) if len(cells) == 1 else cells
    geo = _FrameGeometry(cells, pbc, r_max)
    counts = np.zeros((n_blocks, n_bins + 1), dtype=np.int64)
    near_bin = None
    if pair_visitor is not None:
        if backend != "numpy" or not pair_visitor.r_near <= r_max:
            raise ValueError("a pair visitor needs the numpy backend and r_near ≤ r_max")
        # one bin of slack: pairs exactly at r_near must not be lost to rounding
        near_bin = int(np.floor(pair_visitor.r_near * n_bins / r_max)) + 1
    if backend == "numpy":
        step = int(chunk_frames)
    elif backend == "mdtraj":
        if not pbc.all():
            raise ValueError("the mdtraj backend supports fully periodic cells only")
        iu = np.triu_indices(n_atoms, 1)
        pairs = np.stack(iu, axis=1).astype(np.int32)
        numbers = np.full(n_atoms, 29)  # element is irrelevant to distances
        topology = _mdtraj_topology(numbers)
        # each MDTraj call must stay inside one block so its counts land in one row
        step = max(1, min(int(chunk_frames), block_length))
    else:
        raise ValueError(f"backend must be 'numpy' or 'mdtraj', got {backend!r}")
    ranges = []
    start = 0
    while start < n_frames:
        stop = min(start + step, n_frames)
        if backend == "mdtraj":
            stop = min(stop, (frame_block[start] + 1) * block_length)
        ranges.append((start, stop))
        start = stop

    def work(bounds):
        a, b = bounds
        pos = np.asarray(positions[a:b], dtype=float)
        if not np.all(np.isfinite(pos)):
            raise ValueError(f"positions contain non-finite values in frames {a}:{b}")
        cell_chunk = np.asarray(cells_full[a:b])
        blocks = frame_block[a:b]
        if backend == "numpy":
            n_blk = int(blocks[-1] - blocks[0]) + 1
            part = _numpy_chunk_counts(pos, cell_chunk, geo, n_bins, r_max, blocks, n_blk, near_bin)
            if near_bin is None:
                return int(blocks[0]), part[:, : n_bins + 1], None
            part, near = part
            return int(blocks[0]), part[:, : n_bins + 1], pair_visitor.visit(pos, cell_chunk, *near)
        part = _mdtraj_chunk_counts(pos, cell_chunk, geo, n_bins, r_max, pairs, topology)
        return int(blocks[0]), np.pad(part, (0, 1))[None], None

    def accumulate(results):
        for b0, part, visited in results:
            counts[b0 : b0 + len(part)] += part
            if pair_visitor is not None:
                pair_visitor.add(visited)

    if n_threads is None:
        n_threads = _default_threads()
    if n_threads > 1 and len(ranges) > 1:
        # numpy releases the GIL inside ufuncs, so chunks run in parallel; map() keeps at most
        # a few chunks in flight, so memory stays bounded by n_threads × chunk.
        with ThreadPoolExecutor(max_workers=n_threads) as pool:
            accumulate(pool.map(work, ranges))
    else:
        accumulate(map(work, ranges))
    inv_vol = 1.0 / np.abs(np.linalg.det(cells_full))
    inv_v = np.bincount(frame_block, weights=inv_vol, minlength=n_blocks)
    n_per = np.bincount(frame_block, minlength=n_blocks)
    edges = np.linspace(0.0, r_max, n_bins + 1)
    return RDFHistogram(edges, counts[:, :n_bins], inv_v, n_per, n_atoms)


def rdf(
    positions,
    cells,
    *,
    n_bins: int = 500,
    r_max: float | None = None,
    pbc=True,
    normalization: Normalization = "mdtraj",
    chunk_frames: int = 512,
    backend: Literal["numpy", "mdtraj"] = "numpy",
    n_threads: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Total radial distribution function over all unique pairs (paper Eq. 3).

    Args:
        positions: (M, N, 3) Å, wrapped or not; any frame-sliceable array-like.
        cells: (3, 3) or (M, 3, 3) Å, rows are lattice vectors; any shape of cell (triclinic).
        n_bins: radial bins between 0 and ``r_max`` (paper: 500).
        r_max: outer radius in Å; default and maximum :func:`rdf_r_max` (paper: half the
            shortest cell vector).
        pbc: periodic directions; distances use the minimum image along them.
        normalization: "mdtraj" (paper's code, ideal gas → 1) or "eq3" (literal Eq. 3,
            ×(N−1)/N); see the module docstring.
        chunk_frames: frames held in memory at once.
        backend: "numpy" (exact float64) or "mdtraj" (``mdtraj.compute_rdf`` per chunk).
        n_threads: chunks processed in parallel (default: available CPUs, at most 4).

    Returns:
        (r, g): bin centres in Å and g(r), both (n_bins,).
    """
    hist = rdf_histogram(
        positions, cells, n_bins=n_bins, r_max=r_max, pbc=pbc,
        chunk_frames=chunk_frames, backend=backend, n_threads=n_threads,
    )
    return rdf_from_histogram(hist, normalization=normalization)


def _bin_widths(x: np.ndarray) -> np.ndarray:
    if len(x) == 1:
        raise ValueError("need at least 2 grid points")
    d = np.diff(x)
    if np.any(d <= 0):
        raise ValueError("grid must be strictly increasing")
    # Bin centres of a histogram: widths are the spacing; for non-uniform grids use the
    # Voronoi cell of each point.
    w = np.empty_like(x)
    w[1:-1] = 0.5 * (x[2:] - x[:-2])
    w[0], w[-1] = d[0], d[-1]
    if np.allclose(d, d[0], rtol=1e-9, atol=0):
        w[:] = d.mean()
    return w


def rdf_error(g_ref, g_mlip, r) -> float:
    """E_RDF in percent (paper Eq. 4).

    ``100 · min(1, ∫|g_ref − g_mlip| dr / ∫|g_ref − 1| dr)`` over [0, R_max], both integrals as
    midpoint sums over the histogram bins (exact for piecewise-constant histograms). 0 is a
    perfect match; 100 means as far from the reference as an ideal gas is, or worse. A reference
    indistinguishable from an ideal gas (zero denominator) scores 100 unless the two are
    identical, in which case there is no error to report and the result is 0.
    """
    g_ref = np.asarray(g_ref, dtype=float)
    g_mlip = np.asarray(g_mlip, dtype=float)
    r = np.asarray(r, dtype=float)
    if not (g_ref.ndim == g_mlip.ndim == r.ndim == 1) or not (len(g_ref) == len(g_mlip) == len(r)):
        raise ValueError(
            f"g_ref, g_mlip and r must be 1-D of equal length, got {g_ref.shape}, "
            f"{g_mlip.shape}, {r.shape}"
        )
    if not (np.all(np.isfinite(g_ref)) and np.all(np.isfinite(g_mlip))):
        raise ValueError("RDFs must be finite")
    if np.any(g_ref < 0) or np.any(g_mlip < 0):
        raise ValueError("RDFs must be non-negative")
    w = _bin_widths(r)
    num = float(np.sum(np.abs(g_ref - g_mlip) * w))
    den = float(np.sum(np.abs(g_ref - 1.0) * w))
    if den == 0.0:
        # Paper: a zero denominator scores 100 %; identical inputs are the one exception, so
        # "identical trajectories give 0" holds for every metric.
        return 0.0 if num == 0.0 else 100.0
    return 100.0 * min(1.0, num / den)



# ---------------------------------------------------------------------------------------------
# Path integrals: the quantum g(r) is the RDF of all beads, not of the centroids.


def _bead_frames(bead_positions, cells):
    """(M·P, N, 3) frames (step-major: step 0 beads 0…P−1, step 1 …) and matching cells."""
    x = np.asarray(bead_positions, dtype=float)
    if x.ndim != 4 or x.shape[3] != 3:
        raise ValueError(f"bead positions must be (M, P, N, 3) in Å, got shape {x.shape}")
    m, p, n, _ = x.shape
    cells = as_cells(cells, m)
    return x.reshape(m * p, n, 3), (cells if len(cells) == 1 else np.repeat(cells, p, axis=0)), p


def all_bead_rdf_histogram(
    bead_positions,
    cells,
    *,
    n_bins: int = 500,
    r_max: float | None = None,
    pbc=True,
    block_length: int | None = None,
    n_threads: int | None = None,
    backend: str = "numpy",
) -> RDFHistogram:
    """Pair counts of a path-integral trajectory over every bead, one block per ``block_length`` steps.
    The one all-bead RDF: ``score_md`` (a PIMD run's E_RDF) and :mod:`dynamat.pimd` call it.

    ``bead_positions``: (M, P, N, 3) Å, M saved steps of P beads; ``cells``: (3, 3) or (M, 3, 3)
    Å (all beads of a step share the cell). In the path-integral isomorphism bead b of atom i
    interacts only with bead b of the other atoms, so the quantum pair distribution is the
    bead average of each bead's pair distribution: the counts of the M·P bead frames, which
    :func:`rdf_from_histogram` turns into g(r). The result is identical to :func:`rdf_histogram`
    of the concatenated bead trajectories, and to the classical one at P = 1.
    """
    frames, frame_cells, p = _bead_frames(bead_positions, cells)
    return rdf_histogram(
        frames, frame_cells, n_bins=n_bins, r_max=r_max, pbc=pbc,
        block_length=None if block_length is None else int(block_length) * p,
        n_threads=n_threads, backend=backend,
    )


def all_bead_rdf(
    bead_positions,
    cells,
    *,
    n_bins: int = 500,
    r_max: float | None = None,
    pbc=True,
    normalization: Normalization = "mdtraj",
) -> tuple[np.ndarray, np.ndarray]:
    """(r in Å, g(r)) over every bead of a path-integral run (paper Eq. 3 for quantum nuclei).

    See :func:`all_bead_rdf_histogram`; the centroid RDF is :func:`rdf` of the bead mean, a
    different (classical-like, narrower) quantity.
    """
    hist = all_bead_rdf_histogram(bead_positions, cells, n_bins=n_bins, r_max=r_max, pbc=pbc)
    return rdf_from_histogram(hist, normalization=normalization)
