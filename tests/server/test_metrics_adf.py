"""Bond-angle distribution (metrics/adf.py) against a brute-force enumeration of lattice images."""

import itertools

import numpy as np
import pytest
from ase.build import bulk
from ase.data import covalent_radii

from dynamat.metrics.adf import bond_angle_distribution, bond_angle_distribution_error


def brute_force_angle_counts(positions, cell, numbers, n_bins=180, tol=1.25, reach=3):
    """Bond-angle counts from every periodic image of every atom within its bond cutoff.

    No minimum-image convention: neighbours are all r_j + n·C (n ∈ [−reach, reach]³) within
    tol·(r_cov,i + r_cov,j), capped at half the shortest lattice vector found by enumeration.
    """
    n = np.array(list(itertools.product(range(-reach, reach + 1), repeat=3)))
    shifts = n @ cell
    lam = np.linalg.norm(shifts[np.any(n != 0, axis=1)], axis=1).min()
    rc = covalent_radii[numbers]
    edges = np.linspace(0, 180, n_bins + 1)
    counts = np.zeros(n_bins)
    for i in range(len(positions)):
        vecs = []
        for j in range(len(positions)):
            cut = min(tol * (rc[i] + rc[j]), lam / 2)
            d = positions[j] + shifts - positions[i]
            r = np.linalg.norm(d, axis=1)
            vecs.extend(d[(r > 1e-12) & (r <= cut)])
        for a, b in itertools.combinations(vecs, 2):
            c = np.dot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b))
            counts += np.histogram([np.degrees(np.arccos(np.clip(c, -1, 1)))], bins=edges)[0]
    return counts


def systems():
    tri = np.array([[7.0, 0.0, 0.0], [5.6, 5.2, 0.0], [2.1, 3.9, 6.3]])  # skewed basis
    rng = np.random.default_rng(11)
    frac = rng.uniform(0, 1, (14, 3))
    yield "triclinic", frac @ tri, tri, np.full(14, 29)  # Cu: bonds up to min(3.3 Å, λ₁/2)
    hcp = bulk("Mg", "hcp", a=3.21, c=5.21) * (2, 2, 2)
    hcp.rattle(0.15, seed=5)
    yield "hcp16", hcp.positions, hcp.cell[:], hcp.numbers


@pytest.mark.parametrize("name, pos, cell, numbers", list(systems()))
def test_adf_equals_brute_force_over_images(name, pos, cell, numbers):
    counts = brute_force_angle_counts(pos, cell, numbers)
    assert counts.sum() > 20  # enough angles that a missed bond would show
    angles, adf = bond_angle_distribution(pos[None], cell, numbers)
    np.testing.assert_allclose(adf, counts / counts.sum(), rtol=0, atol=1e-12)
    np.testing.assert_allclose(angles, np.arange(180) + 0.5)


def test_rounding_alone_misses_bonds_in_hcp():
    # the failure that motivated the exact kernel: rounded fractional differences in the
    # Minkowski-reduced basis are not the minimum image of the 120° cell
    from ase.geometry import minkowski_reduce

    pos, cell, _ = list(systems())[1][1:]
    red, _ = minkowski_reduce(cell)
    frac = (pos[None] - pos[:, None]) @ np.linalg.inv(red)
    naive = np.linalg.norm((frac - np.rint(frac)) @ red, axis=-1)
    n = np.array(list(itertools.product(range(-2, 3), repeat=3))) @ cell
    exact = np.linalg.norm((pos[None] - pos[:, None])[..., None, :] + n, axis=-1).min(-1)
    cut = min(1.25 * 2 * covalent_radii[12], 3.21)
    assert np.sum((exact <= cut) & (naive > cut)) > 0


def test_adf_error_of_fcc():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True) * (2, 2, 2)
    pos = atoms.positions[None]
    angles, adf = bond_angle_distribution(pos, atoms.cell[:], atoms.numbers)
    # fcc first shell: 12 neighbours, 66 angles each: 60° ×24, 90° ×12, 120° ×24, 180° ×6
    mass = adf * 1.0
    for deg, share in ((60, 24), (90, 12), (120, 24), (180, 6)):
        near = np.abs(angles - deg) < 1.0
        assert mass[near].sum() == pytest.approx(share / 66, abs=1e-12)
    assert bond_angle_distribution_error(angles, adf, adf) == 0.0


