"""Matbench-discovery's six MD keys (metrics/matbench.py): small cases worked out by hand.

Every expected number below is derived in the comments from the definitions in
matbench_discovery/metrics/md.py (janosh/matbench-discovery), not from our code.
"""

import numpy as np
import pytest
from ase.build import bulk

from dynamat.metrics.matbench import (
    _rdf_and_angles,
    matbench_adf_error,
    matbench_energy_rmse,
    matbench_force_rmse,
    matbench_matched_frame_counts,
    matbench_md_metrics,
    matbench_pressure_GPa,
    matbench_pressure_metrics,
    matbench_rdf,
    matbench_rdf_error,
    matbench_vdos,
    matbench_vdos_error,
    matbench_velocities,
)
from dynamat.trajectory import Trajectory

GPA_PER_EV_A3 = 160.21766208  # ASE's CODATA-2014 value of 1 eV/Å³ in GPa


def test_matched_frame_counts():
    # dt 2 fs vs 0.5 fs: common grid 2 fs, strides (1, 4); spans 100 steps vs 299 // 4 = 74
    assert matbench_matched_frame_counts(101, 300, 2.0, 0.5) == (75, 297)
    # 0.3 = 3/10 and 0.2 = 1/5 in decimal: lcm(3, 1) / gcd(10, 5) = 3/5 fs, strides (2, 3)
    assert matbench_matched_frame_counts(10, 10, 0.3, 0.2) == (7, 10)
    assert matbench_matched_frame_counts(50, 40, 1.0, 1.0) == (40, 40)


def two_atoms(distances, box=4.0):
    """Two atoms a given x-distance apart in a cubic box, one frame per distance."""
    pos = np.zeros((len(distances), 2, 3))
    pos[:, 0] = [0.3, 1.1, 0.7]
    pos[:, 1] = pos[:, 0] + np.array(distances)[:, None] * [1.0, 0.0, 0.0]
    return pos, np.eye(3) * box


def test_rdf_error_by_hand():
    # L = 4 Å: r_max = 2 Å, 4 bins of 0.5 Å. Each frame holds one pair, so a frame's pair count
    # goes to the bin of its distance. Ideal counts: N²/2 · Σ_frames 1/V · shell
    # = 2 · 4/64 · shell = shell/8, hence g = 4 counts / (shell/8) = 32/shell.
    ref_pos, cell = two_atoms([1.3] * 4)
    pred_pos, _ = two_atoms([1.3, 1.3, 0.7, 1.3])
    shell = 4 * np.pi / 3 * np.diff(np.array([0.0, 0.5, 1.0, 1.5, 2.0]) ** 3)
    a = 32 / shell[2]  # every reference pair at 1.3 Å
    b = 32 / shell[1]
    r, g_ref = matbench_rdf(ref_pos, cell, n_bins=4)
    _, g_pred = matbench_rdf(pred_pos, cell, n_bins=4)
    np.testing.assert_allclose(r, [0.25, 0.75, 1.25, 1.75])
    np.testing.assert_allclose(g_ref, [0, 0, a, 0], rtol=1e-12)
    np.testing.assert_allclose(g_pred, [0, b / 4, 3 * a / 4, 0], rtol=1e-12)
    # trapezoid over the 4 bin centres (h = 0.5):
    #   ∫|g_ref − g_pred| = h·(b/4 + a/4),   ∫|g_ref − 1| = h·(1/2 + 1 + (a − 1) + 1/2) = h·(1 + a)
    expected = 100 * (a + b) / (4 * (1 + a))
    assert 50 < expected < 100
    assert matbench_rdf_error(r, g_ref, g_pred) == pytest.approx(expected, rel=1e-12)
    # an ideal-gas-like reference (zero denominator) is 100 even against itself
    assert matbench_rdf_error(r, np.ones(4), np.ones(4)) == 100.0


def bent_triatomic(angles_deg, arm=2.5):
    """Cu₃ with its apex at `angles_deg` per frame, drifting rigidly so every frame moves."""
    frames = []
    for t, th in enumerate(np.radians(angles_deg)):
        c = np.array([10.0, 10.0, 10.0]) + t * np.array([0.1, 0.05, 0.02])
        frames.append([c, c + arm * np.array([1.0, 0, 0]),
                       c + arm * np.array([np.cos(th), np.sin(th), 0])])
    return np.array(frames)


