"""VDOS (paper Eq. 10): estimator, finite differences, equipartition, EMT Cu vs phonopy."""

import numpy as np
import pytest
from scipy.signal import find_peaks

from dynamat.metrics.vdos import (
    FiniteDifferenceVelocities,
    fd_transfer,
    kinetic_temperature,
    spectrum_from_acf,
    vacf_blocks,
    vdos,
    vdos_error,
    vdos_w1_error,
    velocities_from_positions,
)
from conftest import einstein_oscillations


def oscillator(nu_thz, dt_fs, n_frames, amplitude=0.1, phase=0.3):
    """One atom moving along x as x = A cos(2πνt + φ): positions (Å) and exact velocities (Å/fs)."""
    t = np.arange(n_frames) * dt_fs
    w = 2 * np.pi * nu_thz * 1e-3  # rad/fs
    pos = np.zeros((n_frames, 1, 3))
    vel = np.zeros((n_frames, 1, 3))
    pos[:, 0, 0] = amplitude * np.cos(w * t + phase)
    vel[:, 0, 0] = -amplitude * w * np.sin(w * t + phase)
    return pos, vel


def einstein_crystal(n_atoms, n_frames, dt_fs, temperature_k, seed=0, mass=63.546):
    """Independent 3D oscillators at random sites, each holding exactly k_B T of energy (so T_kin is exact)."""
    rng = np.random.default_rng(seed)
    disp, vel = einstein_oscillations(rng, n_atoms, mass, n_frames, dt_fs, temperature_k)
    sites = rng.uniform(0, 10, size=(n_atoms, 3))
    return sites + disp, vel, np.full(n_atoms, mass)


def test_single_harmonic_oscillator_peaks_at_its_frequency():
    nu0 = 7.3
    pos, vel = oscillator(nu0, dt_fs=1.0, n_frames=4000)
    nu, spec = vdos(vel, [63.5], 1.0, remove_com=False)  # one particle in an external field: no drift to remove
    assert nu[1] - nu[0] == pytest.approx(1e3 / (2 * 2000 * 1.0))  # grid 1/(2 L dt)
    assert nu[-1] == pytest.approx(500.0)  # Nyquist of 1 fs, in THz
    peak = nu[np.argmax(spec)]
    assert abs(peak - nu0) <= 0.5 * (nu[1] - nu[0])
    # essentially all weight within ±1 THz of the line (Hann main lobe, no leakage)
    band = np.abs(nu - nu0) < 1.0
    assert np.trapezoid(spec[band], nu[band]) / np.trapezoid(spec, nu) > 0.99
    # finite differences: same peak, power reduced by the sinc² transfer function
    nu_fd, spec_fd = vdos(velocities_from_positions(pos, 1.0), [63.5], 1.0, remove_com=False)
    assert nu_fd[np.argmax(spec_fd)] == peak
    ratio = spec_fd.max() / spec.max()
    assert ratio == pytest.approx(float(fd_transfer(nu0, 1.0)), rel=2e-3)


def test_spectrum_integrates_to_c0_and_is_real_even_transform():
    rng = np.random.default_rng(0)
    acf = np.cos(np.linspace(0, 20, 101)) * np.exp(-np.linspace(0, 3, 101))
    nu, spec = spectrum_from_acf(acf, 2.0)
    assert np.trapezoid(spec, nu * 1e-3) == pytest.approx(acf[0], rel=1e-12)
    # brute-force cosine transform of the windowed, even-extended ACF
    lag = np.arange(101)
    w = 0.5 * (1 + np.cos(np.pi * lag / 100))
    t = lag * 2.0
    direct = 2 * 2.0 * np.array(
        [acf[0] + 2 * np.sum((acf * w)[1:] * np.cos(2 * np.pi * f * 1e-3 * t[1:])) for f in nu]
    )
    np.testing.assert_allclose(spec, direct, atol=1e-10)
    v = rng.normal(size=(300, 4, 3))
    m = rng.uniform(1, 50, 4)
    nu, spec = vdos(v, m, 1.5, max_lag=120, remove_com=False)
    c0 = np.mean(np.einsum("n,tnk->t", m, v * v))
    assert np.trapezoid(spec, nu * 1e-3) == pytest.approx(c0, rel=1e-10)


