#!/usr/bin/env python
"""A model call with glibc's default malloc against the driver's setting (``dynamat_driver.allocator``).

Each case runs in a fresh process, because malloc's settings are per process and glibc's default adapts as
a process runs. The two cases alternate ``--repeats`` times. Each process loads the model through the
driver's registry, warms it up and times ``--calls`` calls (energy and forces, 1 thread) on a rattled fcc Cu
cell. It prints CPU time (user + sys), system time and minor page faults per call, and the ratio of the
driver's setting to the default.

    python benchmarks/bench_allocator.py [--model sevennet-0] [--repeat-cell 2] [--calls 8] [--repeats 2]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

ONE = r"""
import json, resource, sys
sys.path.insert(0, {drivers!r})
from dynamat_driver.allocator import keep_freed_memory
said = keep_freed_memory() if {tuned} else "default"
import torch
torch.set_num_threads(1)
from ase.build import bulk
from dynamat_driver.models import load_model
atoms = bulk("Cu", "fcc", a=3.5898, cubic=True).repeat({rep})
atoms.rattle(0.05, seed=1)
m = load_model({model!r}, device="cpu")
for i in range(3):
    m.calculate(atoms, i == 0, stress=False)
r0 = resource.getrusage(resource.RUSAGE_SELF)
for _ in range({calls}):
    m.calculate(atoms, False, stress=False)
r1 = resource.getrusage(resource.RUSAGE_SELF)
n = {calls}
print(json.dumps(dict(said=said, n_atoms=len(atoms),
                      cpu_ms=1e3 * (r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime) / n,
                      sys_ms=1e3 * (r1.ru_stime - r0.ru_stime) / n, faults=(r1.ru_minflt - r0.ru_minflt) / n)))
"""


def one(model: str, rep: int, calls: int, tuned: bool) -> dict:
    drivers = str(Path(__file__).resolve().parents[1] / "drivers")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "GLIBC_TUNABLES"}
    code = ONE.format(drivers=drivers, tuned=tuned, rep=rep, model=model, calls=calls)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="sevennet-0")
    ap.add_argument("--repeat-cell", type=int, default=2, help="fcc Cu, 4·n³ atoms")
    ap.add_argument("--calls", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    a = ap.parse_args()
    runs: dict = {False: [], True: []}
    for _ in range(a.repeats):  # alternating, so load elsewhere hits both alike
        for tuned in (False, True):
            runs[tuned].append(one(a.model, a.repeat_cell, a.calls, tuned))
    best = {k: min(v, key=lambda r: r["cpu_ms"]) for k, v in runs.items()}
    print(f"{a.model}, {best[True]['n_atoms']} atoms, 1 thread, {a.calls} calls per process, best of {a.repeats}:")
    for tuned, label in ((False, "glibc default malloc"), (True, "driver's setting")):
        r = best[tuned]
        print(f"  {label:22s} {r['cpu_ms']:8.1f} ms CPU per call (sys {r['sys_ms']:6.1f} ms), "
              f"{r['faults']:8.0f} minor faults per call   runs {[round(x['cpu_ms'], 1) for x in runs[tuned]]}")
    print(f"  ({best[True]['said']})")
    print(f"  ratio (driver's setting / default): {best[True]['cpu_ms'] / best[False]['cpu_ms']:.2f}x CPU")


if __name__ == "__main__":
    main()
