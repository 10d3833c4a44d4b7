"""The one extxyz reader: ``dynamat score --trajectory`` and ``dynamat reference import`` both read here,
so one file scores as it imports.

Fallbacks, the same for both paths (:func:`frame_fields`):

* energy: ``energy``, else ``free_energy`` (eV);
* stress: ``stress`` as Voigt ``[xx, yy, zz, yz, xz, xy]`` or as a 3×3 matrix (eV/Å³, ASE's sign),
  else ``virial`` (eV, 3×3 or 9 numbers) as stress = −virial / V (:func:`dynamat.trajectory.stress_from_virial`);
* velocities from ``momenta`` (what ASE writes) in ASE units, converted to Å/fs; a ``velocities`` column is
  not read: no writer states its units, and ASE's ``get_velocities`` gave zeros for it (no momenta), which
  would pass for atoms at rest.

A file whose tail was cut anywhere (a killed job, a full disk) keeps every complete frame; the last,
incomplete one is dropped with one line on stderr (:func:`complete_frames` counts them). A frame is
complete when its atom-count line, comment line and every atom line end in a newline, which every
extxyz writer (ASE's, i-PI's) puts there: a line cut in the middle of a number cannot be told from a
shorter number otherwise.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import ase.io
import numpy as np
from ase import units

from dynamat.errors import DynamatError
from dynamat.trajectory import Trajectory, stress_from_virial, to_voigt


def complete_frames(path: str | Path) -> tuple[int, bool]:
    """(number of complete leading frames, whether anything incomplete follows them) of an xyz/extxyz file.

    Reads the file once, line by line (memory does not grow with it). A header that is not an atom count
    stops the count: what follows is left to the parser, which says what is wrong with it.
    """
    n_complete = 0
    with open(path, "rb") as fh:
        while True:
            head = fh.readline()
            if not head.strip():  # the end, or a blank line, where ASE stops reading too
                return n_complete, False
            try:
                n_atoms = int(head)
            except ValueError:
                return n_complete, False
            if not head.endswith(b"\n"):
                return n_complete, True
            body = [fh.readline() for _ in range(n_atoms + 1)]
            if not all(line.endswith(b"\n") for line in body):
                return n_complete, True
            _skip_vec_lines(fh)
            n_complete += 1


def _skip_vec_lines(fh) -> None:
    """ASE's VEC1..VEC3 lines (a non-periodic cell) after a frame belong to it."""
    while True:
        pos = fh.tell()
        if not fh.readline().lstrip().startswith(b"VEC"):
            fh.seek(pos)
            return


def dropped_frame_note(path: str | Path, kept: int) -> str:
    return (f"{path}: the last frame is incomplete (the file was cut mid-frame): dropped it, "
            f"kept the {kept} complete frame{'s' if kept != 1 else ''} before it")


def warn(note: str) -> None:
    """A reader's note for the user: one line on stderr (the CLI's channel for what it did not refuse)."""
    print(f"dynamat: warning: {note}", file=sys.stderr)


def frame_fields(atoms) -> dict:
    """One frame of any ASE-read format as arrays, by the fallbacks in the module docstring.

    Keys: positions (N, 3) Å, cell (3, 3) Å, and where present velocities (N, 3) Å/fs, energy eV,
    forces (N, 3) eV/Å, stress (6,) eV/Å³ Voigt, md_step, time_fs.
    """
    out = {"positions": atoms.get_positions(), "cell": np.array(atoms.cell.array)}
    if "momenta" in atoms.arrays:
        out["velocities"] = atoms.get_velocities() * units.fs
    res = atoms.calc.results if atoms.calc is not None else {}
    e = res.get("energy", res.get("free_energy"))
    if e is not None:
        out["energy"] = float(e)
    if res.get("forces") is not None:
        out["forces"] = np.asarray(res["forces"], float)
    if res.get("stress") is not None:
        out["stress"] = to_voigt(res["stress"])
    elif "virial" in atoms.info and atoms.cell.volume > 0:
        out["stress"] = stress_from_virial(atoms.info["virial"], atoms.cell.volume)
    step = atoms.info.get("md_step", atoms.info.get("step"))
    if step is not None:
        out["md_step"] = int(step)
    if "time_fs" in atoms.info:
        out["time_fs"] = float(atoms.info["time_fs"])
    return out


def iread_extxyz(path: str | Path, notes: list[str] | None = None) -> Iterator:
    """ASE Atoms, one per complete frame of ``path``; an incomplete last frame is dropped and said
    (on stderr, and appended to ``notes`` when given). ASE's parse errors become one-line DynamatErrors."""
    path = Path(path)
    if not path.exists():
        raise DynamatError(f"trajectory file not found: {path}")
    n, cut = complete_frames(path)
    if cut:
        note = dropped_frame_note(path, n)
        warn(note)
        if notes is not None:
            notes.append(note)
    if n == 0 and cut:
        raise DynamatError(f"{path} holds no complete frame (the file was cut in its first frame)")
    try:
        # ASE indexes the whole file first; the slice keeps it from parsing the cut frame
        yield from ase.io.iread(path, index=slice(0, n) if cut else ":", format="extxyz")
    except DynamatError:
        raise
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds on malformed files
        raise DynamatError(f"cannot read {path} as extxyz: {type(exc).__name__}: {exc}") from None


def read_extxyz(path: str | Path, dt_fs: float, name: str = "") -> Trajectory:
    """Reads positions, cells and, where present, velocities, energies, forces and stress.

    ``dt_fs`` is the time between the frames in the file (fs); an extxyz carries no reliable time.
    A field is kept when every frame has it. Notes (a dropped incomplete frame) go to ``Trajectory.notes``.
    """
    path = Path(path)
    cols: dict[str, list] = {k: [] for k in ("positions", "cell", "velocities", "energy", "forces", "stress")}
    numbers = pbc = None
    notes: list[str] = []
    for atoms in iread_extxyz(path, notes):
        if numbers is None:
            numbers, pbc = atoms.numbers.copy(), atoms.pbc.copy()
        elif len(atoms) != len(numbers) or (atoms.numbers != numbers).any():
            raise DynamatError(f"{path}: the atoms change between frames")
        for key, value in frame_fields(atoms).items():
            if key in cols:
                cols[key].append(value)
    if numbers is None:
        raise DynamatError(f"{path} holds no frames")
    m = len(cols["positions"])
    full = lambda key: np.array(cols[key]) if len(cols[key]) == m else None  # noqa: E731
    return Trajectory(
        numbers=numbers,
        positions=np.array(cols["positions"]),
        cells=np.array(cols["cell"]),
        pbc=pbc,
        dt_fs=dt_fs,
        velocities=full("velocities"),
        energies=full("energy"),
        forces=full("forces"),
        stress=full("stress"),
        name=name or path.stem,
        notes=notes,
    )
