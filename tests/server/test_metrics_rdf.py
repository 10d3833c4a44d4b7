"""RDF (paper Eqs. 3–4) against brute force, ASE and MDTraj; chunking; E_RDF edge cases."""

import itertools

import mdtraj as md
import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk
from ase.geometry.rdf import get_rdf

from dynamat.metrics.rdf import (
    all_bead_rdf,
    all_bead_rdf_histogram,
    rdf,
    rdf_error,
    rdf_from_histogram,
    rdf_histogram,
    rdf_r_max,
)


def brute_force_rdf(positions, cell, n_bins, r_max):
    """All ordered-pair-free minimum-image histogram, normalised as MDTraj does.

    Minimum image by exhaustive search over lattice translations −3…3 of the wrapped
    difference vector (no lattice reduction), then np.histogram on linspace edges.
    """
    n = positions.shape[1]
    iu = np.triu_indices(n, 1)
    images = np.array(list(itertools.product(range(-3, 4), repeat=3))) @ cell
    inv = np.linalg.inv(cell)
    edges = np.linspace(0.0, r_max, n_bins + 1)
    counts = np.zeros(n_bins)
    for frame in positions:
        d = (frame[None, :, :] - frame[:, None, :])[iu]
        s = d @ inv
        s -= np.rint(s)
        d = s @ cell
        dist = np.linalg.norm(d[:, None, :] + images[None], axis=-1).min(axis=1)
        counts += np.histogram(dist, bins=edges)[0]
    shell = 4 / 3 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    vol = abs(np.linalg.det(cell))
    return counts / (n * (n - 1) / 2 * len(positions) / vol * shell)


def random_cell(rng):
    return np.eye(3) * 9.0 + rng.normal(scale=2.0, size=(3, 3))


@pytest.mark.parametrize("seed", range(6))
def test_rdf_matches_brute_force_on_random_triclinic_cells(seed):
    rng = np.random.default_rng(seed)
    cell = random_cell(rng)
    pos = rng.uniform(-3, 12, size=(3, 40, 3))  # deliberately unwrapped
    r_max = rdf_r_max(cell)
    r, g = rdf(pos, cell, n_bins=80)
    expected = brute_force_rdf(pos, cell, 80, r_max)
    assert r[-1] < r_max
    np.testing.assert_allclose(g, expected, rtol=0, atol=1e-8)
    assert g.sum() > 0


@pytest.mark.parametrize("seed", range(4))
def test_rdf_matches_ase_get_rdf(seed):
    rng = np.random.default_rng(100 + seed)
    cell = random_cell(rng)
    vol = abs(np.linalg.det(cell))
    # ASE's neighbour list accepts r_max up to half the smallest plane spacing
    heights = [vol / np.linalg.norm(np.cross(cell[i - 2], cell[i - 1])) for i in range(3)]
    r_max = 0.999 * min(heights) / 2
    assert r_max <= rdf_r_max(cell)
    frames = [
        Atoms("Cu30", positions=rng.uniform(0, 1, (30, 3)) @ cell, cell=cell, pbc=True)
        for _ in range(3)
    ]
    g_ase, r_ase = get_rdf(frames, r_max, 60)
    pos = np.array([a.positions for a in frames])
    r, g = rdf(pos, cell, n_bins=60, r_max=r_max, normalization="eq3")
    np.testing.assert_allclose(r, r_ase, atol=1e-12)
    np.testing.assert_allclose(g, g_ase, rtol=0, atol=1e-8)
    # the default (MDTraj) normalisation differs exactly by N/(N − 1)
    _, g_md = rdf(pos, cell, n_bins=60, r_max=r_max)
    np.testing.assert_allclose(g_md, g * 30 / 29, atol=1e-12)


def test_chunked_blocked_and_threaded_equal_unchunked():
    rng = np.random.default_rng(7)
    cell = np.array([[8.0, 0, 0], [2.5, 7.5, 0], [1.0, 1.5, 9.0]])
    pos = rng.uniform(0, 9, size=(37, 25, 3))
    full = rdf_histogram(pos, cell, n_bins=50, chunk_frames=1000, n_threads=1)
    for kw in ({"chunk_frames": 4}, {"chunk_frames": 5, "n_threads": 2}, {"chunk_frames": 1}):
        part = rdf_histogram(pos, cell, n_bins=50, **kw)
        np.testing.assert_array_equal(part.counts, full.counts)
    blocked = rdf_histogram(pos, cell, n_bins=50, block_length=6, chunk_frames=4)
    assert blocked.counts.shape == (7, 50)
    assert blocked.n_frames.tolist() == [6] * 6 + [1]
    np.testing.assert_array_equal(blocked.counts.sum(0), full.counts[0])
    np.testing.assert_allclose(rdf_from_histogram(blocked)[1], rdf_from_histogram(full)[1])


