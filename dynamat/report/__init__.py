"""Reporting layer: tables, paper-style figures, a self-contained HTML page and a
Matbench-discovery-style export from ``<results>/<model>/<system>/score.json`` files.

Entry point: ``dynamat report RESULTS --out DIR [--external CSV]``
(:mod:`dynamat.cli.report`; the work is :func:`dynamat.report.build.run_report`). Library use::

    from dynamat.report import load_results, build_tables, make_figures
    res = load_results("runs/")
    tables = build_tables(res)
    figs = make_figures(res, tables["per_model"].rows)   # {stem: matplotlib Figure}

:func:`write_synthetic_results` writes a small deterministic results tree in the input
contract's shape, for tests and for trying the report without running any MD.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import numpy as np

from dynamat.files import write_text_atomic
from dynamat.layout import RunFolder

from .pareto import pareto_front, pearson_r
from .tables import (METRICS, Results, ResultsError, Table, build_tables, load_results,
                     model_table, tier_median_table)

__all__ = [
    "METRICS",
    "Results",
    "ResultsError",
    "Table",
    "build_tables",
    "load_results",
    "make_figures",
    "model_table",
    "pareto_front",
    "pearson_r",
    "run_report",
    "tier_median_table",
    "write_synthetic_results",
]


def run_report(results, out, external=None, title="dynamat report", formats=("png", "pdf")) -> str:
    from .build import run_report as _run

    return _run(results, out, external, title, formats)


def make_figures(results, model_rows):
    from .figures import make_figures as _mk

    return _mk(results, model_rows)


#: (model, tier, n_params, skill) for the synthetic set; lower skill = better model
_SYNTH_MODELS = (
    ("CHGNet", 1, 412_525, 1.0),
    ("MACE-MP-0", 1, 4_688_656, 0.8),
    ("orb-v2", 2, 25_161_727, 0.6),
    ("GRACE-2L-OAM", 3, 12_597_516, 0.4),
    ("PET-OAM-XL", 3, 730_000_000, 0.3),
    ("UMA-S-P1", 4, 6_600_000, 0.35),
)
_SYNTH_SYSTEMS = (
    ("bulk_Cu_300K", "pure metal"),
    ("Pt3Co_300K", "alloy"),
    ("naphthalene_300K", "molecular crystal"),
)


def write_synthetic_results(root: str | Path, models: Sequence[tuple] = _SYNTH_MODELS,
                            systems: Sequence[tuple[str, str]] = _SYNTH_SYSTEMS,
                            exploded: Sequence[tuple[str, str]] = (("UMA-S-P1", "Pt3Co_300K"),),
                            curves: bool = True, seed: int = 0) -> Path:
    """Write ``root/<model>/<system>/score.json`` (+ ``curves.npz``) for a small synthetic
    benchmark. Molecular crystals get null pressure keys (no reference pressure); runs in
    ``exploded`` get status "exploded" with wild values that must never enter a mean.
    Observables carry ``_unc`` and ``_floor`` keys; timings carry ``_unc``."""
    rng = np.random.default_rng(seed)
    root = Path(root)
    r = np.linspace(0.05, 6.0, 300)
    g_ref = 1 + 1.8 * np.exp(-((r - 2.55) / 0.18) ** 2) + 0.5 * np.exp(-((r - 3.6) / 0.3) ** 2)
    g_ref[r < 2.0] = 0.0
    nu = np.linspace(0, 20, 400)
    v_ref = np.exp(-((nu - 5) / 1.5) ** 2) + 0.6 * np.exp(-((nu - 8) / 1.0) ** 2)
    v_ref /= np.trapezoid(v_ref, nu)
    for model, tier, n_params, skill in models:
        for si, (system, cls) in enumerate(systems):
            d = RunFolder.of(root, model, system).path
            d.mkdir(parents=True, exist_ok=True)
            status = "exploded" if (model, system) in exploded else "completed"
            scale = skill * (1.0 + 0.3 * si) * (1 + 0.1 * rng.standard_normal())
            has_p = cls != "molecular crystal"
            s = {
                "model": model, "system": system, "system_class": cls, "tier": tier,
                "n_params": n_params, "status": status,
                "energy_rmse_eV_per_atom": 0.2 * scale,
                "force_rmse_eV_per_A": 0.15 * scale,
                "rdf_error_pct": min(100.0, 10.0 * scale), "rdf_error_pct_unc": 0.5 * scale,
                "rdf_error_pct_floor": 0.8,
                "pressure_mae_GPa": 1.5 * scale if has_p else None,
                "pressure_hist_error_pct": min(100.0, 40.0 * scale) if has_p else None,
                "pressure_hist_error_pct_unc": 2.0 * scale if has_p else None,
                "vdos_error_pct": min(100.0, 25.0 * scale), "vdos_error_pct_unc": 1.0 * scale,
                "vdos_error_pct_floor": 5.0,
                "seconds_per_step": 0.01 * (n_params / 1e6) ** 0.45 * (1 + 0.2 * si),
                "seconds_per_step_unc": 0.001,
                "model_seconds_per_eval": 0.008 * (n_params / 1e6) ** 0.45,
            }
            obs = [s["rdf_error_pct"], s["pressure_hist_error_pct"], s["vdos_error_pct"]]
            if None not in obs:
                s["E_RPV_pct"] = sum(obs) / 3
                s["L_RPV_pct"] = sum(o * o for o in obs) / sum(obs)
            else:
                s["E_RPV_pct"] = s["L_RPV_pct"] = None
            if status != "completed":
                s.update(energy_rmse_eV_per_atom=1e6, force_rmse_eV_per_A=1e6, rdf_error_pct=100.0,
                         vdos_error_pct=100.0, pressure_mae_GPa=1e4, pressure_hist_error_pct=100.0,
                         E_RPV_pct=100.0, L_RPV_pct=100.0, error="atoms flew apart at step 812")
            # Matbench-discovery's definitions give other numbers for the same runs (synthetic here)
            s["matbench"] = {"rdf_error": 0.9 * s["rdf_error_pct"], "adf_error": 5.0 * scale,
                             "vdos_error": 0.8 * s["vdos_error_pct"], "pressure_mae": s["pressure_mae_GPa"],
                             "pressure_wasserstein": None if not has_p else 1.1 * s["pressure_mae_GPa"],
                             "pressure_error": None if not has_p else min(100.0, 45.0 * scale)}
            s["matbench_singlepoint"] = {"energy_rmse": 0.1 * scale, "force_rmse": s["force_rmse_eV_per_A"] / 3**0.5}
            write_text_atomic(RunFolder(d).score_json, json.dumps(s, indent=1))
            if curves and status == "completed":
                shift = 0.05 * scale
                g = np.interp(r, r * (1 + shift), g_ref) * (1 - 0.2 * scale) + 0.2 * scale
                g[r < 2.0] = 0.0
                v = np.interp(nu, nu * (1 + shift), v_ref)
                v /= np.trapezoid(v, nu)
                arrays = dict(rdf_r=r, rdf_ref=g_ref, rdf_mlip=g, vdos_nu_THz=nu, vdos_ref=v_ref,
                              vdos_mlip=v)
                if has_p:
                    arrays["p_ref_GPa"] = rng.normal(0.3, 0.4, 800)
                    arrays["p_mlip_GPa"] = rng.normal(0.3 + 1.5 * scale, 0.4 * (1 + scale), 800)
                np.savez(RunFolder(d).curves_npz, **arrays)
    return root
