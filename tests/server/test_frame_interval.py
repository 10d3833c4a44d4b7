"""The frame-interval check (equipartition on velocities) holds at coarse frames and flags wrong intervals.

An ASE Langevin run of EMT copper (1 fs steps, every step saved) is subsampled to 2, 5 and 20 fs
frame intervals and handed over with the right interval and with 1.5x and 5x wrong ones (both ways).
Central differences at 20 fs lose ~30 % of the kinetic energy; the corrected estimate must not.
"""

import numpy as np
import pytest
from ase import units
from ase.build import bulk
from ase.calculators.emt import EMT
from ase.md.langevin import Langevin
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

from dynamat.scoring.core import SUSPECT_T_RATIO, frame_interval_check
from dynamat.trajectory import Trajectory

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


def _traj(atoms, pos, every, claimed_dt):
    p = pos[::every]
    return Trajectory(numbers=atoms.numbers, positions=p, cells=np.repeat(atoms.cell.array[None], len(p), 0),
                      dt_fs=claimed_dt, temperature_K=T_K)


@pytest.mark.parametrize("every", [2, 5, 20])
def test_right_interval_passes_and_reads_the_temperature(copper_1fs, every):
    atoms, pos = copper_1fs
    check = frame_interval_check(_traj(atoms, pos, every, float(every)))
    assert check["suspect"] is False
    # the filter correction restores equipartition: 32 atoms over 4 ps, Langevin at 300 K
    assert check["temperature_K"] == pytest.approx(T_K, rel=0.12)


@pytest.mark.parametrize("every", [2, 5, 20])
@pytest.mark.parametrize("factor", [1.5, 1 / 1.5, 5.0, 0.2])
def test_wrong_interval_is_flagged(copper_1fs, every, factor):
    atoms, pos = copper_1fs
    check = frame_interval_check(_traj(atoms, pos, every, every * factor))
    assert check["suspect"] is True, check
    # T scales as 1/dt²: the ratio says by how much
    assert check["ratio"] == pytest.approx(1 / factor**2, rel=0.15)


def test_uncorrected_finite_differences_would_fail_at_20_fs(copper_1fs):
    """The reason for the correction: raw central differences at 20 fs read ~30 % low, outside the band."""
    from ase.data import atomic_masses

    from dynamat.metrics.vdos import FiniteDifferenceVelocities, kinetic_temperature

    atoms, pos = copper_1fs
    t = _traj(atoms, pos, 20, 20.0)
    raw = kinetic_temperature(FiniteDifferenceVelocities(t.positions, 20.0, t.cells, t.pbc), atomic_masses[t.numbers]).mean()
    assert raw / T_K < SUSPECT_T_RATIO[0]
