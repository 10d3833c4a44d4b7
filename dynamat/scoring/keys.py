"""The one table of score keys: what each is, its label, unit and the paper equation it implements.

Every place that names a metric (the score JSON, the scorecard, report tables and figure axes)
reads it from here, so adding a metric is one line.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Metric:
    key: str  # stable key in score.json
    label: str  # axis / column label (matplotlib mathtext allowed)
    unit: str
    short: str  # compact name for headers
    equation: str = ""  # the paper's equation, e.g. "Eq. 4"; empty for a cost

    @property
    def axis_label(self) -> str:
        return f"{self.label} ({self.unit})" if self.unit else self.label

    @property
    def card_label(self) -> str:
        return f"{self.short} ({self.equation})" if self.equation else self.label.lower()


METRICS: tuple[Metric, ...] = (
    Metric("energy_rmse_eV_per_atom", "Energy RMSE", "eV/atom", "E RMSE", "Eq. 1"),
    Metric("force_rmse_eV_per_A", "Force RMSE", "eV/Å", "F RMSE", "Eq. 2"),
    Metric("rdf_error_pct", "RDF error $E_{RDF}$", "%", "E_RDF", "Eq. 4"),
    Metric("pressure_mae_GPa", "Pressure MAE", "GPa", "P MAE", "Eq. 7"),
    Metric("pressure_hist_error_pct", "Pressure-histogram error $E_P$", "%", "E_P", "Eq. 9"),
    Metric("vdos_error_pct", "VDOS error $E_{VDOS}$", "%", "E_VDOS", "Eq. 10"),
    Metric("E_RPV_pct", r"Combined error $\bar{E}_{RPV}$", "%", "E_RPV", "Eq. 11"),
    Metric("L_RPV_pct", "Lehmer error $L_{RPV}$", "%", "L_RPV", "Eq. 12"),
    Metric("seconds_per_step", "Time per MD step", "s", "s/step"),
    Metric("model_seconds_per_eval", "Model time per evaluation", "s", "s/eval"),
)
#: variable-cell (NPT) observables, not the paper's (README, Metrics; :mod:`dynamat.metrics.volume`): only NPT
#: scores carry them, and reports show them in a table of their own, so fixed-cell tables keep their columns
NPT_METRICS: tuple[Metric, ...] = (
    Metric("volume_error_pct", r"Mean-volume error $E_{\langle V \rangle}$", "%", "E_<V>", "NPT"),
    Metric("volume_hist_error_pct", "Volume-histogram error $E_V$", "%", "E_V", "Eq. 9 on V"),
    Metric("lattice_length_error_pct", "Lattice-length error $E_a$", "%", "E_a", "NPT"),
    Metric("lattice_angle_error_deg", r"Lattice-angle error $E_\alpha$", "deg", "E_alpha", "NPT"),
)
NPT_METRIC_KEYS = tuple(m.key for m in NPT_METRICS)
METRIC_BY_KEY = {m.key: m for m in (*METRICS, *NPT_METRICS)}
METRIC_KEYS = tuple(m.key for m in METRICS)
#: the three observable errors combined by Eq. 11 / 12
OBSERVABLE_KEYS = ("rdf_error_pct", "pressure_hist_error_pct", "vdos_error_pct")
COMPOSITE_KEYS = ("E_RPV_pct", "L_RPV_pct")
#: error metrics of an MD run that carry ``_unc`` (bootstrap) and ``_floor`` (reference halves) companions
ERROR_KEYS = ("rdf_error_pct", "pressure_mae_GPa", "pressure_hist_error_pct", "vdos_error_pct", "E_RPV_pct", "L_RPV_pct")
#: the scorecard's lines, in order (the model time is in run.json and the report)
SCORECARD_KEYS = METRIC_KEYS[:-2] + NPT_METRIC_KEYS + METRIC_KEYS[-2:-1]