@pytest.mark.parametrize("block_length", [None, 50, 37, 7, 1])
def test_vacf_blocks_equal_direct_time_origin_average(block_length):
    rng = np.random.default_rng(1)
    v = rng.normal(size=(203, 5, 3))
    m = rng.uniform(1, 10, 5)
    lag = 150
    direct = np.array([np.einsum("n,tnk,tnk->", m, v[: 203 - t], v[t:]) for t in range(lag + 1)])
    blocks = vacf_blocks(v, m, 1.0, max_lag=lag, block_length=block_length, remove_com=False)
    np.testing.assert_allclose(blocks.acf_sum.sum(0), direct, rtol=1e-10, atol=1e-9)
    np.testing.assert_allclose(blocks.acf(), direct / (203 - np.arange(lag + 1)), rtol=1e-10)
    b = min(1, blocks.acf_sum.shape[0] - 1)
    bl = blocks.block_length
    origins = range(b * bl, min(b * bl + bl, 203))
    own = np.array([
        sum(np.einsum("n,nk,nk->", m, v[t], v[t + tau]) for t in origins if t + tau < 203)
        for tau in range(lag + 1)
    ])
    np.testing.assert_allclose(blocks.acf_sum[b], own, atol=1e-9)


def test_a_rigid_drift_is_no_vibration(monkeypatch):
    """Velocities w whose centre of mass is at rest, plus a constant drift c (a reference whose initial draw
    was not made stationary): with the centre-of-mass velocity removed (the default) the VACF is w's exactly,
    in every block; kept, the drift's Σm c² is a constant in the VACF, a zero-frequency peak whose share of the
    normalised spectrum is the drift's share of the kinetic energy, all of it charged to E_VDOS."""
    rng = np.random.default_rng(4)
    m = rng.uniform(1, 60, 6)
    w = rng.normal(size=(240, 6, 3))
    w -= np.einsum("n,tnk->tk", m / m.sum(), w)[:, None, :]
    c = np.array([0.3, -0.2, 0.5])
    drifting = w + c
    kept = vacf_blocks(drifting, m, 1.0, max_lag=100, block_length=40, remove_com=False)
    own = vacf_blocks(w, m, 1.0, max_lag=100, block_length=40, remove_com=False)
    removed = vacf_blocks(drifting, m, 1.0, max_lag=100, block_length=40)
    np.testing.assert_allclose(removed.acf_sum, own.acf_sum, rtol=1e-10, atol=1e-9)
    import sys

    monkeypatch.setattr(sys.modules["dynamat.metrics.vdos"], "_CHUNK_BYTES", 240 * 3 * 8 * 4)  # 4 atoms a chunk of 6:
    chunked = vacf_blocks(drifting, m, 1.0, max_lag=100, block_length=40)  # the centre of mass in its own pass
    np.testing.assert_allclose(chunked.acf_sum, own.acf_sum, rtol=1e-10, atol=1e-9)
    monkeypatch.undo()
    np.testing.assert_allclose(kept.acf() - own.acf(), m.sum() * c @ c, rtol=1e-9)  # cross terms vanish
    nu, with_drift = vdos(drifting, m, 1.0, max_lag=100, remove_com=False)
    _, without = vdos(drifting, m, 1.0, max_lag=100)
    share = m.sum() * c @ c / kept.acf()[0]  # the peak's area over the spectrum's, C(0)
    # f_kept = (1 − share) f + share δ-like: E = share where the two do not overlap, less the white spectrum's
    # weight under the zero-frequency peak (about 1 bin of 101)
    assert 100 * share * 0.97 < vdos_error(nu, with_drift, nu, without) <= 100 * share


