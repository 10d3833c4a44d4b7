"""Unit conversions used by the server wing (CODATA values as in ASE)."""

from ase import units as _u

#: 1 eV/Å³ in GPa.
EV_PER_A3_TO_GPA = 1.0 / _u.GPa
#: Boltzmann constant in eV/K.
KB_EV_PER_K = _u.kB
#: ASE's time unit in fs (ASE velocities are Å per this unit).
ASE_TIME_FS = 1.0 / _u.fs
#: 1 amu·Å²/fs² in eV (kinetic energy from masses in amu and velocities in Å/fs).
AMU_A2_PER_FS2_TO_EV = _u._amu * 1e-20 / 1e-30 / _u._e
