#!/usr/bin/env python
"""Peak memory of ``dynamat reference import`` on a long extxyz (target: below 1 GB at 50,000 frames).

Writes an extxyz of ``--frames`` frames of 64-atom silicon with energies, forces and stress, in the
format ASE's extxyz writer produces (Lattice, Properties=species:S:1:pos:R:3:forces:R:3, energy,
stress, pbc), the atoms oscillating about their sites at ``--temperature``; then imports it with
:func:`dynamat.io.importers.import_reference` in a fresh process and prints that process's peak
resident memory (``ru_maxrss``), the time, and the frame count read back.

    python benchmarks/bench_import_memory.py [--frames 50000] [--atoms-per-side 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

CHILD = r"""
import json, resource, sys, time
from dynamat.io.importers import import_reference
from dynamat.io.reference_h5 import reference_n_frames
src, out, dt = sys.argv[1], sys.argv[2], float(sys.argv[3])
t0 = time.perf_counter()
[res] = import_reference([src], out, name="Si64_1000K", dt_fs=dt, temperature_K=1000.0)
wall = time.perf_counter() - t0
peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
print(json.dumps({"frames": reference_n_frames(out, "Si64_1000K"), "peak_MB": peak_mb, "seconds": wall,
                  "equipartition_K": res.check.temperature_K, "labels": res.labels}))
"""


def write_extxyz(path: Path, n_frames: int, reps: int, temperature_K: float, dt_fs: float) -> int:
    from ase import units
    from ase.build import bulk

    atoms = bulk("Si", "diamond", a=5.43, cubic=True).repeat(reps)
    n = len(atoms)
    rng = np.random.default_rng(0)
    nu = rng.uniform(2, 15, size=(n, 3)) * 1e-3  # 1/fs
    phi = rng.uniform(0, 2 * np.pi, size=(n, 3))
    conv = units._amu * 1e-20 / 1e-30 / units._e
    amp = np.sqrt(2 * units.kB * temperature_K / (atoms.get_masses()[:, None] * (2 * np.pi * nu) ** 2 * conv))
    lattice = " ".join(f"{x:.8f}" for x in atoms.cell.array.reshape(-1))
    with open(path, "w") as fh:
        for i in range(n_frames):
            pos = atoms.positions + amp * np.sin(2 * np.pi * nu * i * dt_fs + phi)
            forces = -(2 * np.pi * nu) ** 2 * (pos - atoms.positions) * atoms.get_masses()[:, None] * conv
            stress = rng.normal(scale=1e-3, size=(3, 3))
            stress = 0.5 * (stress + stress.T)
            fh.write(f"{n}\n")
            fh.write(f'Lattice="{lattice}" Properties=species:S:1:pos:R:3:forces:R:3 energy={-5.4 * n + rng.normal():.8f} '
                     f'stress="{" ".join(f"{x:.8e}" for x in stress.reshape(-1))}" md_step={i} pbc="T T T"\n')
            fh.write("".join(f"Si {p[0]:16.8f}{p[1]:16.8f}{p[2]:16.8f}{f[0]:16.8f}{f[1]:16.8f}{f[2]:16.8f}\n"
                             for p, f in zip(pos, forces)))
    return n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=50_000)
    ap.add_argument("--atoms-per-side", type=int, default=2, help="diamond Si cells per side (2: 64 atoms)")
    ap.add_argument("--dt-fs", type=float, default=1.0)
    ap.add_argument("--keep", type=Path, default=None, help="folder to keep the files in")
    args = ap.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="dynamat_bench_import_"))
    work.mkdir(parents=True, exist_ok=True)
    src, out = work / "si_aimd.extxyz", work / "si_ref.h5"
    out.unlink(missing_ok=True)
    t0 = time.perf_counter()
    n = write_extxyz(src, args.frames, args.atoms_per_side, 1000.0, args.dt_fs)
    print(f"wrote {src}: {args.frames} frames of {n} atoms, {src.stat().st_size / 1e6:.0f} MB "
          f"in {time.perf_counter() - t0:.0f} s", flush=True)
    proc = subprocess.run([sys.executable, "-c", CHILD, str(src), str(out), str(args.dt_fs)],
                          check=False, capture_output=True, text=True)
    if proc.returncode:
        sys.exit(proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"import failed ({proc.returncode})")
    res = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"imported {res['frames']} frames in {res['seconds']:.0f} s ({res['frames'] / res['seconds']:.0f} frames/s); "
          f"peak resident memory {res['peak_MB']:.0f} MB (target < 1024 MB); "
          f"h5 {out.stat().st_size / 1e6:.0f} MB; equipartition {res['equipartition_K']:.0f} K at 1000 K; "
          f"labels {res['labels']}")
    if args.keep is None:
        src.unlink()
        out.unlink(missing_ok=True)


if __name__ == "__main__":
    main()
