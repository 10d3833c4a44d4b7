"""Radial distribution function and its error (paper Eqs. 3–4), plus a bond-angle extra.

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
the numpy one matches a float64 brute force to round-off and is several times faster.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import Literal

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from ase.geometry import minkowski_reduce

__all__ = [
    "RDFHistogram",
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


def _as_cells(cells, n_frames: int | None = None) -> np.ndarray:
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


def _unique_cells(cells: np.ndarray) -> np.ndarray:
    # NVT trajectories repeat one cell; reducing it once instead of per frame is what keeps
    # 80k-frame trajectories cheap.
    if np.all(cells == cells[0]):
        return cells[:1]
    return np.unique(cells.reshape(len(cells), 9), axis=0).reshape(-1, 3, 3)


def rdf_r_max(cells, pbc=True) -> float:
    """Largest valid RDF radius R_max in Å: half the shortest lattice vector, min over frames.

    The paper takes "half the shortest cell vector". For a skewed basis an integer combination
    of the cell vectors can be shorter than every basis vector, so the basis is Minkowski-reduced
    first (``ase.geometry.minkowski_reduce``); its first vector is then the shortest lattice
    vector λ₁. Below λ₁/2 every pair has a unique nearest image, so a minimum-image histogram is
    complete; above it, pairs would be missed or double-counted. Only periodic directions count.
    """
    cells = _as_cells(cells)
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    if not pbc.any():
        raise ValueError("rdf_r_max needs at least one periodic direction")
    shortest = np.inf
    for cell in _unique_cells(cells):
        if abs(np.linalg.det(cell)) < 1e-12:
            raise ValueError("cell is singular (zero volume)")
        reduced, _ = minkowski_reduce(cell, pbc)
        shortest = min(shortest, float(np.linalg.norm(reduced[pbc], axis=1).min()))
    return shortest / 2


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


_CORNERS = np.array([[i, j, k] for i in (-0.5, 0.5) for j in (-0.5, 0.5) for k in (-0.5, 0.5)])


def _offset_bounds(cells: np.ndarray, pbc: np.ndarray, r_max: float) -> np.ndarray:
    """Largest |n_k| of a lattice offset that can matter, over all given cells.

    After rounding the fractional difference to s ∈ [−½, ½]³, the true minimum image is
    (s + n)·C for some integer n. If it is shorter than r_max then |n·C| < r_max + R, with R the
    half long diagonal of the cell, and |n_k| ≤ |n·C| · |c*_k| (c*_k the reciprocal vectors).
    """
    half_diag = np.linalg.norm(_CORNERS @ cells, axis=-1).max(axis=-1)  # (F,)
    recip = np.linalg.norm(np.linalg.inv(cells), axis=-2)  # (F, 3) column norms
    n_lim = np.floor((r_max + half_diag[:, None]) * recip + 1e-9).astype(int).max(axis=0)
    n_lim[~pbc] = 0
    return n_lim


@lru_cache(maxsize=64)
def _image_offsets(cell_bytes: bytes, pbc_key: tuple[bool, ...], r_max: float) -> np.ndarray:
    """Lattice offsets n that can bring a rounded pair vector of this cell below r_max.

    Candidates within :func:`_offset_bounds` are kept only if the shifted half-cell box
    actually comes within r_max of the origin (a bounded least-squares problem), so the list
    is exact and short: empty for orthorhombic cells, typically 2–8 entries otherwise.
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
        if not n.any() or np.linalg.norm(n @ cell) - half_diag >= r_max:
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
        basis = self.reduced(cells[:1] if self.fixed else _unique_cells(cells))
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


def _metric_terms(metric: np.ndarray, orthorhombic: bool):
    """Per-frame coefficients of q(s) = s·G·s for variable cells, each (F,) over frames."""
    m = metric.transpose(1, 2, 0)
    if orthorhombic:
        return "diag", [m[0, 0], m[1, 1], m[2, 2]]
    return "full", [m[0, 0], m[1, 1], m[2, 2], 2 * m[0, 1], 2 * m[0, 2], 2 * m[1, 2]]


def _quad(ds, kind, g, out, tmp):
    """out = s·G·s for fractional differences ds (m, 3, F), with per-frame coefficients g."""
    ds0, ds1, ds2 = ds[:, 0], ds[:, 1], ds[:, 2]
    np.multiply(ds0, ds0, out=out)
    out *= g[0]
    for a, b, c in ((ds1, ds1, g[1]), (ds2, ds2, g[2])):
        np.multiply(a, b, out=tmp)
        tmp *= c
        out += tmp
    if kind == "full":
        for a, b, c in ((ds0, ds1, g[3]), (ds0, ds2, g[4]), (ds1, ds2, g[5])):
            np.multiply(a, b, out=tmp)
            tmp *= c
            out += tmp
    return out