def test_finite_difference_velocities_unwrap_and_stream():
    rng = np.random.default_rng(2)
    pos = np.cumsum(rng.normal(scale=0.5, size=(60, 4, 3)), axis=0)  # crosses cell faces
    cell = np.array([[7.0, 0, 0], [1.5, 8.0, 0], [0.5, 0.7, 9.0]])
    frac = pos @ np.linalg.inv(cell)
    wrapped = (frac - np.floor(frac)) @ cell
    ref = np.gradient(pos, 2.0, axis=0)
    np.testing.assert_allclose(velocities_from_positions(pos, 2.0), ref, atol=1e-14)
    np.testing.assert_allclose(velocities_from_positions(wrapped, 2.0, cells=cell), ref, atol=1e-12)
    lazy = FiniteDifferenceVelocities(wrapped, 2.0, cells=cell)
    np.testing.assert_allclose(lazy[10:20, 1:3], ref[10:20, 1:3], atol=1e-12)
    np.testing.assert_allclose(lazy[0:1], ref[0:1], atol=1e-12)
    np.testing.assert_allclose(lazy[59:60], ref[59:], atol=1e-12)
    # wrapped positions without the cell would produce jumps
    assert np.abs(velocities_from_positions(wrapped, 2.0) - ref).max() > 1.0


def test_finite_difference_velocities_under_a_changing_cell_are_the_peculiar_ones():
    """A barostat's cell h(t) = h0 (1 + α t) carries every atom along (x = h s): dx/dt = h ds/dt + α h0 s. The
    velocity equipartition and the thermostat see is the first term. With fractional coordinates drifting
    at u (per fs) it is exactly h(t) u, which the central differences of fractional steps times the mid
    cell give for a linear cell change, wrapped or not; Cartesian differences add the stretching term."""
    rng = np.random.default_rng(4)
    h0 = np.array([[7.0, 0, 0], [1.5, 8.0, 0], [0.5, 0.7, 9.0]])
    alpha, dt = 2e-4, 5.0  # 0.1 % per frame: a fast breathing cell
    t = np.arange(40) * dt
    cells = h0[None] * (1 + alpha * t)[:, None, None]
    s0, u = rng.uniform(0, 1, size=(6, 3)), rng.normal(scale=4e-4, size=(6, 3))
    frac = s0[None] + u[None] * t[:, None, None]
    pos = np.einsum("fnk,fkl->fnl", frac, cells)
    wrapped = np.einsum("fnk,fkl->fnl", frac - np.floor(frac), cells)
    exact = np.einsum("nk,fkl->fnl", u, cells)  # h(t) u
    for x in (pos, wrapped):
        v = FiniteDifferenceVelocities(x, dt, cells=cells)
        np.testing.assert_allclose(v[1:-1], exact[1:-1], rtol=0, atol=1e-12)
        np.testing.assert_allclose(v[5:9, 2:4], exact[5:9, 2:4], rtol=0, atol=1e-12)  # streamed slices agree
    stretch = np.abs(np.gradient(pos, dt, axis=0)[1:-1] - exact[1:-1]).max()
    assert stretch > 100 * np.abs(exact).max() * alpha * dt  # the Cartesian differences carry α h0 s
    fixed = FiniteDifferenceVelocities(wrapped[:, :, :], dt, cells=h0)  # one cell: the unchanged path
    assert not fixed.variable_cell and FiniteDifferenceVelocities(pos, dt, cells=cells).variable_cell


