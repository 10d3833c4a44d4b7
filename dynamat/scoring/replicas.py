"""Replicas in scoring: the noise floor from independent reference trajectories, and the score of a
(model, system) from its R MLIP replicas.

* **Reference replicas** (:func:`dynamat.io.reference_h5.reference_replicas`): every MLIP run is scored
  against replica 0, so the floor is the error a perfect model would get there — another trajectory
  of the same dynamics: ``<key>_floor`` = mean over k >= 1 of score_md(reference 0, reference k), both
  cut to the run's matched duration (not the two halves of one trajectory, which are half as long and
  correlated across the cut). E_RPV/L_RPV floors are Eq. 11-12 of the three mean floors, as for halves;
  a variable-cell (NPT) score gets its cell errors' floors from the replicas too.
* **MLIP replicas** (:func:`aggregate_replicas`): per observable, the mean error over the completed
  replicas; ``<key>_replica_sd`` the sample standard deviation across them (ddof 1: the spread of one
  run's error); ``<key>_unc`` the bootstrap standard error of the mean, sqrt(Σ u_k²)/R (independent
  runs); ``<key>_replica_unc`` = ``<key>_replica_sd``/√R, the same standard error measured from the
  spread. Both estimate the uncertainty of the mean; :func:`larger_uncertainty` picks the larger.
  Ē_RPV and L_RPV (and their floors) are Eq. 11-12 of the three mean errors, as the report's model rows
  are: the Lehmer mean of a mean is not the mean of per-replica Lehmer means. Their ``_unc`` and
  ``_replica_sd`` stay those of the per-replica values (the bootstrap keeps the three errors' correlation).
"""

from __future__ import annotations

import math

import numpy as np

from dynamat.metrics.combined import combined_scores
from dynamat.scoring.keys import COMPOSITE_KEYS, ERROR_KEYS, METRIC_KEYS, NPT_METRIC_KEYS, OBSERVABLE_KEYS


def reference_replica_floor(ref0, others, duration_fs: float, *, dims: int = 3, n_bins: int = 500,
                            npt: bool = False) -> dict:
    """``<key>_floor`` of every error key from reference replica 0 against each further replica in
    ``others`` (Trajectories), over ``duration_fs``; a key is None where a pair has no value. ``npt``:
    the cell errors (:data:`NPT_METRIC_KEYS`) get their floor from the replicas too."""
    from dynamat.scoring.core import score_md

    base = ref0.truncated_to(duration_fs)
    per_pair = [score_md(base, other.truncated_to(duration_fs), dims=dims, n_boot=0, n_bins=n_bins, npt=npt)
                for other in others]
    floors = {}
    for key in ERROR_KEYS + (NPT_METRIC_KEYS if npt else ()):
        if key in COMPOSITE_KEYS:
            continue
        vals = [p.get(key) for p in per_pair]
        floors[key] = float(np.mean(vals)) if vals and all(v is not None for v in vals) else None
    floors.update(combined_scores(*(floors[k] for k in OBSERVABLE_KEYS)))
    return {f"{k}_floor": floors.get(k) for k in ERROR_KEYS + (NPT_METRIC_KEYS if npt else ())}


def _mean_sd(vals: list[float]) -> tuple[float | None, float | None]:
    if not vals:
        return None, None
    return float(np.mean(vals)), (float(np.std(vals, ddof=1)) if len(vals) >= 2 else None)


def aggregate_replicas(scores: list[dict]) -> dict:
    """One score from the completed replicas' scores of one (model, system) (rules: module docstring).

    Keys of the first score that are not metrics (model, system, class, facts) are kept; ``n_replicas``
    counts the scores used and ``replica_seeds`` lists their run indices."""
    if not scores:
        raise ValueError("no replica scores to aggregate")
    # the NPT cell errors too, where the runs have them: never replica 0's value passed on as the mean
    keys = (*METRIC_KEYS, *(k for k in NPT_METRIC_KEYS if k in scores[0]))
    out = {k: v for k, v in scores[0].items() if not any(k.startswith(m) for m in keys)}
    n = len(scores)
    for key in keys:
        vals = [s[key] for s in scores if s.get(key) is not None]
        out[key], sd = _mean_sd(vals)
        uncs = [s.get(f"{key}_unc") for s in scores if s.get(key) is not None]
        out[f"{key}_unc"] = (math.sqrt(sum(u * u for u in uncs)) / len(uncs)
                             if uncs and all(u is not None for u in uncs) else None)
        floors = [s.get(f"{key}_floor") for s in scores if s.get(key) is not None]
        out[f"{key}_floor"] = float(np.mean(floors)) if floors and all(f is not None for f in floors) else None
        out[f"{key}_replica_sd"] = sd
        out[f"{key}_replica_unc"] = None if sd is None else sd / math.sqrt(len(vals))
    for suffix in ("", "_floor"):
        combined = combined_scores(*(out[f"{k}{suffix}"] for k in OBSERVABLE_KEYS))
        for key in COMPOSITE_KEYS:
            out[f"{key}{suffix}"] = combined[key]
    for key in [k for k in scores[0] if k.startswith("mb_")]:  # Matbench-discovery's keys, report rows
        out[key] = _mean_sd([s[key] for s in scores if s.get(key) is not None])[0]
    out["n_replicas"] = n
    out["replicas"] = sorted(s.get("replica_index") or 0 for s in scores)
    return out


def larger_uncertainty(row: dict, key: str) -> tuple[float | None, str | None]:
    """(the larger of the bootstrap ``<key>_unc`` and the replica ``<key>_replica_unc``, which one:
    "bootstrap" or "replicas"); (None, None) when neither is known."""
    boot, rep = row.get(f"{key}_unc"), row.get(f"{key}_replica_unc")
    if rep is not None and (boot is None or rep > boot):
        return rep, "replicas"
    return (boot, "bootstrap") if boot is not None else (None, None)