def _numpy_chunk_counts(pos, cells, geo: _FrameGeometry, n_bins, r_max, frame_block, n_blk):
    """Histogram one chunk of frames into (n_blk, width) counts; columns ≥ n_bins are r ≥ r_max."""
    fc, n, _ = pos.shape
    red = geo.reduced(cells)
    frac = np.einsum("fnk,fkl->fnl", pos, np.linalg.inv(red))
    per = geo.pbc
    use_int = bool(per.all())
    if use_int:
        # Fixed point: fractional coordinates × 2⁶⁴ in int64. Integer subtraction wraps modulo
        # 2⁶⁴, i.e. modulo one cell, so the difference *is* the rounded minimum-image vector
        # (no rint pass), with 2⁻⁶⁴ resolution — finer than float64 itself.
        frac -= np.rint(frac)
        frac *= 2.0**64
        np.clip(frac, -(2.0**63), 2.0**63 - 1024.0, out=frac)  # +½ ≡ −½; keep inside int64
        s = np.ascontiguousarray(frac.transpose(1, 2, 0)).astype(np.int64)
    else:
        frac[..., per] -= np.floor(frac[..., per])
        s = np.ascontiguousarray(frac.transpose(1, 2, 0))
    # (N, 3, F) layout: each atom's slice is contiguous, so pair differences are broadcasts
    # rather than gathers and every step works on cache-sized blocks.
    scale = n_bins / r_max  # distances are measured in bin widths: floor(r) is the bin index
    metric = np.einsum("fik,fjk->fij", red, red) * scale**2
    # Image offsets n enter as q(s + n) = q(s) + 2 (G n)·s + n·G·n; with ±n paired this is
    # q(s) + (n·G·n − |2 (G n)·s|): one small matrix product for all offsets.
    if geo.fixed:
        cubic = geo.orthorhombic and np.all(np.diag(metric[0]) == metric[0, 0, 0])
        kind = "iso" if cubic else "mat"
        amat = scale * red[0].T  # Cartesian (in bin widths) = amat @ fractional
        off_lin = 2.0 * geo.offsets @ metric[0]  # (n_off, 3)
        off_beta = np.einsum("ok,ok->o", off_lin, geo.offsets)[None, :, None] / 2.0
    else:
        kind, g = _metric_terms(metric, geo.orthorhombic)
        m_all = metric.transpose(1, 2, 0)
        lin = []
        for off in geo.offsets:
            gn = np.tensordot(off, m_all, axes=(0, 0))  # (3, F)
            lin.append((2 * gn[0], 2 * gn[1], 2 * gn[2], np.tensordot(off, gn, axes=(0, 0))))
    n_off = len(geo.offsets)
    width = geo.max_bin(n_bins, r_max) + 1
    block_off = None
    if n_blk > 1:
        block_off = (frame_block - frame_block[0]).astype(np.intp) * width
    counts = np.zeros(n_blk * width, dtype=np.int64)
    buf = np.empty((n - 1, 3, fc))
    rnd = np.empty((n - 1, 3, fc), dtype=np.int64 if use_int else float)
    # int → float conversion factor, with the cubic metric folded in so q needs no rescaling
    to_frac = 2.0**-64 * (np.sqrt(metric[0, 0, 0]) if kind == "iso" else 1.0)
    q = np.empty((n - 1, fc))
    tmp = np.empty((n - 1, fc))
    cart = np.empty((n - 1, 3, fc)) if kind == "mat" else None
    lin_buf = np.empty((n - 1, n_off, fc)) if n_off and geo.fixed else None
    best = np.empty((n - 1, fc)) if n_off else None
    cand = np.empty((n - 1, fc)) if n_off and not geo.fixed else None
    idx = np.empty((n - 1, fc), dtype=np.intp)
    for i in range(n - 1):
        m = n - 1 - i
        if use_int:
            di = np.subtract(s[i + 1 :], s[i], out=rnd[:m])
            ds = np.multiply(di, to_frac, out=buf[:m])
        else:
            ds = np.subtract(s[i + 1 :], s[i], out=buf[:m])
            for k in np.flatnonzero(per):
                ds[:, k] -= np.rint(ds[:, k])
        qq = q[:m]
        if kind == "iso":
            np.einsum("ikj,ikj->ij", ds, ds, out=qq)
            if not use_int:
                qq *= metric[0, 0, 0]
        elif kind == "mat":
            v = np.matmul(amat, ds, out=cart[:m])
            np.einsum("ikj,ikj->ij", v, v, out=qq)
        else:
            _quad(ds, kind, g, qq, tmp[:m])
        if n_off:
            bb = best[:m]
            if geo.fixed:
                t = np.matmul(off_lin, ds, out=lin_buf[:m])
                np.abs(t, out=t)
                np.subtract(off_beta, t, out=t)
                np.min(t, axis=1, out=bb)
            else:
                cc, tt = cand[:m], tmp[:m]
                for j, (a0, a1, a2, beta) in enumerate(lin):
                    out = bb if j == 0 else cc
                    np.multiply(ds[:, 0], a0, out=out)
                    np.multiply(ds[:, 1], a1, out=tt)
                    out += tt
                    np.multiply(ds[:, 2], a2, out=tt)
                    out += tt
                    np.abs(out, out=out)
                    np.subtract(beta, out, out=out)
                    if j:
                        np.minimum(bb, cc, out=bb)
            np.minimum(bb, 0.0, out=bb)
            qq += bb
            np.maximum(qq, 0.0, out=qq)  # the expansion can round a zero to −1e-13
        ii = idx[:m]
        if per.all():
            np.sqrt(qq, out=ii, casting="unsafe")  # fused sqrt + truncation = floor for r ≥ 0
        else:  # non-periodic extents are unbounded: keep indices inside the table
            np.sqrt(qq, out=qq)
            np.minimum(qq, width - 1, out=qq)
            np.copyto(ii, qq, casting="unsafe")
        if block_off is not None:
            ii += block_off
        counts += np.bincount(ii.ravel(), minlength=n_blk * width)
    return counts.reshape(n_blk, width)