def test_equipartition_detects_a_wrong_frame_interval():
    pos, vel, m = einstein_crystal(64, 2000, 2.0, 300.0)
    t_exact = kinetic_temperature(vel, m, remove_com=False).mean()
    assert t_exact == pytest.approx(300.0, rel=0.01)
    t_fd = kinetic_temperature(velocities_from_positions(pos, 2.0), m, remove_com=False).mean()
    assert t_fd == pytest.approx(300.0, rel=0.02)  # sinc² at ≤ 7 THz, 2 fs: < 1 % low
    t_wrong = kinetic_temperature(velocities_from_positions(pos, 4.0), m, remove_com=False).mean()
    assert t_wrong / t_fd == pytest.approx(0.25, rel=1e-6)  # T ∝ 1/dt²
    # removing the COM motion uses 3N − 3 degrees of freedom
    t_com = kinetic_temperature(vel, m).mean()
    assert t_com == pytest.approx(300.0, rel=0.03)


def test_vdos_error_identical_disjoint_and_resampled():
    _pos, vel, m = einstein_crystal(16, 3000, 1.0, 100.0, seed=3)
    nu, s = vdos(vel, m, 1.0)
    assert vdos_error(nu, s, nu, s) == 0.0
    assert vdos_error(nu, s, nu, 3.0 * s) == pytest.approx(0.0, abs=1e-12)  # area-normalised
    # the same motion saved every 2 fs over the same duration: a different grid and Nyquist
    nu2, s2 = vdos(vel[::2], m, 2.0)
    assert nu2[-1] < nu[-1]
    assert vdos_error(nu, s, nu2, s2) < 5.0
    # two narrow lines far apart do not overlap
    _, v_a = oscillator(3.0, 1.0, 3000)
    _, v_b = oscillator(12.0, 1.0, 3000)
    na, sa = vdos(v_a, [1.0], 1.0, remove_com=False)
    nb, sb = vdos(v_b, [1.0], 1.0, remove_com=False)
    assert vdos_error(na, sa, nb, sb) > 99.0
    with pytest.raises(ValueError, match="increasing"):
        vdos_error(nu[::-1], s, nu, s)


def test_vdos_w1_error_grows_with_shift_where_l1_saturates():
    nu = np.linspace(0, 40, 4001)

    def bands(shift):  # two narrow bands at 5 and 15 THz, both shifted
        return np.exp(-((nu - 5 - shift) ** 2) / 0.1) + np.exp(-((nu - 15 - shift) ** 2) / 0.1)

    ref = bands(0.0)
    shifts = (0.25, 1.0, 2.0, 3.0)
    l1 = [vdos_error(nu, ref, nu, bands(d)) for d in shifts]
    w1 = [vdos_w1_error(nu, ref, nu, bands(d), band_frac=1.0) for d in shifts]
    assert vdos_w1_error(nu, ref, nu, ref) == 0.0
    assert l1[2] == pytest.approx(100.0, abs=0.1) and l1[3] == pytest.approx(100.0, abs=0.1)
    sigma = 5.0  # standard deviation of the reference: two equal lines 10 THz apart
    np.testing.assert_allclose(w1, 100 * np.array(shifts) / sigma, rtol=0.01)


def test_input_validation():
    with pytest.raises(ValueError, match=r"\(M, N, 3\)"):
        vdos(np.zeros((10, 3)), [1.0], 1.0)
    with pytest.raises(ValueError, match="dt_fs"):
        vdos(np.zeros((10, 1, 3)), [1.0], 0.0)
    with pytest.raises(ValueError, match="max_lag"):
        vdos(np.zeros((10, 1, 3)), [1.0], 1.0, max_lag=10, remove_com=False)
    with pytest.raises(ValueError, match="at least 2 atoms to remove the centre-of-mass"):
        vdos(np.zeros((10, 1, 3)), [1.0], 1.0)
    with pytest.raises(ValueError, match="masses"):
        vdos(np.zeros((10, 2, 3)), [1.0], 1.0)


# ---------------------------------------------------------------------------------------------


def _refine(nu, spec, idx):
    """Sub-grid peak positions by a parabola through each maximum and its neighbours."""
    out = []
    for p in idx:
        y0, y1, y2 = spec[p - 1 : p + 2]
        out.append(nu[p] + 0.5 * (y0 - y2) / (y0 - 2 * y1 + y2) * (nu[1] - nu[0]))
    return np.array(out)


