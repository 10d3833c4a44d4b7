#!/usr/bin/env python
"""Do i-PI's SVR thermostat and ASE's Nose-Hoover chain give the same observables? (issue 5)

Runs EMT on the bundled Cu demo system with both engines (same protocol: 0.25 fs, tau 254.5 fs,
frame every 10 steps), several seeds each, scores every run against the bundled reference (itself
made with ASE's Nose-Hoover chain and EMT), and prints E_RDF, E_P, E_VDOS and the pressure MAE per
engine as mean ± standard error over seeds, with the reference's own noise floor.

    python benchmarks/compare_thermostats.py [--time-ps 2] [--seeds 3]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from dynamat.catalogue import get_system
from dynamat.reference import default_reference
from dynamat.io import read_ipi_run, read_reference
from dynamat.runner import RunOptions, run_md
from dynamat.scoring import score_md
import ase

SYSTEM = "bulkCu_300K-demo_EMT"
KEYS = ["rdf_error_pct", "pressure_mae_GPa", "pressure_hist_error_pct", "vdos_error_pct"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--time-ps", type=float, default=2.0)
    ap.add_argument("--seeds", type=int, default=3)
    args = ap.parse_args()
    ref_path = default_reference()
    ref = read_reference(ref_path, SYSTEM)
    system = get_system(SYSTEM)
    first = ref[0]
    atoms = ase.Atoms(numbers=first.numbers, positions=first.positions[0], cell=first.cells[0], pbc=True)
    steps = int(round(args.time_ps * 1000 / system.protocol.timestep_fs))
    results: dict[str, list[dict]] = {"ipi-svr": [], "ase-nhc": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in range(1, args.seeds + 1):
            for label, engine in (("ipi-svr", "ipi"), ("ase-nhc", "ase")):
                out = Path(tmp) / f"{label}-{seed}"
                run_md("emt", system, atoms, str(ref_path), out, RunOptions(steps=steps, seed=seed, engine=engine))
                traj = read_ipi_run(out / "emt" / SYSTEM)
                results[label].append(score_md(ref, traj, dims=3, n_boot=50))
    print(f"EMT {SYSTEM}, {args.time_ps} ps per run, {args.seeds} seeds, scored against the bundled reference")
    for key in KEYS:
        line = f"  {key:<26}"
        for label, scores in results.items():
            vals = [s[key] for s in scores]
            se = statistics.stdev(vals) / len(vals) ** 0.5 if len(vals) > 1 else float("nan")
            line += f"  {label}: {statistics.mean(vals):7.3f} ± {se:6.3f}"
        floor = statistics.mean(s.get(f"{key}_floor") or float("nan") for s in results["ipi-svr"])
        print(line + f"   (reference noise floor {floor:.3f})")


if __name__ == "__main__":
    main()
