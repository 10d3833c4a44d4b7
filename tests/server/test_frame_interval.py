"""The frame-interval check (equipartition on velocities) holds at coarse frames and flags wrong intervals.

An ASE Langevin run of EMT copper (1 fs steps, every step saved) is subsampled to 2, 5 and 20 fs
frame intervals and handed over with the right interval and with 1.5x and 5x wrong ones (both ways).
Central differences at 20 fs lose ~30 % of the kinetic energy; the corrected estimate must not.
Both users of the one check (dynamat.metrics.frame_interval) are exercised: ``reference import``
(a mid-trajectory window's periodogram) and ``score_md`` (the side's Hann-windowed VACF spectrum),
and they must agree on every verdict.
"""

import numpy as np
import pytest
from ase import units
from ase.data import atomic_masses
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from dynamat.metrics.frame_interval import (
    DT_TOLERANCE,
    check_frame_interval,
    equipartition_check,
    fd_correction,
)
from dynamat.metrics.vdos import FiniteDifferenceVelocities, kinetic_temperature, spectrum_from_acf, vacf_blocks

T_K = 300.0


@pytest.fixture(scope="module")
def copper_1fs():
    atoms = bulk("Cu", "fcc", a=3.61, cubic=True).repeat((2, 2, 2))
    atoms.calc = EMT()
    MaxwellBoltzmannDistribution(atoms, temperature_K=T_K, rng=np.random.default_rng(1))
    md = Langevin(atoms, 1.0 * units.fs, temperature_K=T_K, friction=0.01 / units.fs, rng=np.random.default_rng(2))
    md.run(500)  # equilibrate
    pos = []
    md.attach(lambda: pos.append(atoms.get_positions(wrap=False).copy()), interval=1)
    md.run(4000)
    return atoms, np.array(pos)


def _check(how, atoms, pos, every, claimed_dt):
    p = pos[::every]
    cells = np.repeat(atoms.cell.array[None], len(p), 0)
    if how == "import":
        return check_frame_interval(p, cells, [True] * 3, atoms.numbers, claimed_dt, T_K)
    # what score_md's diagnostics step does: the correction from the side's own VACF spectrum
    masses = atomic_masses[atoms.numbers]
    v = FiniteDifferenceVelocities(p, claimed_dt, cells, np.array([True] * 3))
    acf = vacf_blocks(v, masses, claimed_dt, max_lag=len(p) // 2).acf()
    corr = fd_correction(*spectrum_from_acf(acf, claimed_dt), claimed_dt)
    return equipartition_check(kinetic_temperature(v, masses), claimed_dt, T_K, corr)


@pytest.mark.parametrize("how", ["import", "score"])
@pytest.mark.parametrize("every", [2, 5, 20])
def test_right_interval_passes_and_reads_the_temperature(copper_1fs, every, how):
    atoms, pos = copper_1fs
    check = _check(how, atoms, pos, every, float(every))
    assert check.ok is True
    # the filter correction restores equipartition: 32 atoms over 4 ps, Langevin at 300 K
    assert check.temperature_K == pytest.approx(T_K, rel=0.12)


@pytest.mark.parametrize("how", ["import", "score"])
@pytest.mark.parametrize("every", [2, 5, 20])
@pytest.mark.parametrize("factor", [1.5, 1 / 1.5, 5.0, 0.2])
def test_wrong_interval_is_flagged(copper_1fs, every, factor, how):
    atoms, pos = copper_1fs
    check = _check(how, atoms, pos, every, every * factor)
    assert check.ok is False, check
    # T scales as 1/dt²: the ratio says by how much
    assert check.ratio == pytest.approx(1 / factor**2, rel=0.15)


def test_uncorrected_finite_differences_would_fail_at_20_fs(copper_1fs):
    """The reason for the correction: raw central differences at 20 fs read ~30 % low, outside the band."""
    atoms, pos = copper_1fs
    check = _check("score", atoms, pos, 20, 20.0)
    uncorrected = equipartition_check(np.full(8, check.raw_K), 20.0, T_K)
    assert check.raw_K / T_K < 1 / (1 + DT_TOLERANCE) ** 2 and uncorrected.ok is False
    assert check.fd_correction > 1.25 and check.ok


def test_a_mode_near_the_estimator_zero_is_restored_at_most_fourfold():
    """The one filter floor: a spectrum all at h(ν) = 0.01 is restored 4×, not 100× (noise there)."""
    from dynamat.metrics.vdos import fd_transfer

    dt = 10.0
    nu = np.linspace(0, 50, 501)  # THz; sinc² has its first zero at 1/(2 dt) = 50 THz
    s = np.where(np.abs(fd_transfer(nu, dt) - 0.01) < 0.005, 1.0, 0.0)
    assert s.sum() > 0
    assert fd_correction(nu, s, dt) == pytest.approx(4.0)
    assert fd_correction(nu, np.where(nu < 5, 1.0, 0.0), dt) == pytest.approx(
        np.trapezoid(np.where(nu < 5, 1 / fd_transfer(nu, dt), 0), nu) / np.trapezoid(np.where(nu < 5, 1.0, 0), nu))