@pytest.mark.slow
def test_emt_copper_vdos_matches_phonopy_gamma_modes_of_the_same_cell():
    from ase import units
    from ase.build import bulk
    from ase.calculators.emt import EMT
    from ase.md.velocitydistribution import Stationary, thermalize_momenta
    from ase.md.verlet import VelocityVerlet
    from phonopy import Phonopy
    from phonopy.structure.atoms import PhonopyAtoms

    atoms = bulk("Cu", "fcc", a=3.5898, cubic=True).repeat(3)  # EMT's zero-stress lattice
    # harmonic modes of this very 108-atom cell: phonopy at Gamma with primitive = the cell
    unit = PhonopyAtoms(symbols=atoms.get_chemical_symbols(), cell=atoms.cell[:],
                        scaled_positions=atoms.get_scaled_positions())
    phonon = Phonopy(unit, supercell_matrix=np.eye(3, dtype=int), primitive_matrix="P")
    phonon.generate_displacements(distance=0.01)
    forces = []
    for sc in phonon.supercells_with_displacements:
        a = atoms.copy()
        a.positions = sc.positions
        a.calc = EMT()
        forces.append(a.get_forces())
    phonon.forces = forces
    phonon.produce_force_constants()
    freqs = phonon.run_qpoints([[0, 0, 0]]).frequencies[0]  # THz
    assert len(freqs) == 324
    optical = freqs[freqs > 0.5]  # drop the three acoustic zero modes

    # ~30 K NVE run: 3 ps at 2 fs, velocities saved every 4 fs
    md_atoms = atoms.copy()
    md_atoms.calc = EMT()
    thermalize_momenta(md_atoms, temperature_K=60, rng=np.random.default_rng(0))
    Stationary(md_atoms)
    saved = []
    dyn = VelocityVerlet(md_atoms, timestep=2 * units.fs)
    dyn.attach(lambda: saved.append(md_atoms.get_velocities() * units.fs), interval=2)
    dyn.run(1500)
    vel = np.array(saved)  # Å/fs
    masses = md_atoms.get_masses()
    assert kinetic_temperature(vel, masses).mean() == pytest.approx(30, rel=0.3)

    dt = 4.0
    nu, spec = vdos(vel, masses, dt)
    # what harmonic equipartition predicts through the same estimator: every Gamma mode carries
    # k_B T, VACF ∝ Σ_k cos(2π ν_k τ), same lag window
    lag = len(vel) // 2
    tau_ps = np.arange(lag + 1) * dt * 1e-3
    nu_h, spec_h = spectrum_from_acf(np.cos(2 * np.pi * np.outer(tau_ps, optical)).sum(1), dt)

    peaks_md = _refine(nu, spec, find_peaks(spec, prominence=0.1 * spec.max())[0])
    peaks_h = _refine(nu_h, spec_h, find_peaks(spec_h, prominence=0.1 * spec_h.max())[0])
    assert len(peaks_h) >= 3 and len(peaks_md) == len(peaks_h)
    np.testing.assert_allclose(peaks_md, peaks_h, rtol=0.03)
    # every main MD peak sits within 3 % of a phonopy Gamma frequency of the cell
    for p in peaks_md:
        assert np.min(np.abs(optical - p)) / p < 0.03

    # one frequency scale for the whole spectrum: within 1 % of 1
    scales = np.linspace(0.9, 1.1, 401)
    err = [vdos_error(nu, spec, nu_h * s, spec_h) for s in scales]
    assert scales[int(np.argmin(err))] == pytest.approx(1.0, abs=0.01)
    # a 10 % wrong frame interval is caught by the same comparison
    nu_bad, spec_bad = vdos(vel, masses, dt * 1.1)
    bad = [vdos_error(nu_bad, spec_bad, nu_h * s, spec_h) for s in scales]
    assert abs(scales[int(np.argmin(bad))] - 1.0) > 0.05
