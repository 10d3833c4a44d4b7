#!/usr/bin/env python
"""Packed runs against solo runs (issue 15 §2): total MD steps per second of K simulations.

For K = 1, 2, 4, 8 (``--ks``): K simulations of the same model at once, either
  * solo:   K i-PI + K dynamat-drivers (K model loads, one model call per structure), or
  * packed: K i-PI + one ``dynamat-driver --pack-dir`` (one model load; the K structures of a step
            gathered into one batched model call where the model allows),
run through dynamat's own supervisor (:func:`dynamat.runner.supervise`), the K runs in threads as
``dynamat run --pack K`` does. The cells alternate between fcc Cu and Cu3Au-like alloy supercells of
``--atoms`` atoms, each run its own seed. Printed per K: aggregate steady-state steps/s (sum over
the runs of 1 / median seconds per step, from run.json), wall-clock steps/s including start-up and
model loads, and the ratio packed / solo. Target (a GPU, SevenNet-0 and CHGNet, 32-108 atoms):
packed >= 3x solo at K = 8. On a few CPU cores packing cannot pay for a model that already keeps
the cores busy: the numbers say how far it is from paying.

    python benchmarks/bench_pack.py --model emt --steps 400
    python benchmarks/bench_pack.py --model chgnet --steps 60 --ks 1,2,4 --atoms 32
    python benchmarks/bench_pack.py --model sevennet-0 --device cuda --steps 400     # on a GPU
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import threading
import time
from pathlib import Path

from ase.build import bulk

from dynamat.engines.ipi_input import MDSettings
from dynamat.engines.pack import PackDriver
from dynamat.runner import RunOptions, supervise


def cells(k: int, n_atoms: int):
    reps = {4: 1, 32: 2, 108: 3, 256: 4}.get(n_atoms)
    if reps is None:
        raise SystemExit(f"--atoms must be one of 4, 32, 108, 256, got {n_atoms}")
    out = []
    for i in range(k):
        a = bulk("Cu", "fcc", a=3.61, cubic=True).repeat(reps)
        if i % 2:
            a.numbers[::4] = 79  # Cu3Au-like: another species mix, same size
        out.append(a)
    return out


def run_k(model: str, k: int, packed: bool, steps: int, n_atoms: int, workdir: Path, driver_args: tuple,
          threads: int | None) -> dict:
    pack = PackDriver(model, workdir / "pack.log", driver_args=driver_args, threads=threads) if packed else None
    records, errors = [None] * k, []

    def one(i, atoms):
        settings = MDSettings("svr", 1.0, 50.0, 10, steps, 300.0, seed=100 + i)
        opts = RunOptions(driver_args=driver_args, driver_threads=threads, pack=pack, warmup_steps=max(10, steps // 5))
        try:
            records[i] = supervise(model, atoms, settings, workdir / f"run{i}", opts)
        except Exception as exc:
            errors.append(str(exc))

    t0 = time.perf_counter()
    ts = [threading.Thread(target=one, args=(i, a)) for i, a in enumerate(cells(k, n_atoms))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    wall = time.perf_counter() - t0
    summary = pack.close() if pack is not None else None
    if errors:
        raise SystemExit(f"{'packed' if packed else 'solo'} K={k}: {errors[0]}")
    sps = [r.seconds_per_step_mean for r in records]  # the mean: a median of rates between 10-step rows quantises
    return {
        "steady_steps_per_s": sum(1.0 / s for s in sps if s),
        "wall_steps_per_s": k * steps / wall,
        "mean_ms_per_step": 1e3 * sorted(sps)[len(sps) // 2],
        "structures_per_call": None if summary is None else summary.get("structures_per_call_mean"),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="emt")
    ap.add_argument("--steps", type=int, default=400)
    ap.add_argument("--atoms", type=int, default=32)
    ap.add_argument("--ks", default="1,2,4,8")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch threads per driver [cores / K for solo runs]")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    driver_args = ("--device", args.device) if args.device != "cpu" else ()
    cores = os.cpu_count() or 1
    rows = []
    print(f"{args.model}, {args.atoms} atoms, {args.steps} steps per run, {cores} cores, device {args.device}")
    print(f"{'K':>3} {'solo steps/s':>13} {'packed steps/s':>15} {'ratio':>6} {'solo wall':>10} {'packed wall':>12} "
          f"{'structs/call':>12}")
    with tempfile.TemporaryDirectory(prefix="bench-pack-") as tmp:
        for k in [int(x) for x in args.ks.split(",")]:
            solo_threads = args.threads or max(1, cores // k)
            solo = run_k(args.model, k, False, args.steps, args.atoms, Path(tmp) / f"solo{k}", driver_args, solo_threads)
            packed = run_k(args.model, k, True, args.steps, args.atoms, Path(tmp) / f"pack{k}", driver_args,
                           args.threads or cores)
            ratio = packed["steady_steps_per_s"] / solo["steady_steps_per_s"]
            rows.append({"K": k, "solo": solo, "packed": packed, "ratio": ratio})
            spc = packed["structures_per_call"]
            print(f"{k:>3} {solo['steady_steps_per_s']:>13.1f} {packed['steady_steps_per_s']:>15.1f} {ratio:>6.2f} "
                  f"{solo['wall_steps_per_s']:>10.1f} {packed['wall_steps_per_s']:>12.1f} "
                  f"{'' if spc is None else f'{spc:.2f}':>12}", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"model": args.model, "atoms": args.atoms, "steps": args.steps,
                                               "device": args.device, "cores": cores, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
