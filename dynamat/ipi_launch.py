"""i-PI's own program, its binary trajectory frames written in one call instead of six (the same bytes).

i-PI writes a ``format='bin'`` frame (cell, atom count, values, names, title) with six ``ndarray.tofile``
calls on its text-mode file; numpy flushes, duplicates, reopens and seeks the file descriptor for each. At a
frame every step (the velocities of the molecular protocols, issue 25 §3) that was ~0.7 ms of a ~4 ms step at
216 atoms (``benchmarks/bench_every_step.py``). Here each frame is joined into one ``bytes`` and written, then
flushed through to the file as ``tofile`` left it, so a kill loses what it lost before. Everything else is
i-PI's: its main, its integrators, its checkpoints.

The replacement is installed only after it has written a probe frame to exactly the bytes i-PI's own
writer writes (a later i-PI that changes its format keeps its own writer).

    python -m dynamat.ipi_launch input.xml      # as `i-pi input.xml`
"""

from __future__ import annotations

import os
import runpy
import sys
import tempfile
from types import SimpleNamespace

import numpy as np


def frame_bytes(atoms, cell, title: str = "", cell_conv: float = 1.0, atoms_conv: float = 1.0) -> bytes:
    """One frame as i-PI's ``io_binary.print_binary`` lays it out (native byte order, names as UCS-4)."""
    names = "|".join(atoms.names)
    return b"".join([
        (np.asarray(cell.h).flatten() * cell_conv).tobytes(),
        np.asarray([atoms.natoms]).tobytes(),
        (np.asarray(atoms.q) * atoms_conv).tobytes(),
        np.asarray([len(names)]).tobytes(),
        np.asarray([names]).tobytes(),
        np.asarray([title]).tobytes(),
    ])


def print_binary(atoms, cell, filedesc=sys.stdout, title="", cell_conv=1.0, atoms_conv=1.0):
    """``io_binary.print_binary``'s signature and bytes, in one write."""
    data = frame_bytes(atoms, cell, title, cell_conv, atoms_conv)
    filedesc.flush()  # text the wrapper still holds goes first, as tofile's own flush sent it
    raw = getattr(filedesc, "buffer", filedesc)
    raw.write(data)
    raw.flush()


def _probe(writer) -> bytes:
    """The bytes ``writer`` puts in a text-mode file for a small frame with unequal values and names."""
    atoms = SimpleNamespace(natoms=3, names=["O", "H", "Hx"], q=np.arange(9, dtype=float) * 1.25 - 3.0)
    cell = SimpleNamespace(h=np.array([[4.0, 0.0, 0.0], [0.5, 5.0, 0.0], [0.25, 0.75, 6.0]]))
    fd, path = tempfile.mkstemp(prefix="dynamat-ipi-probe-")
    os.close(fd)
    try:
        with open(path, "w") as f:
            writer(atoms, cell, f, title="Step:  1  positions{angstrom}", cell_conv=0.52917721, atoms_conv=2.0)
            writer(atoms, cell, f, title="Step:  2")
        with open(path, "rb") as f:
            return f.read()
    finally:
        os.unlink(path)


def install() -> bool:
    """Replaces i-PI's binary frame writer where ours writes its bytes exactly; True if it did."""
    from ipi.utils.io.backends import io_binary

    try:
        same = _probe(io_binary.print_binary) == _probe(print_binary)
    except Exception:  # an i-PI whose writer takes other arguments: keep it
        same = False
    if same:
        io_binary.print_binary = print_binary
    return same


def main(argv: list[str] | None = None) -> None:
    from dynamat.processes import executable

    script = executable("i-pi")
    args = [script, *(sys.argv[1:] if argv is None else argv)]
    try:
        install()
    except ImportError:  # an i-pi of another environment (found on PATH): run it as it is
        os.execv(script, args)
    sys.argv = args
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
