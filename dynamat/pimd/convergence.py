"""Convergence of ⟨K_cv⟩ with the number of beads: one supervised run per P, compared in errors."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Sequence

import ase
import numpy as np

from dynamat.errors import DynamatError
from dynamat.files import write_text_atomic
from dynamat.layout import BEAD_RUN_PREFIX, BEAD_SUMMARY, RunFolder, check_out_folder
from dynamat.pimd.observables import quantum_kinetic_energy
from dynamat.runner import RunOptions, supervise
from dynamat.units import KB_EV_PER_K


@dataclass
class BeadConvergence:
    """⟨K_cv⟩ per atom against P, and whether successive P agree within ``z`` standard errors."""

    model: str
    system: str
    temperature_K: float
    z: float
    rows: list[dict] = field(default_factory=list)

    @property
    def converged(self) -> bool:
        """The two largest P agree within error (never on errors too few samples give)."""
        return len(self.rows) >= 2 and self.rows[-1]["agrees_with_previous"] is True

    def as_dict(self) -> dict:
        return {**asdict(self), "converged": self.converged}

    def table(self) -> str:
        lines = [f"{'P':>4} {'<K_cv>/atom (meV)':>20} {'+-':>8} {'vs previous':>14}  {'s/step':>8}"]
        for r in self.rows:
            agree = r["agrees_with_previous"]
            prev = ("too few rows" if r.get("too_few_samples") else "" if agree is None
                    else f"{r['difference_sigma']:.1f} sd " + ("ok" if agree else "DIFFERS"))
            sps = r.get("seconds_per_step")
            lines.append(f"{r['nbeads']:>4} {1e3 * r['kinetic_cv_eV_per_atom']:>20.3f} "
                         f"{1e3 * r['kinetic_cv_se_eV_per_atom']:>8.3f} {prev:>14}  "
                         f"{'n/a' if sps is None else f'{sps:.4f}':>8}")
        verdict = (f"{'converged' if self.converged else 'NOT converged'} (|dK| <= {self.z:g} sd between the two "
                   "largest P)")
        if self.rows and self.rows[-1].get("too_few_samples"):
            verdict = (f"not judged: fewer than {MIN_SAMPLES} properties rows after the discard give no error "
                       "to compare within; run longer (--steps)")
        lines.append(f"classical 3/2 kT = {1e3 * 1.5 * KB_EV_PER_K * self.temperature_K:.3f} meV/atom; {verdict}")
        return "\n".join(lines)


#: properties rows a P > 1 run needs after the discard for its error: the block bootstrap's fewest blocks
#: (:func:`dynamat.metrics.uncertainty.choose_block_length`); with fewer, a 0 or noisy error would judge
MIN_SAMPLES = 20


def _agreement(rows: list[dict], z: float) -> None:
    prev = None
    for r in rows:
        few = prev is not None and any(x["nbeads"] > 1 and x["n_samples"] < MIN_SAMPLES for x in (prev, r))
        r["too_few_samples"] = few
        if prev is None or few:
            r["agrees_with_previous"] = None
            r["difference_sigma"] = None
        else:
            diff = r["kinetic_cv_eV_per_atom"] - prev["kinetic_cv_eV_per_atom"]
            sd = float(np.hypot(r["kinetic_cv_se_eV_per_atom"], prev["kinetic_cv_se_eV_per_atom"]))
            sig = abs(diff) / sd if sd > 0 else (0.0 if diff == 0 else float("inf"))
            r["difference_sigma"] = sig
            r["agrees_with_previous"] = bool(sig <= z)
        prev = r


def bead_convergence(
    model: str,
    system,
    initial: ase.Atoms,
    out: str | Path,
    *,
    beads: Sequence[int] = (1, 2, 4, 8),
    steps: int | None = None,
    seed: int = 12345,
    discard_fraction: float = 0.1,
    z: float = 2.0,
    driver_args: Sequence[str] = (),
    driver_cmd: str | None = None,
    overwrite: bool = False,
    timeout_s: float = 24 * 3600.0,
    progress=None,
) -> BeadConvergence:
    """Runs ``model`` on ``system`` (a :class:`dynamat.catalogue.System`) for each P in ``beads``
    and reports ⟨K_cv⟩ per atom (and per species) with its block-bootstrap error.

    Every P uses the PILE-L template (P = 1 included, where K_cv = 3/2 k_B T exactly), the
    protocol's time step, tau, stride and temperature, ``steps`` MD steps (default: the
    protocol's length) and the same seed, all beads in one batched request. Runs go to
    ``<out>/<model>/<system>/beads_<P>/``; the summary to ``bead_convergence.json`` beside them.
    Successive P agree when |ΔK| ≤ z·sqrt(σ₁² + σ₂²).
    """
    check_out_folder(out)  # before the first bead count's progress line, not at its first write
    base = RunFolder.of(out, model, system.name).path
    beads = sorted({int(p) for p in beads})
    if not beads or beads[0] < 1:
        raise DynamatError(f"bead counts must be positive integers, got {beads}")
    conv = BeadConvergence(model=model, system=system.name, temperature_K=system.temperature_K, z=z)
    for p in beads:
        settings = replace(system.md_settings(steps=steps, seed=seed, nbeads=p), thermostat="pile_l")
        if progress:
            progress(p)
        run_dir = base / f"{BEAD_RUN_PREFIX}{p}"
        opts = RunOptions(seed=seed, nbeads=p, driver_args=tuple(driver_args), driver_cmd=driver_cmd,
                          overwrite=overwrite, stall_timeout_s=timeout_s)
        run = supervise(model, initial, settings, run_dir, opts, system=system)
        kin = quantum_kinetic_energy(run_dir, discard_fraction=discard_fraction)
        row = {"nbeads": p, "kinetic_cv_eV_per_atom": kin["all"].per_atom_eV,
               "kinetic_cv_se_eV_per_atom": kin["all"].per_atom_se_eV,
               "n_samples": kin["all"].n_samples, "steps": settings.steps,
               "seconds_per_step": run.seconds_per_step_median, "run_dir": str(run_dir),
               "species": {s: {"per_atom_eV": k.per_atom_eV, "per_atom_se_eV": k.per_atom_se_eV}
                           for s, k in kin.items() if s != "all"}}
        conv.rows.append(row)
        _agreement(conv.rows, z)
        write_text_atomic(base / BEAD_SUMMARY, json.dumps(conv.as_dict(), indent=2) + "\n")
    return conv