def test_bond_angle_distribution_of_rattled_fcc():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    pos = atoms.positions[None] + np.random.default_rng(0).normal(scale=0.02, size=(3, 32, 3))
    angles, adf = bond_angle_distribution(pos, atoms.cell[:], atoms.numbers)
    assert np.sum(adf) * (angles[1] - angles[0]) == pytest.approx(1.0)
    def mass(lo, hi):
        sel = (angles > lo) & (angles < hi)
        return adf[sel].sum() * (angles[1] - angles[0])

    # nearest-neighbour bond angles of fcc: 60°, 90°, 120°, 180° (weights 24:12:24:6 per atom)
    for centre, weight in ((60, 24), (90, 12), (120, 24), (180, 6)):
        assert mass(centre - 5, centre + 5) == pytest.approx(weight / 66, abs=0.02)
    assert bond_angle_distribution_error(angles, adf, adf) == 0.0
    shifted = np.roll(adf, 15)
    assert bond_angle_distribution_error(angles, adf, shifted) > 10


def per_frame_angle_counts(positions, cells, numbers, n_bins=180, tol=1.25):
    """Counts of every bond angle, frame by frame: ASE's minimum-image vectors, np.histogram."""
    from ase.geometry import get_distances

    edges = np.linspace(0, 180, n_bins + 1)
    rc = covalent_radii[numbers]
    counts = np.zeros(n_bins, dtype=np.int64)
    for pos, cell in zip(positions, cells):
        vec, dist = get_distances(pos, cell=cell, pbc=True)
        lam = np.linalg.norm(cell, axis=1).min()  # these cells are close to orthogonal
        cut = np.minimum(tol * (rc[:, None] + rc[None, :]), lam / 2)
        angles = []
        for i in range(len(pos)):
            bonded = np.flatnonzero((dist[i] > 1e-12) & (dist[i] <= cut[i]))
            u = vec[i, bonded] / dist[i, bonded, None]
            a, b = np.triu_indices(len(bonded), 1)
            angles.append(np.degrees(np.arccos(np.clip(np.einsum("ij,ij->i", u[a], u[b]), -1, 1))))
        counts += np.histogram(np.concatenate(angles), bins=edges)[0]
    return counts


@pytest.mark.parametrize("variable_cell", [False, True])
def test_counts_over_many_frames_equal_a_per_frame_enumeration(variable_cell, monkeypatch):
    """Frames split into several steps of the counter, candidate pairs that are not bonds (Cu–O
    cutoffs differ), and under NPT a cell per frame: every angle counted once, in its bin."""
    from dynamat.metrics.adf import AngleCounter

    monkeypatch.setattr(AngleCounter, "PAIRS_PER_STEP", 200)  # a few frames per step
    rng = np.random.default_rng(3)
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    numbers = atoms.numbers.copy()
    numbers[rng.choice(32, 8, replace=False)] = 8
    m = 13
    scale = 1 + (0.02 * rng.standard_normal(m) if variable_cell else np.zeros(m))
    cells = atoms.cell[:][None] * scale[:, None, None]
    pos = (atoms.positions[None] + rng.normal(scale=0.12, size=(m, 32, 3))) * scale[:, None, None]
    expected = per_frame_angle_counts(pos, cells, numbers)
    assert expected.sum() > 10_000
    angles, adf = bond_angle_distribution(pos, cells, numbers)
    np.testing.assert_allclose(adf, expected / expected.sum(), rtol=1e-12, atol=0)


def test_bond_cutoffs_are_kept_per_element_pair_not_per_atom_pair():
    """A 6,000-atom three-element cell: every atom pair's cutoff, looked up through the table, is
    tol·(r_cov,i + r_cov,j) capped at half the shortest lattice vector; building the counter takes
    kilobytes (an (N, N) matrix would be 288 MB)."""
    import tracemalloc

    from dynamat.metrics.adf import AngleCounter

    rng = np.random.default_rng(5)
    numbers = rng.choice([8, 29, 79], size=6000)
    cell = np.diag([40.0, 41.0, 6.6])  # the short axis caps Au–Au and Cu–Au (3.4, 3.35 Å > 3.3 Å)
    tracemalloc.start()
    counter = AngleCounter(numbers, cell, True)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 5e6
    i, j = rng.integers(0, 6000, size=(2, 20000))
    want = np.minimum(1.25 * (covalent_radii[numbers[i]] + covalent_radii[numbers[j]]), 3.3)
    got = counter.cutoff[counter.species[i], counter.species[j]]
    np.testing.assert_array_equal(got, want)
    assert (want == 3.3).any() and (want < 3.3).any()
    assert counter.r_near == 3.3 and not counter.one_cutoff
