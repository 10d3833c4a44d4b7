#!/usr/bin/env python
"""Seconds per MD step: in-process ASE MD vs i-PI + dynamat-driver with the same calculator.

Both sides use the paper's metal protocol (0.25 fs, tau 254.5 fs, a frame written every 10 steps):
ASE runs its Nose-Hoover chain and writes extxyz frames, i-PI runs SVR through `dynamat run`
(which writes positions, velocities and properties). Repeats are interleaved (A B A B ...) so load
drift on a shared machine hits both alike; medians and their ratio are printed.

    python benchmarks/bench_md_overhead.py [--steps 2000] [--repeats 3] [--only emt|chgnet]
Targets (issue 2): ratio <= 1.05 for EMT-108, <= 1.02 for CHGNet-32.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from ase import io, units
from ase.build import bulk
from ase.md.nose_hoover_chain import NoseHooverChainNVT
from ase.md.velocitydistribution import MaxwellBoltzmannDistribution, Stationary

from dynamat.catalogue import get_system
from dynamat.runner import RunOptions, run_md

SYSTEM = get_system("bulkCu_300K-demo_EMT")


def cu(n_rep: int):
    return bulk("Cu", "fcc", a=3.5898, cubic=True).repeat(n_rep)


def make_calc(model: str):
    if model == "emt":
        from ase.calculators.emt import EMT

        return EMT()
    from chgnet.model import CHGNet, CHGNetCalculator

    return CHGNetCalculator(model=CHGNet.load(model_name="0.3.0", use_device="cpu", verbose=False), use_device="cpu")


def ase_seconds_per_step(model: str, atoms, steps: int, out: Path) -> float:
    atoms = atoms.copy()
    atoms.calc = make_calc(model)
    MaxwellBoltzmannDistribution(atoms, temperature_K=300.0)
    Stationary(atoms)
    md = NoseHooverChainNVT(atoms, timestep=0.25 * units.fs, temperature_K=300.0, tdamp=254.5 * units.fs)
    traj = out / "ase.extxyz"

    def write():
        io.write(traj, atoms, format="extxyz", append=True)

    md.attach(write, interval=10)
    warm = max(10, steps // 10)
    md.run(warm)
    t0 = time.perf_counter()
    md.run(steps - warm)
    return (time.perf_counter() - t0) / (steps - warm)


def ipi_seconds_per_step(model: str, atoms, steps: int, out: Path) -> float:
    rec = run_md(model, SYSTEM, atoms, "benchmark", out, RunOptions(steps=steps, overwrite=True))
    return rec.seconds_per_step_mean


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", choices=["emt", "chgnet"], default=None)
    args = ap.parse_args()
    cases = [("emt", cu(3), args.steps, 1.05), ("chgnet", cu(2), max(200, args.steps // 10), 1.02)]
    for model, atoms, steps, target in cases:
        if args.only and model != args.only:
            continue
        a, b = [], []
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                a.append(ase_seconds_per_step(model, atoms, steps, Path(tmp)))
                b.append(ipi_seconds_per_step(model, atoms, steps, Path(tmp)))
        ma, mb = statistics.median(a), statistics.median(b)
        print(f"{model}-{len(atoms)} ({steps} steps x {args.repeats}): ASE in-process {ma * 1e3:.2f} ms/step, "
              f"i-PI + dynamat-driver {mb * 1e3:.2f} ms/step, ratio {mb / ma:.3f} (target <= {target})")
        print(f"   ASE runs: {[round(x * 1e3, 2) for x in a]}  i-PI runs: {[round(x * 1e3, 2) for x in b]}")


if __name__ == "__main__":
    main()
