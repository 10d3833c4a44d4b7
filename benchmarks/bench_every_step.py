#!/usr/bin/env python
"""Harness overhead per MD step of an every-step protocol (issue 25 §3): a 216-atom C/H molecular
crystal (18 benzene molecules) under the molecular protocol (i-PI Langevin, 0.5 fs, tau 10 fs, a frame
every step) with the do-nothing model (``dynamat-driver --model null``), i-PI's own "t/step" median.

Variants of the same run, repeats interleaved (A B C A B C ...) so load drift hits all alike:

* ``before``: the two extxyz trajectories (positions, velocities) the server wing wrote before, flushed
  (and fsynced by i-PI) every frame;
* ``no trajectories``: the same input without any ``<trajectory>`` (the floor: i-PI's step, its
  properties row, flushed every step as before, the socket and the driver loop), and the same with the
  properties flushed at restart points only, as every-step runs now do;
* ``ours``: as dynamat runs it now (``render_input(record_frames=True)`` and ``dynamat-driver
  --record``): the driver records cell, positions, energy, forces and virial; i-PI writes binary
  velocities, flushed at its restart points;
* i-PI's binary trajectories for both (the alternative without the driver's record);
* the driver's record alone (no velocities), and ours with plain ``i-pi`` instead of ``dynamat.ipi_launch`` (i-PI
  with its binary frames written in one call each, the same bytes): split what ours costs between the record,
  the velocities, and what the launcher saves of them.

Per-step cost of saving the frames = variant - no trajectories. Target (issue 25 §3): as written
<= 3.0 ms/step where the floor is ~2.6 ms, i.e. saving the frames <= ~0.4 ms per step.

    python benchmarks/bench_every_step.py [--steps 2000] [--repeats 3] [--only NAME ...]
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


def render(atoms, steps: int, workdir: Path, sockdir: str, record: bool) -> Path:
    from dynamat.engines.ipi_input import MDSettings, render_input

    io.write(workdir / "init.xyz", atoms, format="extxyz")
    text = render_input(MDSettings("langevin", 0.5, 10.0, 1, steps, 300.0, seed=7), init_file="init.xyz",
                        species=atoms.get_chemical_formula(mode="reduce"), sockets_prefix=sockdir, address="b",
                        verbosity="medium", record_frames=record)
    (workdir / "input.xml").write_text(text)
    return workdir / "input.xml"


#: the two trajectories as the server wing wrote them before issue 25 §3 (extxyz, flushed every frame)
BEFORE = ("<trajectory filename='pos' stride='1' format='ase' flush='1'> positions{ase} </trajectory>\n"
          "    <trajectory filename='vel' stride='1' format='ase' flush='1'> velocities{ase} </trajectory>")
_TRAJ = re.compile(r"<trajectory.*?</trajectory>", re.S)


def _props_every_step(x: str) -> str:
    """The properties flushed (and fsynced by i-PI) every row, as before."""
    return re.sub(r"(<properties[^>]*?)flush='\d+'", r"\1flush='1'", x)


def _before(x: str) -> str:
    return _props_every_step(_TRAJ.sub("", x)).replace("<checkpoint", BEFORE + "\n    <checkpoint", 1)


#: i-PI as `i-pi input.xml` runs it, and as dynamat starts it (its binary frames in one write each)
PLAIN, LAUNCHER = [str(BIN / "i-pi")], [str(BIN / "python"), "-m", "dynamat.ipi_launch"]

#: name -> (the driver records the frames, edit of the rendered input, i-PI command)
VARIANTS = {
    "before: extxyz positions + velocities": (False, _before, PLAIN),
    "no trajectories (floor)": (False, lambda x: _props_every_step(_TRAJ.sub("", x)), PLAIN),
    "floor, properties flushed every 100": (False, lambda x: _TRAJ.sub("", x), PLAIN),
    "ours: driver record + binary velocities": (True, lambda x: x, LAUNCHER),
    # the split of ours: what the record costs, and what i-PI's velocity writer costs with and without the launcher
    "  of which the driver record alone": (True, lambda x: _TRAJ.sub("", x), LAUNCHER),
    "  ours with i-PI's own binary writer": (True, lambda x: x, PLAIN),
    "i-PI binary positions + velocities": (False, lambda x: x, PLAIN),
}


def run(atoms, steps: int, record: bool, edit, ipi_cmd: list[str]) -> float:
    with tempfile.TemporaryDirectory(dir=".") as tmp:
        tmp = Path(tmp).resolve()
        sockdir = tempfile.mkdtemp(prefix="be")
        try:
            xml = render(atoms, steps, tmp, sockdir + "/", record)
            xml.write_text(edit(xml.read_text()))
            ipi = subprocess.Popen(ipi_cmd + ["input.xml"], cwd=tmp, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, text=True)
            drv = subprocess.Popen([str(BIN / "dynamat-driver"), "--model", "null", "--unix", sockdir + "/b",
                                    "--connect-timeout", "60", "--stress-stride", "1",
                                    *(["--record", str(tmp / "frames.f64")] if record else [])], cwd=tmp,
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
    ap.add_argument("--only", nargs="*", default=None, help="variant names to run (default: all; the floor always)")
    args = ap.parse_args()
    atoms = crystal()
    names = [n for n in VARIANTS if args.only is None or n in args.only or n.startswith("no trajectories")]
    rows = {k: [] for k in names}
    for _ in range(args.repeats):
        for name in names:
            rows[name].append(run(atoms, args.steps, *VARIANTS[name]))
    base = statistics.median(rows["no trajectories (floor)"])
    print(f"Every-step protocol, {len(atoms)} C/H atoms, Langevin 0.5 fs, null model, dynamat-driver "
          f"({args.steps} steps x {args.repeats}; ms/step, median of i-PI's t/step):")
    for name, v in rows.items():
        m = statistics.median(v)
        print(f"  {name:42s} {m:6.3f}  (saving frames {m - base:+.3f}; ratio to the floor {m / base:.2f})"
              f"   runs {[round(x, 3) for x in v]}")
    if len(rows) == len(VARIANTS):
        med = {k: statistics.median(v) for k, v in rows.items()}
        b, o = med["before: extxyz positions + velocities"], med["ours: driver record + binary velocities"]
        f1, f100 = med["no trajectories (floor)"], med["floor, properties flushed every 100"]
        print(f"  => as written: before {b:.3f} ms/step, ours {o:.3f} ms/step ({b / o:.2f}x faster; ours / the floor as "
              f"before {o / f1:.2f}: target <= 3.0 / 2.6 = 1.15). Saving the frames costs {b - f1:.3f} ms/step before "
              f"(over the floor as before), {o - f100:.3f} now (over the floor with the same properties flushing).")
        r, own = med["  of which the driver record alone"], med["  ours with i-PI's own binary writer"]
        print(f"     of which the driver's record {r - f100:+.3f} and i-PI's binary velocities {o - r:+.3f} ms/step; "
              f"with i-PI's own writer (six flushing ndarray.tofile calls per frame) the velocities cost {own - r:+.3f}: "
              f"the launcher's one write per frame makes ours {own / o:.2f}x faster.")


if __name__ == "__main__":
    main()