def _mdtraj_chunk_counts(pos, cells, geo: _FrameGeometry, n_bins, r_max, pairs, topology):
    """One ``mdtraj.compute_rdf`` call, converted back from normalised g(r) to integer counts."""
    import mdtraj as md
    from ase.geometry import cell_to_cellpar

    red = geo.reduced(cells)
    frac = np.einsum("fnk,fkl->fnl", pos, np.linalg.inv(red))
    frac -= np.floor(frac)
    # MDTraj keeps only box lengths and angles and rebuilds vectors as a along x, b in the xy
    # plane, so coordinates must be re-expressed in that frame (same metric, same distances).
    par = np.array([cell_to_cellpar(c) for c in red]) if not geo.fixed else None
    if geo.fixed:
        par = np.broadcast_to(cell_to_cellpar(red[0]), (len(pos), 6))
    from ase.geometry import cellpar_to_cell

    canon = np.array([cellpar_to_cell(p) for p in (par[:1] if geo.fixed else par)])
    xyz = np.einsum("fnk,fkl->fnl", frac, np.broadcast_to(canon, (len(pos), 3, 3)))
    traj = md.Trajectory(
        xyz / 10.0,
        topology,
        unitcell_lengths=par[:, :3] / 10.0,
        unitcell_angles=par[:, 3:],
    )
    r_nm, g = md.compute_rdf(traj, pairs, r_range=(0.0, r_max / 10.0), n_bins=n_bins, periodic=True)
    edges_nm = np.linspace(0.0, r_max / 10.0, n_bins + 1)
    shell_nm = (4.0 / 3.0) * np.pi * (edges_nm[1:] ** 3 - edges_nm[:-1] ** 3)
    norm = len(pairs) * np.sum(1.0 / traj.unitcell_volumes) * shell_nm
    return np.rint(g * norm).astype(np.int64)


