#!/usr/bin/env python
"""Seconds per PIMD step with P beads: batched beads vs one driver per bead vs sequential beads.

System: the demo reference's 32-atom fcc Cu (``bulkCu_300K-demo_EMT``, first frame), its
protocol (0.25 fs, 300 K, a frame every 10 steps) with the PILE-L PIMD template and P = 8 beads.
Three ways to evaluate the beads, all through i-PI sockets:

* ``batched``    — one driver, ffsocket ``batch_size = P``: every step sends all P beads in one
                   request and the model evaluates them in one batched call;
* ``per-bead``   — P driver processes, ``batch_size = 1``: i-PI hands one bead to each free
                   driver, so the beads are evaluated concurrently (each driver gets
                   ``--threads max(1, cores // P)`` so the processes do not oversubscribe the CPUs);
* ``sequential`` — one driver, ``batch_size = 1``: P requests per step, one after the other.

``--threads N`` sets torch's CPU threads of the single driver in the batched and sequential modes
(default: torch's own, all cores). On a shared 2-core machine CHGNet with 2 threads ran ~10-20×
slower than with 1 (thread contention), so compare with ``--threads 1`` as well. Repeats are
interleaved (batched, per-bead, sequential, batched, ...) and the median is reported.

The step time is the wall time between the warm-up step and the last step (from i-PI's
properties file, written every 10 steps), divided by the steps in between.

    python benchmarks/bench_pimd.py [--steps 30] [--beads 8] [--models chgnet,sevennet-0] [--threads 1] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

import ase

from dynamat.catalogue import get_system
from dynamat.io.reference_h5 import read_reference
from dynamat.runner import RunOptions, supervise

SYSTEM = "bulkCu_300K-demo_EMT"
DEMO = Path(__file__).resolve().parents[1] / "dynamat" / "data" / "demo_reference.h5"


def initial_atoms() -> ase.Atoms:
    first = read_reference(DEMO, SYSTEM, frames=slice(0, 1))
    return ase.Atoms(numbers=first.numbers, positions=first.positions[0], cell=first.cells[0], pbc=first.pbc)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=30, help="MD steps per run (the first 10 are warm-up).")
    ap.add_argument("--beads", type=int, default=8)
    ap.add_argument("--models", default="chgnet,sevennet-0")
    ap.add_argument("--modes", default="batched,per-bead,sequential")
    ap.add_argument("--warmup", type=int, default=10, help="Steps excluded from the timing.")
    ap.add_argument("--threads", type=int, default=None, help="torch threads of the single driver (batched, sequential).")
    ap.add_argument("--repeats", type=int, default=1, help="Interleaved repeats; the median is reported.")
    ap.add_argument("--json", type=Path, default=None, help="Also write the results here.")
    args = ap.parse_args()
    cores = len(os.sched_getaffinity(0))
    system = get_system(SYSTEM)
    settings = replace(system.md_settings(steps=args.steps, nbeads=args.beads), thermostat="pile_l")
    atoms = initial_atoms()
    p = args.beads
    modes = {
        "batched": dict(batch_size=p, n_drivers=1, driver_threads=args.threads),
        "per-bead": dict(batch_size=1, n_drivers=p, driver_threads=max(1, cores // p)),
        "sequential": dict(batch_size=1, n_drivers=1, driver_threads=args.threads),
    }
    results = []
    print(f"{len(atoms)}-atom Cu, P = {p}, {args.steps} steps (warm-up {args.warmup}), {cores} CPU cores, "
          f"single-driver torch threads: {args.threads or 'default'}")
    with tempfile.TemporaryDirectory(prefix="bench_pimd") as tmp:
        for model in args.models.split(","):
            row = {"model": model}
            for rep in range(args.repeats):
                for mode in args.modes.split(","):
                    opts = RunOptions(nbeads=p, warmup_steps=args.warmup, stall_timeout_s=3600, **modes[mode])
                    run = supervise(model, atoms, settings, Path(tmp) / model / f"{mode}-{rep}", opts)
                    evals = [(t.get("model_seconds_per_evaluation") or {}).get("median") for t in run.driver_timings]
                    row.setdefault(f"{mode}_all", []).append(run.seconds_per_step_mean)
                    row.setdefault(f"{mode}_model_s_per_eval_median", []).append(evals)
                    print(f"  {model:<11} {mode:<10} {run.seconds_per_step_mean:8.3f} s/step "
                          f"(run {run.wall_seconds:.0f} s, {run.n_drivers} driver(s), batch_size {run.batch_size})",
                          flush=True)
            for mode in args.modes.split(","):
                vals = [v for v in row.get(f"{mode}_all", []) if v is not None]
                row[mode] = statistics.median(vals) if vals else None
            results.append(row)
    print()
    print(f"{'model':<11} {'batched':>9} {'per-bead':>9} {'sequential':>11} {'seq/batched':>12} {'seq/per-bead':>13} {'per-bead/batched':>17}")
    for r in results:
        b, d, s = (r.get(k) for k in ("batched", "per-bead", "sequential"))
        ratio = lambda x, y: f"{x / y:.2f}" if x and y else "n/a"  # noqa: E731
        fmt = lambda x: f"{x:.3f}" if x else "n/a"  # noqa: E731
        print(f"{r['model']:<11} {fmt(b):>9} {fmt(d):>9} {fmt(s):>11} {ratio(s, b):>12} {ratio(s, d):>13} {ratio(d, b):>17}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
