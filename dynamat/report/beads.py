"""The report's table of path-integral bead convergence: the summaries `dynamat beads-convergence` leaves
(``<model>/<system>/bead_convergence.json``), one row per bead count P.

⟨K_cv⟩ is the centroid-virial kinetic energy per atom (eV in the summary, meV here), ± its block-bootstrap
standard error; successive P agree when |ΔK| ≤ z·sqrt(σ₁² + σ₂²), and a study is converged when its two
largest P agree (:mod:`dynamat.pimd.convergence`). P = 1 is classical: 3/2 k_B T exactly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from dynamat.report.tables import Table, _num

COLUMNS = ["model", "system", "temperature_K", "nbeads", "kinetic_cv_meV_per_atom", "kinetic_cv_meV_per_atom_unc",
           "difference_sigma", "agrees_with_previous", "converged", "n_samples", "steps", "seconds_per_step"]


def read_bead_studies(paths: list[Path], skipped: list[str]) -> list[dict[str, Any]]:
    """The summaries at ``paths``; an unreadable one, or one without its rows, is added to ``skipped``."""
    studies = []
    for path in paths:
        try:
            raw = json.loads(path.read_text())
            if not isinstance(raw, dict) or not isinstance(raw.get("rows"), list):
                raise ValueError("not a bead-convergence summary (no rows)")
        except (OSError, ValueError) as exc:
            skipped.append(" ".join(f"{path}: {exc}".split()))
            continue
        studies.append({**raw, "source": str(path)})
    return studies


def beads_table(studies: list[dict[str, Any]]) -> Table | None:
    """One row per (study, P), in model, system, P order; None without a study (the report keeps its tables)."""
    if not studies:
        return None
    rows = []
    for st in sorted(studies, key=lambda s: (str(s.get("model")), str(s.get("system")))):
        brows = [r for r in st["rows"] if isinstance(r, dict)]
        for i, r in enumerate(brows):
            k, se = _num(r.get("kinetic_cv_eV_per_atom")), _num(r.get("kinetic_cv_se_eV_per_atom"))
            last = i == len(brows) - 1
            rows.append({
                "model": st.get("model"), "system": st.get("system"), "temperature_K": _num(st.get("temperature_K")),
                "nbeads": r.get("nbeads"),
                "kinetic_cv_meV_per_atom": None if k is None else 1e3 * k,
                "kinetic_cv_meV_per_atom_unc": None if se is None else 1e3 * se,
                "difference_sigma": _num(r.get("difference_sigma")),
                "agrees_with_previous": r.get("agrees_with_previous"),
                # the study's verdict, on its largest P; not judged where that P had too few samples
                "converged": (None if r.get("too_few_samples") else st.get("converged")) if last else None,
                "n_samples": r.get("n_samples"), "steps": r.get("steps"),
                "seconds_per_step": _num(r.get("seconds_per_step")),
            })
    return Table("beads_convergence", "Path-integral convergence: ⟨K_cv⟩ per atom against the bead count P",
                 COLUMNS, rows,
                 notes=["⟨K_cv⟩: centroid-virial kinetic energy per atom (meV), ± block-bootstrap standard error, "
                        "PILE-L thermostat; P = 1 is classical (3/2 k_B T). difference_sigma: |ΔK| to the previous "
                        "P in combined standard errors; converged: the two largest P agree (blank: not judged, "
                        "too few samples). A study of its own, in no mean of the benchmark."],
                 display=[c for c in COLUMNS if c != "kinetic_cv_meV_per_atom_unc"])
