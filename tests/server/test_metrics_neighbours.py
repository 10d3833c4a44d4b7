"""Exact minimum image (metrics/neighbours.py) against brute force over lattice images."""

import itertools

import numpy as np
import pytest
from ase.build import bulk

from dynamat.metrics.neighbours import min_image_radius, minimum_image, pair_vectors

# a strongly skewed (non-reduced) basis: rounding fractional coordinates is not enough here
SKEWED = np.array([[5.0, 0.0, 0.0], [4.2, 3.1, 0.0], [1.3, 2.9, 4.0]])


def brute_min_image(v, cell, pbc=(True, True, True), reach=4):
    """Shortest v + n·C over every n in [−reach, reach]³ (periodic directions only).

    v is first brought into the basis's half-cell box by rounding, so its images within
    ``reach`` cells include the shortest one.
    """
    frac = v @ np.linalg.inv(cell)
    frac[:, list(pbc)] -= np.rint(frac[:, list(pbc)])
    v = frac @ cell
    ranges = [range(-reach, reach + 1) if p else [0] for p in pbc]
    shifts = np.array(list(itertools.product(*ranges))) @ cell
    cand = v[:, None, :] + shifts[None]
    k = np.linalg.norm(cand, axis=-1).argmin(axis=1)
    return cand[np.arange(len(v)), k]


def rattled_hcp16():
    atoms = bulk("Mg", "hcp", a=3.21, c=5.21) * (2, 2, 2)
    atoms.rattle(0.15, seed=3)
    return atoms.positions, atoms.cell[:]


@pytest.mark.parametrize("case", ["triclinic", "hcp16"])
def test_pair_vectors_match_brute_force(case):
    rng = np.random.default_rng(7)
    if case == "triclinic":
        cell = SKEWED
        pos = rng.uniform(0, 1, (24, 3)) @ cell + rng.normal(0, 0.1, (24, 3))
    else:
        pos, cell = rattled_hcp16()
    vec, dist = pair_vectors(pos, cell)
    ref = brute_min_image((pos[None] - pos[:, None]).reshape(-1, 3), cell).reshape(vec.shape)
    # lengths are unique; vectors too, except at exact ties (none in random data)
    np.testing.assert_allclose(dist, np.linalg.norm(ref, axis=-1), atol=1e-12)
    np.testing.assert_allclose(vec, ref, atol=1e-12)
    # plain rounding in the given basis is not the minimum image for this cell
    frac = (pos[None] - pos[:, None]) @ np.linalg.inv(cell)
    naive = np.linalg.norm((frac - np.rint(frac)) @ cell, axis=-1)
    if case == "triclinic":
        assert np.sum(naive > dist + 1e-9) > 10


def test_cutoff_keeps_short_vectors_exact_and_long_ones_long():
    rng = np.random.default_rng(1)
    v = rng.uniform(-20, 20, (500, 3))
    ref = np.linalg.norm(brute_min_image(v, SKEWED), axis=1)
    cut = 2.0
    got = np.linalg.norm(minimum_image(v, SKEWED, cutoff=cut), axis=1)
    short = ref < cut
    assert short.any()
    np.testing.assert_allclose(got[short], ref[short], atol=1e-12)
    assert np.all(got[~short] >= cut - 1e-12)


def test_partial_pbc_slab():
    # periodic in x, y only: no image shift along z, however long the z component
    cell = np.array([[4.0, 0.0, 0.0], [2.5, 3.5, 0.0], [0.0, 0.0, 30.0]])
    rng = np.random.default_rng(2)
    v = rng.uniform(-12, 12, (300, 3))
    pbc = (True, True, False)
    got = minimum_image(v, cell, pbc)
    np.testing.assert_allclose(got, brute_min_image(v, cell, pbc), atol=1e-12)
    np.testing.assert_allclose(got[:, 2], v[:, 2], atol=1e-12)
    np.testing.assert_array_equal(minimum_image(v, cell, False), v)


def test_min_image_radius_is_half_shortest_lattice_vector():
    n = np.array(list(itertools.product(range(-3, 4), repeat=3)))
    lengths = np.linalg.norm(n[np.any(n != 0, axis=1)] @ SKEWED, axis=1)
    assert min_image_radius(SKEWED) == pytest.approx(lengths.min() / 2, rel=1e-12)
    # shorter than half the shortest basis vector: the reduction matters
    assert min_image_radius(SKEWED) < np.linalg.norm(SKEWED, axis=1).min() / 2 - 0.1
