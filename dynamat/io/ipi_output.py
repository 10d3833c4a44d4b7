"""Reads what an i-PI run leaves (properties file and extxyz trajectories) into a Trajectory.

i-PI appends to its outputs when it restarts, so rows and frames are keyed by MD step and the last
copy of each step wins: a resumed run reads back with no duplicated frames.
"""

from __future__ import annotations

import io
import re
from pathlib import Path

import numpy as np
from ase import units
from ase.data import atomic_numbers

from dynamat.errors import DynamatError
from dynamat.trajectory import Trajectory

_COL = re.compile(r"#\s*(?:column|cols\.)\s+(\d+)(?:-(\d+))?\s+-->\s+([^\s:]+)")
_STEP = re.compile(r"Step:\s*(\d+)")
_LATTICE = re.compile(r'Lattice="([^"]+)"')


def read_properties(path: str | Path) -> dict[str, np.ndarray]:
    """i-PI properties file → {name with units: column(s)}, deduplicated by step (last wins)."""
    path = Path(path)
    names: dict[str, tuple[int, int]] = {}
    rows = []
    with open(path) as fh:
        for line in fh:
            if line.startswith("#"):
                m = _COL.match(line)
                if m:
                    lo = int(m.group(1)) - 1
                    hi = int(m.group(2) or m.group(1))
                    names[m.group(3)] = (lo, hi)
            elif line.strip():
                rows.append(line)
    if not rows:
        return {k: np.empty((0,) if b - a == 1 else (0, b - a)) for k, (a, b) in names.items()}
    data = np.loadtxt(io.StringIO("".join(rows)), ndmin=2)
    out = {k: (data[:, a] if b - a == 1 else data[:, a:b]) for k, (a, b) in names.items()}
    if "step" in out:
        keep = _last_unique(out["step"].astype(int))
        out = {k: v[keep] for k, v in out.items()}
    return out


def last_properties_row(path: str | Path) -> list[float] | None:
    """The last data row of an i-PI properties file, reading only its tail (cheap while i-PI runs)."""
    try:
        with open(path, "rb") as fh:
            fh.seek(0, 2)
            size = fh.tell()
            fh.seek(max(0, size - 8192))
            tail = fh.read().decode(errors="replace").splitlines()
    except OSError:
        return None
    # the first line of a tail read mid-file may be cut
    for line in reversed(tail[1:] if size > 8192 else tail):
        if line.strip() and not line.startswith("#"):
            try:
                return [float(x) for x in line.split()]
            except ValueError:
                continue
    return None


def _last_unique(steps: np.ndarray) -> np.ndarray:
    """Indices of the last occurrence of each step, in increasing step order."""
    rev = steps[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)
    return np.sort(len(steps) - 1 - first_in_rev)


def read_ipi_xyz(path: str | Path) -> dict[str, np.ndarray]:
    """An i-PI ``format='ase'`` trajectory → steps (M,), symbols (N,), cells (M,3,3) Å, data (M,N,k).

    Parsed with numpy in one pass; the atom count must not change.
    """
    path = Path(path)
    with open(path) as fh:
        lines = fh.read().splitlines()
    if not lines:
        return {"steps": np.empty(0, int), "cells": np.empty((0, 3, 3)), "data": None}
    n = int(lines[0])
    block = n + 2
    m = len(lines) // block
    if m == 0:
        raise DynamatError(f"{path}: truncated trajectory")
    comments = lines[1 : m * block : block]
    steps = np.array([int(_STEP.search(c).group(1)) for c in comments])
    cells = np.array([np.array(_LATTICE.search(c).group(1).split(), float).reshape(3, 3) for c in comments])
    body = [lines[i * block + 2 : (i + 1) * block] for i in range(m)]
    symbols = [ln.split(None, 1)[0] for ln in body[0]]
    flat = "\n".join("\n".join(b) for b in body)
    ncol = len(body[0][0].split())
    data = np.loadtxt(io.StringIO(flat), usecols=range(1, ncol), ndmin=2).reshape(m, n, ncol - 1)
    keep = _last_unique(steps)
    return {"steps": steps[keep], "symbols": symbols, "cells": cells[keep], "data": data[keep]}


def read_ipi_run(run_dir: str | Path, prefix: str = "simulation", name: str = "") -> Trajectory:
    """Positions, velocities (Å/fs), configurational stress and potential energy of an i-PI run.

    The stress is minus i-PI's ``virial_md`` (the configurational part only; ``pressure_md`` would
    add the kinetic term). Frames are those steps present in both trajectory files.
    """
    run_dir = Path(run_dir)
    pos_file = run_dir / f"{prefix}.pos_0.extxyz"
    if not pos_file.exists():
        raise DynamatError(f"no i-PI position trajectory in {run_dir} (expected {pos_file.name})")
    pos = read_ipi_xyz(pos_file)
    if pos["data"] is None or len(pos["steps"]) == 0:
        raise DynamatError(f"{pos_file} holds no frames")
    steps = pos["steps"]
    velocities = None
    vel_file = run_dir / f"{prefix}.vel_0.extxyz"
    if vel_file.exists():
        vel = read_ipi_xyz(vel_file)
        if vel["data"] is not None:
            steps = np.intersect1d(steps, vel["steps"])
            # columns after species: pos(3) then velocities(3) in ASE units
            v = vel["data"][np.searchsorted(vel["steps"], steps), :, -3:]
            velocities = v * units.fs
    idx = np.searchsorted(pos["steps"], steps)
    props_file = run_dir / f"{prefix}.out"
    stress = energies = None
    dt_fs = None
    if props_file.exists():
        props = read_properties(props_file)
        if "step" in props and len(props["step"]):
            p_steps = props["step"].astype(int)
            common = np.intersect1d(steps, p_steps)
            if len(common) == len(steps):
                j = np.searchsorted(p_steps, steps)
                if "virial_md{ev/ang3}" in props:
                    vir = props["virial_md{ev/ang3}"][j]  # i-PI order xx yy zz xy xz yz
                    stress = -vir[:, [0, 1, 2, 5, 4, 3]]
                if "potential{electronvolt}" in props:
                    energies = props["potential{electronvolt}"][j]
                if "time{femtosecond}" in props and len(steps) > 1:
                    t = props["time{femtosecond}"][j]
                    dt_fs = float(np.median(np.diff(t)))
    numbers = np.array([atomic_numbers[s] for s in pos["symbols"]])
    return Trajectory(
        numbers=numbers,
        positions=pos["data"][idx, :, :3],
        cells=pos["cells"][idx],
        dt_fs=dt_fs,
        velocities=velocities,
        energies=energies,
        stress=stress,
        steps=steps,
        name=name or run_dir.name,
    )
