#!/usr/bin/env python
"""The prepared GPU check (issue 15 §4): one script to run the day a GPU is lent.

For every model given (default: those whose weights ship in their wheels, CHGNet 0.3.0 and SevenNet-0):
  1. forces on the device against the CPU, same structure (32-atom Cu3Au-like cell): max |dF| in eV/Å;
  2. seconds per MD step on the device, through i-PI + dynamat-driver (dynamat's own supervisor, stress on
     written steps) and in-process ASE MD with the model's own ASE calculator (NHC), side by side;
  3. packed against solo runs at K = 1, 2, 4, 8 (``bench_pack.run_k``): total steps/s and the ratio
     (target: >= 3x at K = 8 for SevenNet-0 and CHGNet).
It prints one Markdown table per part, with the date and the device name, ready for the README.

    python benchmarks/gpu_check.py --device cuda                     # on the GPU machine
    python benchmarks/gpu_check.py --device cpu --steps 20 --ks 1,2  # a dry run here (CPU against CPU)
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from ase import units
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_pack import run_k  # noqa: E402

from dynamat.engines.ipi_input import MDSettings  # noqa: E402
from dynamat.runner import RunOptions, supervise  # noqa: E402


def cell():
    a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(2)
    a.numbers[::4] = 79
    a.rattle(0.05, seed=3)
    return a


def forces_on(model_name: str, device: str) -> np.ndarray:
    from dynamat_driver.models import load_model

    m = load_model(model_name, device=device)
    a = cell()
    m.prepare(a)
    return np.asarray(m.calculate(a, True)[1])


def ase_ms_per_step(model_name: str, device: str, steps: int) -> float:
    from ase.md.nose_hoover_chain import NoseHooverChainNVT
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    from dynamat_driver.models import load_model

    m = load_model(model_name, device=device)
    atoms = cell()
    atoms.calc = m.calc  # the package's own ASE calculator, as a user would run it
    MaxwellBoltzmannDistribution(atoms, temperature_K=300.0, rng=np.random.default_rng(1))
    md = NoseHooverChainNVT(atoms, timestep=1.0 * units.fs, temperature_K=300.0, tdamp=50.0 * units.fs)
    md.run(max(5, steps // 10))
    t0 = time.perf_counter()
    md.run(steps)
    return 1e3 * (time.perf_counter() - t0) / steps


def ipi_ms_per_step(model_name: str, device: str, steps: int, workdir: Path) -> float:
    settings = MDSettings("svr", 1.0, 50.0, 10, steps, 300.0, seed=1)
    args = ("--device", device) if device != "cpu" else ()
    rec = supervise(model_name, cell(), settings, workdir, RunOptions(driver_args=args, warmup_steps=max(10, steps // 5)))
    return 1e3 * rec.seconds_per_step_mean


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--models", default="chgnet,sevennet-0")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--ks", default="1,2,4,8")
    ap.add_argument("--pack-models", default="sevennet-0,chgnet")
    args = ap.parse_args()
    name = args.device
    if args.device.startswith("cuda"):
        import torch

        name = torch.cuda.get_device_name(0)
    print(f"# dynamat GPU check, {time.strftime('%Y-%m-%d')}, device: {name}\n")
    models = [m for m in args.models.split(",") if m]
    print("| model | max abs(F_device - F_cpu) eV/Å | i-PI + driver ms/step | in-process ASE ms/step | ratio |")
    print("| --- | --- | --- | --- | --- |")
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for m in models:
            try:
                df = float(np.abs(forces_on(m, args.device) - forces_on(m, "cpu")).max())
                ipi = ipi_ms_per_step(m, args.device, args.steps, Path(tmp) / m)
                ase_ms = ase_ms_per_step(m, args.device, args.steps)
                print(f"| {m} | {df:.2e} | {ipi:.2f} | {ase_ms:.2f} | {ipi / ase_ms:.2f} |", flush=True)
            except Exception as exc:  # one family's failure must not cost the others their numbers
                print(f"| {m} | failed: {type(exc).__name__}: {exc} | | | |", flush=True)
        ks = [int(k) for k in args.ks.split(",")]
        print("\n| model | K | solo steps/s | packed steps/s | ratio | structures per call |")
        print("| --- | --- | --- | --- | --- | --- |")
        dargs = ("--device", args.device) if args.device != "cpu" else ()
        for m in [x for x in args.pack_models.split(",") if x]:
            for k in ks:
                try:
                    solo = run_k(m, k, False, args.steps, 32, Path(tmp) / f"s-{m}-{k}", dargs, None)
                    packed = run_k(m, k, True, args.steps, 32, Path(tmp) / f"p-{m}-{k}", dargs, None)
                    r = packed["steady_steps_per_s"] / solo["steady_steps_per_s"]
                    print(f"| {m} | {k} | {solo['steady_steps_per_s']:.1f} | {packed['steady_steps_per_s']:.1f} | "
                          f"{r:.2f} | {packed['structures_per_call'] or 0:.2f} |", flush=True)
                except BaseException as exc:  # run_k ends a failed set with SystemExit
                    print(f"| {m} | {k} | failed: {exc} | | | |", flush=True)


if __name__ == "__main__":
    main()
