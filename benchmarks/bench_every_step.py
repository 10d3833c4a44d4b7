#!/usr/bin/env python
"""Harness overhead per MD step of an every-step protocol (issue 25 §3): a 216-atom C/H molecular
crystal (18 benzene molecules) under the molecular protocol (i-PI Langevin, 0.5 fs, tau 10 fs, a frame
every step) with the do-nothing model (``dynamat-driver --model null``), i-PI's own "t/step" median.

Variants of the same run, repeats interleaved (A B C A B C ...) so load drift hits all alike:

* ``as written``: the input the server wing renders (``render_input``);
* ``no trajectories``: the same without any ``<trajectory>`` (the floor: i-PI's step, its properties
  row, the socket and the driver loop);
* i-PI's own trajectory options (format, flush) as edits of the rendered input.

Per-step cost of saving the frames = variant - no trajectories. Target: as written <= 3.0 ms/step.

    python benchmarks/bench_every_step.py [--steps 2000] [--repeats 3] [--variants all|main]
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import tempfile
from pathlib import Path

import numpy as np
from ase import Atoms, io
from ase.build import molecule

sys.path.insert(0, str(Path(__file__).parent))
from bench_md_overhead import BIN, ipi_ms_per_step  # noqa: E402

import shutil  # noqa: E402
import subprocess  # noqa: E402


def crystal() -> Atoms:
    """18 benzene molecules on a 3 x 3 x 2 grid (6.5 Å apart): 216 C/H atoms, periodic."""
    mol = molecule("C6H6")
    atoms = Atoms(cell=np.diag([19.5, 19.5, 13.0]), pbc=True)
    for i in range(3):
        for j in range(3):
            for k in range(2):
                m = mol.copy()
                m.translate([6.5 * i + 3.25, 6.5 * j + 3.25, 6.5 * k + 3.25])
                atoms += m
    return atoms


def render(atoms, steps: int, workdir: Path, sockdir: str) -> Path:
    from dynamat.engines.ipi_input import MDSettings, render_input

    io.write(workdir / "init.xyz", atoms, format="extxyz")
    text = render_input(MDSettings("langevin", 0.5, 10.0, 1, steps, 300.0, seed=7), init_file="init.xyz",
                        species=atoms.get_chemical_formula(mode="reduce"), sockets_prefix=sockdir, address="b",
                        verbosity="medium")
    (workdir / "input.xml").write_text(text)
    return workdir / "input.xml"


def _no_traj(x: str) -> str:
    return re.sub(r"<trajectory.*?</trajectory>", "", x, flags=re.S)


def _no_pos(x: str) -> str:
    return re.sub(r"<trajectory filename='pos'.*?</trajectory>", "", x, flags=re.S)


def _flush(x: str) -> str:
    return re.sub(r"(<trajectory[^>]*?)flush='1'", r"\1flush='100'", x)


VARIANTS = {
    "as written": lambda x: x,
    "no trajectories": _no_traj,
    "trajectories format='bin'": lambda x: x.replace("format='ase'", "format='bin'"),
    "trajectories flush='100'": lambda x: re.sub(r"(<trajectory[^>]*?)flush='1'", r"\1flush='100'", x),
    "no trajectories, properties flush='100'": lambda x: _no_traj(x).replace("flush='1'", "flush='100'"),
    "velocities only (ase)": lambda x: _no_pos(x),
    "trajectories bin, flush='100'": lambda x: _flush(x.replace("format='ase'", "format='bin'")),
    "velocities only bin": lambda x: _no_pos(x).replace("format='ase'", "format='bin'"),
    "velocities only bin, flush='100'": lambda x: _flush(_no_pos(x).replace("format='ase'", "format='bin'")),
}


def run(atoms, steps: int, edit) -> float:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        tmp = Path(tmp).resolve()
        sockdir = tempfile.mkdtemp(prefix="be")
        try:
            xml = render(atoms, steps, tmp, sockdir + "/")
            xml.write_text(edit(xml.read_text()))
            ipi = subprocess.Popen([str(BIN / "i-pi"), "input.xml"], cwd=tmp, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
            drv = subprocess.Popen([str(BIN / "dynamat-driver"), "--model", "null", "--unix", sockdir + "/b",
                                    "--connect-timeout", "60", "--stress-stride", "1"], cwd=tmp,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            log, _ = ipi.communicate(timeout=3600)
            _, err = drv.communicate(timeout=120)
            if ipi.returncode or drv.returncode:
                raise RuntimeError(log[-2000:] + err[-2000:])
            return ipi_ms_per_step(log)
        finally:
            shutil.rmtree(sockdir, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all)")
    args = ap.parse_args()
    atoms = crystal()
    names = [n for n in VARIANTS if args.only is None or n in args.only]
    rows = {k: [] for k in names}
    for _ in range(args.repeats):
        for name in names:
            rows[name].append(run(atoms, args.steps, VARIANTS[name]))
    base = statistics.median(rows["no trajectories"]) if "no trajectories" in rows else float("nan")
    print(f"Every-step protocol, {len(atoms)} C/H atoms, Langevin 0.5 fs, null model, dynamat-driver "
          f"({args.steps} steps x {args.repeats}; ms/step, median of i-PI's t/step):")
    for name, v in rows.items():
        m = statistics.median(v)
        print(f"  {name:42s} {m:6.3f}  (saving frames {m - base:+.3f}; ratio to no trajectories {m / base:.2f})"
              f"   runs {[round(x, 3) for x in v]}")


if __name__ == "__main__":
    main()
