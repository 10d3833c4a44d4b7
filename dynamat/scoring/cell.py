"""score_md's cell step for variable-cell (NPT) runs: volume, density and lattice errors
(:mod:`dynamat.metrics.volume`), with frame weights for the block bootstrap and the reference-halves floor.

Fixed-cell (NVT) scores never run this step, so their keys and numbers stay what they were.
"""

from __future__ import annotations

import numpy as np

from dynamat.metrics.pressure import weighted_hist_error
from dynamat.metrics.volume import (
    density_g_cm3,
    lattice_errors,
    lattice_parameters,
    mean_volume_error_pct,
    volume_hist_edges,
    volume_hist_error_pct,
    volumes_A3,
)

#: the cell errors that carry ``_unc`` (bootstrap) and ``_floor`` (reference halves), as the paper's observables
CELL_ERROR_KEYS = ("volume_error_pct", "volume_hist_error_pct", "lattice_length_error_pct", "lattice_angle_error_deg")


def _weighted_errors(v, lat, w, edges) -> dict:
    """The cell errors with per-frame weights ``w`` (side -> (M,) array; a bootstrap replicate)."""
    mean_v = {k: np.average(v[k], weights=w[k]) for k in v}
    mean_l = {k: np.average(lat[k], axis=0, weights=w[k]) for k in v}
    out = {"volume_error_pct": 100.0 * abs(mean_v["mlip"] - mean_v["ref"]) / mean_v["ref"],
           "lattice_length_error_pct": float(np.max(100.0 * np.abs(mean_l["mlip"][:3] - mean_l["ref"][:3])
                                                    / mean_l["ref"][:3])),
           "lattice_angle_error_deg": float(np.max(np.abs(mean_l["mlip"][3:] - mean_l["ref"][3:])))}
    if edges is not None:
        out["volume_hist_error_pct"] = weighted_hist_error(v["ref"], w["ref"], v["mlip"], w["mlip"], edges)
    return out


def _fluctuates(v: np.ndarray) -> bool:
    """A volume sample with a spread beyond the written cell's round-off (i-PI writes 8 decimals)."""
    return float(np.ptp(v)) > 1e-6 * float(np.mean(v))


def cell_step(sides: dict) -> tuple[dict, dict]:
    """Mean-volume, volume-histogram (Eq. 9 on volumes) and lattice errors of the matched trajectories
    ``sides`` (``"ref"``/``"mlip"`` -> Trajectory), the mean volumes and densities beside them.

    A fixed-cell reference (an NVT AIMD) has no volume distribution: its histogram error is None and says why,
    while the mean-volume and lattice errors still compare the MLIP's equilibrium cell with the reference's."""
    v = {k: volumes_A3(t.cells) for k, t in sides.items()}
    lat = {k: lattice_parameters(t.cells) for k, t in sides.items()}
    out = {
        "volume_mean_ref_A3": float(v["ref"].mean()), "volume_mean_mlip_A3": float(v["mlip"].mean()),
        "density_mean_ref_g_cm3": float(density_g_cm3(sides["ref"].cells, sides["ref"].numbers).mean()),
        "density_mean_mlip_g_cm3": float(density_g_cm3(sides["mlip"].cells, sides["mlip"].numbers).mean()),
        "volume_error_pct": mean_volume_error_pct(v["ref"], v["mlip"]),
        **lattice_errors(sides["ref"].cells, sides["mlip"].cells),
    }
    edges = None
    if _fluctuates(v["ref"]):
        edges = volume_hist_edges(v["ref"], v["mlip"])
        out["volume_hist_error_pct"] = volume_hist_error_pct(v["ref"], v["mlip"], edges)
        out["volume_hist_bins"] = len(edges) - 1
    else:
        out["volume_hist_error_pct"] = None
        out["volume_hist_error_pct_note"] = "the reference's cell is fixed: no volume distribution to compare"

    def errors(w_ref, w_mlip) -> dict:
        return _weighted_errors(v, lat, {"ref": w_ref, "mlip": w_mlip}, edges)

    curves = {"volume_ref_A3": v["ref"], "volume_mlip_A3": v["mlip"]}
    return out, {"errors": errors, "floor": _floor(v["ref"], lat["ref"], edges is not None), "curves": curves}


def _floor(v_ref: np.ndarray, lat_ref: np.ndarray, with_hist: bool) -> dict:
    """``<key>_floor``: each cell error between the first and second half of the reference."""
    h = len(v_ref) // 2
    if h < 2:
        return {}
    a, b = slice(0, h), slice(h, 2 * h)
    la, lb = lat_ref[a].mean(axis=0), lat_ref[b].mean(axis=0)
    out = {"volume_error_pct_floor": mean_volume_error_pct(v_ref[a], v_ref[b]),
           "lattice_length_error_pct_floor": float(np.max(100.0 * np.abs(lb[:3] - la[:3]) / la[:3])),
           "lattice_angle_error_deg_floor": float(np.max(np.abs(lb[3:] - la[3:])))}
    if with_hist:
        out["volume_hist_error_pct_floor"] = volume_hist_error_pct(v_ref[a], v_ref[b])
    return out
