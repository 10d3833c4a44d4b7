"""Error metrics of the Dyna-Mat-v1.0 paper (Methods IV.B, Eqs. 1–12) as pure array functions.

Paper metrics: :func:`energy_rmse_per_atom` (Eq. 1), :func:`force_rmse` (Eq. 2), :func:`rdf` and
:func:`rdf_error` (Eqs. 3–4), :func:`pressure_GPa`, :func:`pressure_mae`,
:func:`pressure_hist_error` (Eqs. 5–9), :func:`vdos` and :func:`vdos_error` (Eq. 10),
:func:`e_rpv` and :func:`l_rpv` (Eqs. 11–12). Extras that are *not* the paper's are named so:
``energy_fluctuation_rmse_per_atom``, ``force_component_rmse``, ``vdos_w1_error``,
``pressure_wasserstein_GPa``, ``bond_angle_distribution_error``.
"""

from dynamat.metrics.combined import e_rpv, l_rpv
from dynamat.metrics.energy_force import (
    energy_fluctuation_rmse_per_atom,
    energy_rmse_per_atom,
    force_component_rmse,
    force_rmse,
    reference_to_isolated_atoms,
)
from dynamat.metrics.pressure import (
    pressure_GPa,
    pressure_hist_edges,
    pressure_hist_error,
    pressure_histograms,
    pressure_mae,
    pressure_md_GPa,
    pressure_wasserstein_GPa,
)
from dynamat.metrics.rdf import (
    RDFHistogram,
    bond_angle_distribution,
    bond_angle_distribution_error,
    rdf,
    rdf_error,
    rdf_from_histogram,
    rdf_histogram,
    rdf_r_max,
)
from dynamat.metrics.uncertainty import (
    block_bootstrap_mean_se,
    block_sizes,
    bootstrap_weights,
    choose_block_length,
    integrated_autocorrelation_time,
    standard_error,
)
from dynamat.metrics.vdos import (
    FiniteDifferenceVelocities,
    VACFBlocks,
    fd_transfer,
    kinetic_temperature,
    spectrum_from_acf,
    vacf_blocks,
    vdos,
    vdos_error,
    vdos_w1_error,
    velocities_from_positions,
)

__all__ = [
    "FiniteDifferenceVelocities",
    "RDFHistogram",
    "VACFBlocks",
    "block_bootstrap_mean_se",
    "block_sizes",
    "bond_angle_distribution",
    "bond_angle_distribution_error",
    "bootstrap_weights",
    "choose_block_length",
    "e_rpv",
    "energy_fluctuation_rmse_per_atom",
    "energy_rmse_per_atom",
    "fd_transfer",
    "force_component_rmse",
    "force_rmse",
    "integrated_autocorrelation_time",
    "kinetic_temperature",
    "l_rpv",
    "pressure_GPa",
    "pressure_hist_edges",
    "pressure_hist_error",
    "pressure_histograms",
    "pressure_mae",
    "pressure_md_GPa",
    "pressure_wasserstein_GPa",
    "rdf",
    "rdf_error",
    "rdf_from_histogram",
    "rdf_histogram",
    "rdf_r_max",
    "reference_to_isolated_atoms",
    "spectrum_from_acf",
    "standard_error",
    "vacf_blocks",
    "vdos",
    "vdos_error",
    "vdos_w1_error",
    "velocities_from_positions",
]
