"""Error metrics of the Dyna-Mat-v1.0 paper (Methods IV.B, Eqs. 1–12) as pure array functions.

Paper metrics: :func:`energy_rmse_per_atom` (Eq. 1), :func:`force_rmse` (Eq. 2), :func:`rdf` and
:func:`rdf_error` (Eqs. 3–4), :func:`pressure_GPa`, :func:`pressure_mae`,
:func:`pressure_hist_error` (Eqs. 5–9), :func:`vdos` and :func:`vdos_error` (Eq. 10),
:func:`e_rpv`, :func:`l_rpv` and :func:`combined_scores` (Eqs. 11–12, with propagated
uncertainties). The frame-interval check by equipartition is :func:`check_frame_interval`
(:mod:`dynamat.metrics.frame_interval`). Extras that are *not* the paper's are named so:
``energy_fluctuation_rmse_per_atom``, ``force_component_rmse``, ``vdos_w1_error``,
``pressure_wasserstein_GPa``, ``bond_angle_distribution_error``. Matbench-discovery's own
per-system metrics, under its key names, are in :mod:`dynamat.metrics.matbench`
(:func:`matbench_md_metrics`). Modules: one per observable (``rdf``, ``adf``, ``vdos``,
``pressure``, ``energy_force``) over the shared minimum-image kernel ``neighbours``.
"""

from dynamat.metrics.adf import bond_angle_distribution, bond_angle_distribution_error
from dynamat.metrics.combined import combined_scores, e_rpv, l_rpv
from dynamat.metrics.energy_force import (
    energy_fluctuation_rmse_per_atom,
    energy_rmse_per_atom,
    force_component_rmse,
    force_rmse,
    reference_to_isolated_atoms,
)
from dynamat.metrics.frame_interval import check_frame_interval, equipartition_check, fd_correction
from dynamat.metrics.matbench import (
    MATBENCH_KEYS,
    matbench_energy_rmse,
    matbench_force_rmse,
    matbench_matched_frame_counts,
    matbench_md_metrics,
)
from dynamat.metrics.neighbours import min_image_radius, minimum_image, pair_vectors
from dynamat.metrics.pressure import (
    pressure_GPa,
    pressure_hist_edges,
    pressure_hist_error,
    pressure_hist_error_sensitivity,
    pressure_histograms,
    pressure_mae,
    pressure_md_GPa,
    pressure_wasserstein_GPa,
)
from dynamat.metrics.rdf import (
    RDFHistogram,
    all_bead_rdf,
    all_bead_rdf_histogram,
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
    "MATBENCH_KEYS",
    "FiniteDifferenceVelocities",
    "RDFHistogram",
    "VACFBlocks",
    "all_bead_rdf",
    "all_bead_rdf_histogram",
    "block_bootstrap_mean_se",
    "block_sizes",
    "bond_angle_distribution",
    "bond_angle_distribution_error",
    "bootstrap_weights",
    "choose_block_length",
    "check_frame_interval",
    "combined_scores",
    "e_rpv",
    "equipartition_check",
    "fd_correction",
    "energy_fluctuation_rmse_per_atom",
    "energy_rmse_per_atom",
    "fd_transfer",
    "force_component_rmse",
    "force_rmse",
    "integrated_autocorrelation_time",
    "kinetic_temperature",
    "l_rpv",
    "matbench_energy_rmse",
    "matbench_force_rmse",
    "matbench_matched_frame_counts",
    "matbench_md_metrics",
    "min_image_radius",
    "minimum_image",
    "pair_vectors",
    "pressure_GPa",
    "pressure_hist_edges",
    "pressure_hist_error",
    "pressure_hist_error_sensitivity",
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
