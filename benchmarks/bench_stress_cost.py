#!/usr/bin/env python
"""What the stress costs per family: the adapter's energy + forces against energy + forces + stress
(``Model.calculate(..., stress=False/True)``, the two calls ``dynamat-driver --stress-stride``
alternates between), one 32-atom Cu/Au cell, one torch thread, calls interleaved (A B A B ...) so
that load drift hits both alike; medians.

Each case runs in the Python of its family's environment:

    python benchmarks/bench_stress_cost.py \\
        --case chgnet --case sevennet-0 \\
        --case mace-mp-0=.venvs/zoo-tiny-models/mace-*/tiny.model@.venvs/mace/bin/python \\
        --case mattersim-v1-5m=.venvs/zoo-tiny-models/mattersim-*/tiny-mattersim.pth@.venvs/zoo/bin/python \\
        --case uma-s-p1=.venvs/zoo-tiny-models/uma-*/tiny-uma.pt@.venvs/zoo/bin/python

``NAME[=MODEL_PATH][@PYTHON]``: a glob in MODEL_PATH takes the newest match (the zoo tests leave
their tiny random models there). Families without ``skips_stress`` print their e+f+s time only.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import subprocess
import sys

WORKER = r"""
import json, statistics, sys, time, warnings
warnings.simplefilter("ignore")
import numpy as np
import torch
torch.set_num_threads(1)
from ase.build import bulk
from ase.geometry import cellpar_to_cell
from dynamat_driver.models import load_model
name, path, reps = sys.argv[1], sys.argv[2] or None, int(sys.argv[3])
m = load_model(name, model_path=path)
a = bulk("Cu", "fcc", a=3.75, cubic=True).repeat((2, 2, 2))
a.symbols[[0, 5, 10, 23, 31]] = "Au"
a.set_cell(cellpar_to_cell([7.6, 7.4, 7.5, 88.0, 93.0, 91.0]), scale_atoms=True)
a.rattle(0.05, seed=3)
kinds = (True, False) if m.skips_stress else (True,)
def call(stress):
    return m.calculate(a, False, stress=stress) if m.skips_stress else m.calculate(a, False)
for s in kinds:
    call(s)  # warm-up
t = {s: [] for s in kinds}
for _ in range(reps):
    for s in kinds:
        t0 = time.perf_counter()
        call(s)
        t[s].append(time.perf_counter() - t0)
print(json.dumps({"model": name, "skips_stress": bool(m.skips_stress), "n_params": m.n_params,
                  "with_ms": 1e3 * statistics.median(t[True]),
                  "without_ms": 1e3 * statistics.median(t[False]) if False in t else None}))
"""


def parse_case(text: str) -> tuple[str, str, str]:
    rest, _, python = text.partition("@")
    name, _, path = rest.partition("=")
    if path and any(c in path for c in "*?["):
        hits = sorted(glob.glob(path), key=os.path.getmtime)
        if not hits:
            sys.exit(f"bench_stress_cost: no file matches {path}")
        path = hits[-1]
    return name, path, python or sys.executable


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--case", action="append", required=True, help="NAME[=MODEL_PATH][@PYTHON]")
    ap.add_argument("--reps", type=int, default=10)
    args = ap.parse_args()
    print("32-atom Cu/Au cell, 1 thread, median of interleaved calls (ms per call):")
    print(f"  {'model':18s} {'params':>10s} {'e+f+s':>9s} {'e+f':>9s} {'ratio':>7s}")
    for text in args.case:
        name, path, python = parse_case(text)
        res = subprocess.run([python, "-c", WORKER, name, path, str(args.reps)], capture_output=True, text=True)
        if res.returncode != 0:
            print(f"  {name:18s} failed: {res.stderr.strip().splitlines()[-1] if res.stderr.strip() else res.returncode}")
            continue
        r = json.loads(res.stdout.strip().splitlines()[-1])
        tag = "" if not path else " (tiny)"
        if r["without_ms"] is None:
            print(f"  {name + tag:18s} {r['n_params'] or 0:10d} {r['with_ms']:9.1f} {'—':>9s} {'—':>7s}  (stress always computed)")
        else:
            print(f"  {name + tag:18s} {r['n_params'] or 0:10d} {r['with_ms']:9.1f} {r['without_ms']:9.1f} "
                  f"{r['without_ms'] / r['with_ms']:7.2f}")


if __name__ == "__main__":
    main()
