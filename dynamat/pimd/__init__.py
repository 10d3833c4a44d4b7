"""Path-integral MD: quantum observables and bead convergence (runs go through :mod:`dynamat.runner`)."""

from dynamat.io.run_folder import (
    bead_files,
    read_bead_positions,
    read_bead_trajectory,
    read_centroid_trajectory,
    read_run_trajectory,
)
from dynamat.pimd.convergence import BeadConvergence, bead_convergence
from dynamat.pimd.observables import (
    KineticEnergy,
    quantum_classical_differences,
    quantum_kinetic_energy,
)

__all__ = [
    "BeadConvergence",
    "KineticEnergy",
    "bead_convergence",
    "bead_files",
    "quantum_classical_differences",
    "quantum_kinetic_energy",
    "read_bead_positions",
    "read_bead_trajectory",
    "read_centroid_trajectory",
    "read_run_trajectory",
]