def test_adf_error_by_hand_through_the_entry_point():
    # Cu bonds reach 1.25 · 2 · 1.32 = 3.3 Å: the two 2.5 Å arms are bonds, the arm-to-arm
    # distance (≥ 3.8 Å) is not, so each frame has exactly one angle.
    cell = np.eye(3) * 20.0
    ref = {"positions": bent_triatomic([100.5] * 4), "cells": cell, "numbers": [29] * 3,
           "pbc": True, "dt_fs": 1.0, "stress": None}
    pred = dict(ref, positions=bent_triatomic([100.5, 100.5, 120.5, 100.5]))
    out = matbench_md_metrics(ref, pred)
    # W1(ref, pred): a quarter of the mass moves 20° → 5°. W1(ref, sin θ) of a point mass at
    # 100.5° against weights sin(c_k) on the 1° bin centres c_k = k + ½: E|c − 100.5|.
    c = np.arange(180) + 0.5
    w = np.sin(np.radians(c))
    w1_bg = np.sum(w * np.abs(c - 100.5)) / np.sum(w)
    assert out["adf_error"] == pytest.approx(100 * 5 / w1_bg, rel=1e-9)
    # no stress on either side → the three pressure keys are NaN
    for key in ("pressure_mae", "pressure_wasserstein", "pressure_error"):
        assert np.isnan(out[key])


def test_velocities_by_hand_in_a_skewed_cell():
    # true x(t) = 0, 0.5, 1.5, 3.0 Å along x; frames 2 and 3 are stored shifted by lattice
    # vectors, so only a minimum image recovers the steps 0.5, 1.0, 1.5 Å (all < λ₁/2 = 2 Å).
    cell = np.array([[4.0, 0.0, 0.0], [2.0, 3.5, 0.0], [0.0, 0.0, 5.0]])
    true = np.array([0.0, 0.5, 1.5, 3.0])[:, None] * [1.0, 0.0, 0.0]
    stored = true + np.array([[0, 0, 0], [0, 0, 0], [-2.0, -3.5, 0], [-2.0, 3.5, 0]])
    v = matbench_velocities(stored[:, None, :], cell, True, dt_fs=0.5)
    # numpy.gradient, h = 0.5 fs: ends (x1 − x0)/h, (x3 − x2)/h; inside (x_{t+1} − x_{t−1})/(2h)
    np.testing.assert_allclose(v[:, 0, 0], [1.0, 1.5, 2.5, 3.0], atol=1e-12)
    np.testing.assert_allclose(v[:, 0, 1:], 0.0, atol=1e-12)


def test_vdos_spectrum_by_hand():
    # v_x = +c, −c, +c, −c. Hann window (4 points) = 0, ¾, ¾, 0 → w·v = 0, −¾c, ¾c, 0.
    # rfft: X₀ = 0, X₁ = ¾c·i − ¾c (|X₁|² = 9c²/8), X₂ = ¾c + ¾c (|X₂|² = 9c²/4);
    # normalised by the component's total 27c²/8: 0, 1/3, 2/3. A second atom moving 10× faster
    # along y counts the same (per-component normalisation); the idle z components count 0.
    v = np.zeros((4, 2, 3))
    v[:, 0, 0] = [1.0, -1.0, 1.0, -1.0]
    v[:, 1, 1] = [10.0, -10.0, 10.0, -10.0]
    f, s = matbench_vdos(v, dt_fs=1.0)
    np.testing.assert_allclose(f, [0.0, 250.0, 500.0])  # rfftfreq(4, 1 fs = 1e-3 ps), THz
    np.testing.assert_allclose(s, [0.0, 2 / 3, 4 / 3], atol=1e-12)