def _mdtraj_topology(numbers):
    import mdtraj as md

    top = md.Topology()
    chain = top.add_chain()
    for z in numbers:
        res = top.add_residue("X", chain)
        top.add_atom("X", md.element.Element.getByAtomicNumber(int(z)), res)
    return top


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
) -> RDFHistogram:
    """Stream a trajectory into unique-pair distance counts, one row per block of frames.

    ``block_length`` frames per block (default: one block for the whole trajectory); blocks are
    the resampling units of the block bootstrap. ``n_threads``: chunks processed concurrently
    (default: the CPUs this process may use, at most 4); counts are integers, so the result
    does not depend on it. See :func:`rdf` for the other arguments.
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
    cells = _as_cells(cells, n_frames)
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
            part = _numpy_chunk_counts(pos, cell_chunk, geo, n_bins, r_max, blocks, n_blk)
            return int(blocks[0]), part[:, : n_bins + 1]
        part = _mdtraj_chunk_counts(pos, cell_chunk, geo, n_bins, r_max, pairs, topology)
        return int(blocks[0]), np.pad(part, (0, 1))[None]

    def accumulate(results):
        for b0, part in results:
            counts[b0 : b0 + len(part)] += part

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
# Bond-angle distribution (not in the paper; Matbench-discovery's ADF error, small version).


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
    of the two ASE covalent radii (capped at :func:`rdf_r_max`, where minimum images are
    unique); each unordered pair of bonds sharing a centre contributes one angle. This follows
    Matbench-discovery's ``calc_adf``. ``frame_stride`` subsamples frames (angles decorrelate
    slowly, and this is O(frames · N²)).
    """
    from ase.data import covalent_radii

    positions = np.asarray(positions, dtype=float)
    if positions.ndim != 3 or positions.shape[2] != 3:
        raise ValueError(f"positions must be (M, N, 3), got {positions.shape}")
    numbers = np.asarray(numbers, dtype=int)
    if len(numbers) != positions.shape[1]:
        raise ValueError("numbers must have one entry per atom")
    if bond_tolerance <= 0:
        raise ValueError("bond_tolerance must be positive")
    cells = np.broadcast_to(_as_cells(cells, len(positions)), (len(positions), 3, 3))
    pbc = np.broadcast_to(np.asarray(pbc, dtype=bool), (3,))
    rc = covalent_radii[numbers]
    cutoff = np.minimum(bond_tolerance * (rc[:, None] + rc[None, :]), rdf_r_max(cells, pbc))
    edges = np.linspace(0.0, 180.0, n_bins + 1)
    counts = np.zeros(n_bins)
    for f in range(0, len(positions), frame_stride):
        vec = _mic_vectors(positions[f], cells[f], pbc)
        dist = np.linalg.norm(vec, axis=-1)
        bonded = (dist > 0) & (dist <= cutoff)
        for c in range(len(numbers)):
            nb = np.flatnonzero(bonded[c])
            if len(nb) < 2:
                continue
            u = vec[c, nb] / dist[c, nb, None]
            a, b = np.triu_indices(len(nb), 1)
            cos = np.clip(np.einsum("pk,pk->p", u[a], u[b]), -1.0, 1.0)
            counts += np.histogram(np.degrees(np.arccos(cos)), bins=edges)[0]
    if counts.sum() == 0:
        raise ValueError("no bonded pairs of neighbours found: no bond angles to histogram")
    width = np.diff(edges)
    return 0.5 * (edges[1:] + edges[:-1]), counts / (counts.sum() * width)


def _mic_vectors(pos: np.ndarray, cell: np.ndarray, pbc) -> np.ndarray:
    """(N, N, 3) minimum-image vectors r_j − r_i, valid below :func:`rdf_r_max`."""
    reduced, _ = minkowski_reduce(cell, pbc)
    frac = (pos[None, :, :] - pos[:, None, :]) @ np.linalg.inv(reduced)
    frac[..., pbc] -= np.rint(frac[..., pbc])
    return frac @ reduced


def bond_angle_distribution_error(angles, adf_ref, adf_mlip) -> float:
    """ADF error in percent (Matbench-discovery definition, not in the paper).

    ``100 · min(1, W1(ref, mlip) / W1(ref, sin θ))``: the Wasserstein-1 distance (degrees)
    between the two unit-area angle densities, divided by the reference's distance to the
    structureless sin θ background of random bond directions (the angular ideal gas).
    """
    from scipy.stats import wasserstein_distance

    angles = np.asarray(angles, dtype=float)
    ref = np.asarray(adf_ref, dtype=float)
    mlip = np.asarray(adf_mlip, dtype=float)
    if not (angles.shape == ref.shape == mlip.shape) or angles.ndim != 1:
        raise ValueError("angles, adf_ref and adf_mlip must be 1-D of equal length")
    for name, d in (("adf_ref", ref), ("adf_mlip", mlip)):
        if not np.all(np.isfinite(d)) or np.any(d < 0) or d.sum() <= 0:
            raise ValueError(f"{name} must be finite, non-negative and non-zero")
    w1 = wasserstein_distance(angles, angles, ref, mlip)
    w1_bg = wasserstein_distance(angles, angles, ref, np.sin(np.radians(angles)))
    if w1_bg <= 0:
        return 0.0 if w1 == 0 else 100.0
    return 100.0 * min(1.0, w1 / w1_bg)
