"""The RDF's pair-counting kernels (numpy and MDTraj backends) behind :func:`rdf_histogram`.

Both histogram the exact minimum-image distance of every unique pair: the rounded fractional
difference plus the lattice offsets of :class:`dynamat.metrics.neighbours._FrameGeometry`.
"""

from __future__ import annotations

import numpy as np

from dynamat.metrics.neighbours import _FrameGeometry


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


def _numpy_chunk_counts(pos, cells, geo: _FrameGeometry, n_bins, r_max, frame_block, n_blk,
                        near_bin: int | None = None):
    """Histogram one chunk of frames into (n_blk, width) counts; columns ≥ n_bins are r ≥ r_max.

    With ``near_bin``, also returns the pairs it found in bins ≤ ``near_bin`` as (i, j, frame)
    index arrays (i < j, frame within the chunk): the neighbour list of the same pass, which the
    bond-angle distribution consumes instead of measuring every pair again.
    """
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
    near = []
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
        if near_bin is not None:
            # flat indices j_rel·F + f: one array per atom, split once for the chunk below
            near.append(np.flatnonzero(ii <= near_bin))
        if block_off is not None:
            ii += block_off
        counts += np.bincount(ii.ravel(), minlength=n_blk * width)
    counts = counts.reshape(n_blk, width)
    if near_bin is None:
        return counts
    sizes = [len(x) for x in near]
    j_rel, f = np.divmod(np.concatenate(near), fc)
    i = np.repeat(np.arange(n - 1), sizes)
    return counts, (i, j_rel + i + 1, f)


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
    _, g = md.compute_rdf(traj, pairs, r_range=(0.0, r_max / 10.0), n_bins=n_bins, periodic=True)
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