def test_vdos_error_by_hand():
    # Same grid 0…4 THz. Trapezoid cell widths ½, 1, 1, 1, ½ give masses ref 0, 1, 2, 1, 0 and
    # pred 0, 0, 1, 2, ½. The cumulative reference mass 0, 1, 3, 4, 4 first reaches
    # 0.999 · 4 at index 3, so the grid is cut to 0…3 THz: ref ¼·(0, 1, 2, 1), pred ⅓·(0, 0, 1, 2).
    # W1 = Σ |F_ref − F_pred| · 1 THz over the gaps = 0 + ¼ + (¾ − ⅓) = ⅔ THz.
    # σ_ref: mean 2 THz, variance ¼·1 + ¼·1 = ½ THz². Error = 100 · (⅔)/√½.
    f = np.arange(5.0)
    err = matbench_vdos_error(f, [0, 1, 2, 1, 0], f, [0, 0, 1, 2, 1])
    assert err == pytest.approx(100 * (2 / 3) / np.sqrt(0.5), rel=1e-12)
    # without the band cut the stray pred mass at 4 THz would count
    assert matbench_vdos_error(f, [0, 1, 2, 1, 0], f, [0, 0, 1, 2, 1], band_frac=1.0) == 100.0


def stresses(p_GPa, seed=0):
    """ASE-sign Voigt stress (eV/Å³) with trace −3P and arbitrary deviatoric parts."""
    rng = np.random.default_rng(seed)
    p = np.asarray(p_GPa) / GPA_PER_EV_A3
    d = rng.normal(0, 0.01, (len(p), 2))
    return np.column_stack([-p + d[:, 0], -p + d[:, 1], -p - d[:, 0] - d[:, 1],
                            rng.normal(0, 0.01, (len(p), 3))])


def test_pressure_keys_by_hand():
    p_ref = [0.0, 1.02, 2.02, 8.0]
    p_pred = [0.0, 1.02, 3.02, 8.0]
    got_ref = matbench_pressure_GPa(stresses(p_ref, 1))
    got_pred = matbench_pressure_GPa(stresses(p_pred, 2))
    np.testing.assert_allclose(got_ref, p_ref, atol=1e-9)  # P = −tr σ / 3, compression > 0
    out = matbench_pressure_metrics(got_ref, got_pred)
    # means 2.76 and 3.01 GPa
    assert out["pressure_mae"] == pytest.approx(0.25, abs=1e-9)
    # W1: a quarter of the samples moves by 1 GPa
    assert out["pressure_wasserstein"] == pytest.approx(0.25, abs=1e-9)
    # 80 bins of 0.1 GPa over [0, 8]: ref in bins {0, 10, 20, 79}, pred {0, 10, 30, 79};
    # 50 · Σ|h_ref − h_pred|Δ = 50 · (¼ + ¼) = 25 %
    assert out["pressure_error"] == pytest.approx(25.0, abs=1e-9)


def test_energy_and_force_rmse_are_matbench_definitions():
    # per-atom energies (N = 2): pred 5, 6, 5.5 (mean 5.5), ref 0, 0.5, 1 (mean 0.5);
    # deviations −½, ½, 0 and −½, 0, ½ → differences 0, ½, −½ → RMSE √(1/6) eV/atom
    assert matbench_energy_rmse([10.0, 12.0, 11.0], [0.0, 1.0, 2.0], 2) == pytest.approx(
        np.sqrt(1 / 6), rel=1e-14
    )
    # one 3 eV/Å component error among 3·M·N = 6 → √(9/6) eV/Å
    f_ref = np.zeros((1, 2, 3))
    f_pred = f_ref.copy()
    f_pred[0, 1, 2] = 3.0
    assert matbench_force_rmse(f_pred, f_ref) == pytest.approx(np.sqrt(9 / 6), rel=1e-14)