@pytest.mark.parametrize("n_frames", [4, 20])  # 20 > the per-cell offset-pruning limit
def test_varying_cells_match_per_frame_brute_force(n_frames):
    rng = np.random.default_rng(3)
    base = np.array([[8.0, 0, 0], [2.0, 8.0, 0], [1.0, 1.0, 8.5]])
    cells = np.array([base * (1 + 0.01 * k) for k in range(n_frames)])
    pos = rng.uniform(0, 8, size=(n_frames, 20, 3))
    r_max = rdf_r_max(cells)
    assert r_max == pytest.approx(rdf_r_max(cells[0]))  # the smallest frame bounds R_max
    hist = rdf_histogram(pos, cells, n_bins=40, chunk_frames=3)
    total = 0
    for f in range(n_frames):
        one = rdf_histogram(pos[f : f + 1], cells[f], n_bins=40, r_max=r_max)
        brute = brute_force_rdf(pos[f : f + 1], cells[f], 40, r_max)
        np.testing.assert_allclose(rdf_from_histogram(one)[1], brute, atol=1e-8)
        total = total + one.counts
    # frames combine MDTraj's way: summed counts over summed 1/V
    np.testing.assert_array_equal(hist.counts, total)
    assert hist.inv_volume_sum[0] == pytest.approx(np.sum(1 / np.linalg.det(cells)))


def test_mdtraj_backend_recombines_chunks_exactly_and_matches_float64():
    rng = np.random.default_rng(11)
    cell = np.eye(3) * 10.0
    pos = rng.uniform(0, 10, size=(12, 30, 3))
    # MDTraj on the whole trajectory in one call, as the paper does
    top = md.Topology()
    chain = top.add_chain()
    for _ in range(30):
        top.add_atom("Cu", md.element.copper, top.add_residue("X", chain))
    traj = md.Trajectory(pos / 10, top, unitcell_lengths=np.full((12, 3), 1.0),
                         unitcell_angles=np.full((12, 3), 90.0))
    pairs = np.array(list(itertools.combinations(range(30), 2)))
    r_nm, g_md = md.compute_rdf(traj, pairs, r_range=(0, 0.5), n_bins=100)
    r, g_chunked = rdf(pos, cell, n_bins=100, backend="mdtraj", chunk_frames=5)
    np.testing.assert_allclose(r, r_nm * 10, atol=1e-6)
    np.testing.assert_allclose(g_chunked, g_md, rtol=1e-9, atol=1e-9)
    # the float64 kernel: identical up to float32 rounding of distances at bin edges
    _, g64 = rdf(pos, cell, n_bins=100)
    assert np.abs(g64 - g_md).max() < 0.05 * g64.max()
    assert np.mean(~np.isclose(g64, g_md, rtol=1e-9, atol=0)) < 0.05


def test_mdtraj_backend_triclinic_agrees_with_float64():
    rng = np.random.default_rng(5)
    cell = np.array([[9.0, 0, 0], [-4.5, 7.8, 0], [0.5, 0.3, 10.0]])  # hexagonal-like
    pos = rng.uniform(0, 1, size=(6, 40, 3)) @ cell
    h_md = rdf_histogram(pos, cell, n_bins=60, backend="mdtraj")
    h_np = rdf_histogram(pos, cell, n_bins=60)
    # same pairs counted; only float32 edge flips move counts to a neighbouring bin
    assert h_md.counts.sum() == h_np.counts.sum()
    assert np.abs(h_md.counts - h_np.counts).sum() <= 4


def test_r_max_uses_minkowski_reduced_vectors():
    cubic = np.eye(3) * 6.0
    skewed = np.array([cubic[0], cubic[0] + cubic[1], cubic[0] + cubic[1] + cubic[2]])
    assert rdf_r_max(skewed) == pytest.approx(3.0)
    # half the shortest *basis* vector would be wrong here
    assert rdf_r_max(skewed) < np.linalg.norm(skewed, axis=1).min() / 2 + 1e-12
    pos = np.random.default_rng(0).uniform(0, 6, (2, 20, 3))
    np.testing.assert_allclose(rdf(pos, skewed, n_bins=30)[1], rdf(pos, cubic, n_bins=30)[1],
                               atol=1e-9)
    with pytest.raises(ValueError, match="exceeds half the shortest"):
        rdf(pos, cubic, r_max=3.5)


def test_rdf_input_validation():
    with pytest.raises(ValueError, match=r"\(M, N, 3\)"):
        rdf(np.zeros((3, 4, 2)), np.eye(3))
    with pytest.raises(ValueError, match="at least 2 atoms"):
        rdf(np.zeros((3, 1, 3)), np.eye(3))
    with pytest.raises(ValueError, match="cells"):
        rdf(np.zeros((3, 4, 3)), np.eye(2))
    with pytest.raises(ValueError, match="non-finite"):
        rdf(np.full((1, 4, 3), np.nan), np.eye(3) * 5)
    with pytest.raises(ValueError, match="backend"):
        rdf(np.zeros((1, 4, 3)), np.eye(3) * 5, backend="gromacs")