def test_entry_point_time_matches_and_reuses_reference_r_max():
    # ref: 6 frames every 2 fs (10 fs); pred: 14 frames every 1 fs → strides (1, 2),
    # min(5, 13 // 2) = 5 common steps → 6 and 11 frames are used.
    rng = np.random.default_rng(4)
    base = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)  # 32 atoms, 7.2 Å cube
    ref_pos = base.positions + rng.normal(0, 0.08, (6, 32, 3))
    pred_pos = base.positions * 3.7 / 3.6 + rng.normal(0, 0.08, (14, 32, 3))
    ref = Trajectory(numbers=[29] * 32, positions=ref_pos, cells=np.eye(3) * 7.2, dt_fs=2.0,
                     stress=stresses(rng.normal(1, 0.1, 6)))
    # a larger predicted cell: its RDF must still stop at the reference's R_max = 3.6 Å
    pred = Trajectory(numbers=[29] * 32, positions=pred_pos, cells=np.eye(3) * 7.4, dt_fs=1.0,
                      stress=stresses(rng.normal(1.2, 0.1, 14)))
    out = matbench_md_metrics(ref, pred, n_rdf_bins=50)
    r, g_ref = matbench_rdf(ref_pos, ref.cells, n_bins=50)
    _, g_pred = matbench_rdf(pred_pos[:11], pred.cells[:11], n_bins=50, r_max=3.6)
    assert r[-1] + (r[1] - r[0]) / 2 == pytest.approx(3.6)
    assert out["rdf_error"] == pytest.approx(matbench_rdf_error(r, g_ref, g_pred), rel=1e-12)
    p = matbench_pressure_metrics(matbench_pressure_GPa(ref.stress),
                                  matbench_pressure_GPa(pred.stress[:11]))
    for key, value in p.items():
        assert out[key] == pytest.approx(value, rel=1e-12)
    spec_ref = matbench_vdos(matbench_velocities(ref_pos, ref.cells, True, 2.0), 2.0)
    spec_pred = matbench_vdos(matbench_velocities(pred_pos[:11], pred.cells[:11], True, 1.0), 1.0)
    assert out["vdos_error"] == pytest.approx(matbench_vdos_error(*spec_ref, *spec_pred), rel=1e-12)
    with pytest.raises(ValueError, match="too few frames"):
        matbench_md_metrics(ref[:3], pred)


def ase_angle_counts(frames, cell, numbers, tol=1.25):
    """Bond-angle counts by brute force over every triplet, with ASE's minimum image and angles.

    Independent of our neighbour code: pair vectors from ``ase.geometry.get_distances`` (its
    ``find_mic``), bonds within tol·(r_cov,i + r_cov,j) capped at half the shortest lattice
    vector (found by enumerating lattice vectors), angles from ``ase.geometry.get_angles``.
    """
    import itertools

    from ase.data import covalent_radii
    from ase.geometry import get_angles, get_distances

    n = np.array([m for m in itertools.product(range(-3, 4), repeat=3) if any(m)])
    half = np.linalg.norm(n @ cell, axis=1).min() / 2
    rc = covalent_radii[numbers]
    cut = np.minimum(tol * (rc[:, None] + rc[None, :]), half)
    counts = np.zeros(180)
    for pos in frames:
        vec, dist = get_distances(pos, cell=cell, pbc=True)
        for i in range(len(pos)):
            nb = [j for j in range(len(pos)) if j != i and dist[i, j] <= cut[i, j]]
            for j, k in itertools.combinations(nb, 2):
                counts += np.histogram(get_angles(vec[i, j][None], vec[i, k][None]),
                                       bins=np.linspace(0, 180, 181))[0]
    return counts


def test_adf_of_the_shared_neighbour_pass_equals_ase_brute_force():
    # a skewed cell, two species (Cu–Cu bonds capped at λ₁/2, Cu–O and O–O shorter), random
    # positions: the ADF the RDF's neighbour pass fills equals every-triplet enumeration
    rng = np.random.default_rng(7)
    cell = np.array([[6.4, 0.0, 0.0], [2.6, 5.9, 0.0], [1.3, 2.0, 6.2]])  # λ₁/2 = 3.2 Å
    numbers = np.array([29] * 10 + [8] * 6)
    sides = [rng.uniform(0, 1, (5, 16, 3)) @ cell for _ in range(2)]
    dens = []
    for pos in sides:
        counts = ase_angle_counts(pos, cell, numbers)
        assert counts.sum() > 200  # enough angles that a missed or extra bond would show
        dens.append(counts / counts.sum())
    side = {"positions": sides[0], "cells": np.broadcast_to(cell, (5, 3, 3)), "numbers": numbers,
            "pbc": np.ones(3, bool)}
    _, counter = _rdf_and_angles(side, 500)
    assert counter is not None  # the shared pass, not a pass of the ADF's own
    theta, adf = counter.distribution()
    np.testing.assert_allclose(adf, dens[0], rtol=0, atol=1e-12)
    ref, pred = ({"positions": p, "cells": cell, "numbers": numbers, "pbc": True, "dt_fs": 1.0,
                  "stress": None} for p in sides)
    out = matbench_md_metrics(ref, pred)
    assert out["adf_error"] == pytest.approx(matbench_adf_error(theta, *dens), rel=1e-12)