def test_ideal_gas_is_one_and_crystal_vs_gas_scores_100():
    rng = np.random.default_rng(2)
    cell = np.eye(3) * 10.83
    gas = rng.uniform(0, 10.83, size=(300, 108, 3))
    r, g_gas = rdf(gas, cell, n_bins=100)
    assert abs(g_gas[20:].mean() - 1) < 0.01  # MDTraj normalisation: ideal gas → 1
    crystal = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(3)
    xtal = crystal.positions[None] + rng.normal(scale=0.05, size=(20, 108, 3))
    _, g_xtal = rdf(xtal, cell, n_bins=100)
    # gas as the reference: nothing to match, the error saturates
    assert rdf_error(g_gas, g_xtal, r) == 100.0
    # crystal as the reference: a structureless g = 1 is by definition 100 %; a finite gas
    # sample is that plus counting noise, so ≈ 100 %
    assert rdf_error(g_xtal, np.ones_like(g_xtal), r) == 100.0
    assert rdf_error(g_xtal, g_gas, r) > 95.0
    assert rdf_error(g_xtal, g_xtal, r) == 0.0
    assert 0 < rdf_error(g_xtal, rdf(xtal[:10], cell, n_bins=100)[1], r) < 20


def test_rdf_error_closed_form_and_edge_cases():
    r = np.linspace(0.05, 4.95, 50)
    bump = np.exp(-((r - 2.5) ** 2) / 0.1)
    g_ref = 1 + bump
    assert rdf_error(g_ref, 1 + 0.5 * bump, r) == pytest.approx(50.0)
    assert rdf_error(g_ref, 1 + 3 * bump, r) == 100.0  # capped
    flat = np.ones_like(r)
    assert rdf_error(flat, flat, r) == 0.0
    assert rdf_error(flat, g_ref, r) == 100.0  # zero denominator rule
    with pytest.raises(ValueError, match="equal length"):
        rdf_error(g_ref, g_ref[:-1], r)
    with pytest.raises(ValueError, match="non-negative"):
        rdf_error(g_ref, -g_ref, r)


def test_streams_from_an_hdf5_dataset(tmp_path):
    import h5py

    rng = np.random.default_rng(4)
    pos = rng.uniform(0, 8, size=(50, 20, 3))
    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["positions"] = pos
    with h5py.File(tmp_path / "t.h5", "r") as f:
        _, g_disk = rdf(f["positions"], np.eye(3) * 8, n_bins=40, chunk_frames=7)
    np.testing.assert_array_equal(g_disk, rdf(pos, np.eye(3) * 8, n_bins=40)[1])


# --- path integrals: all-bead RDF ------------------------------------------------------------


def test_all_bead_rdf_is_the_rdf_of_the_concatenated_bead_trajectories():
    rng = np.random.default_rng(12)
    cell = random_cell(rng)
    m, p, n = 3, 4, 20
    centroids = rng.uniform(0, 9, size=(m, 1, n, 3))
    beads = centroids + rng.normal(scale=0.3, size=(m, p, n, 3))  # ring-polymer spread
    r, g = all_bead_rdf(beads, cell, n_bins=60)
    # bead-major concatenation: bead 0's trajectory, then bead 1's, ...
    concat = np.concatenate([beads[:, b] for b in range(p)])
    r2, g2 = rdf(concat, cell, n_bins=60)
    np.testing.assert_array_equal(r, r2)
    np.testing.assert_allclose(g, g2, rtol=1e-13, atol=0)
    # and both equal the brute-force histogram of those M·P frames
    np.testing.assert_allclose(g, brute_force_rdf(concat, cell, 60, rdf_r_max(cell)), atol=1e-8)
    # it is not the centroid RDF (the beads are spread out)
    _, g_cen = rdf(beads.mean(axis=1), cell, n_bins=60)
    assert rdf_error(g_cen, g, r) > 1.0
    # per-step cells and blocks of steps: blocks hold P frames per step
    hist = all_bead_rdf_histogram(beads, np.repeat(cell[None], m, 0), n_bins=60, block_length=1)
    assert hist.counts.shape == (m, 60)
    np.testing.assert_array_equal(hist.n_frames, [p] * m)
    np.testing.assert_allclose(rdf_from_histogram(hist)[1], g, rtol=1e-13)


def test_all_bead_rdf_with_one_bead_is_the_classical_rdf():
    rng = np.random.default_rng(13)
    cell = random_cell(rng)
    pos = rng.uniform(0, 9, size=(5, 25, 3))
    r, g = all_bead_rdf(pos[:, None], cell, n_bins=50)
    r2, g2 = rdf(pos, cell, n_bins=50)
    np.testing.assert_array_equal(r, r2)
    np.testing.assert_array_equal(g, g2)
    with pytest.raises(ValueError, match=r"\(M, P, N, 3\)"):
        all_bead_rdf(pos, cell)
