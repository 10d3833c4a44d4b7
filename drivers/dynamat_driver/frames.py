"""``dynamat-driver --record FILE``: the frames of the MD steps i-PI writes, recorded by the driver.

The driver receives every structure i-PI integrates in float64 and knows, from the stress schedule
(:mod:`dynamat_driver.stress`), the MD step of each request. For the steps whose outputs i-PI writes
(multiples of the schedule's stride) it appends one fixed-size record, in the layout of
:data:`dynamat_driver.contract.FRAMES_MAGIC`: the step, the cell and positions i-PI sent, and the energy,
forces and virial sent back, bit for bit. i-PI then needs no trajectory of positions, whose text
formatting cost most of an every-step protocol's step (issue 25 §3, ``benchmarks/bench_every_step.py``).

Each record is one unbuffered ``write``: it is in the file before i-PI gets the forces, so before any
restart point i-PI writes after that step. A run resumed from step S (``--first-step S``) does not
record its first request, step S itself: the file, trimmed back to S by the supervisor, holds it.
"""

from __future__ import annotations

import os

import numpy as np

from . import DriverError
from .contract import FRAMES_HEADER_BYTES, FRAMES_MAGIC, frame_record_floats


#: why a frame record cannot be made: the schedule of written steps is what tells a request's MD step
NEEDS_SCHEDULE = "--record needs --stress-stride N (which steps are written) and one bead per step"


class FrameRecorder:
    """Appends the records of written steps to ``path`` (created with its header if absent or empty)."""

    def __init__(self, path: str, n_atoms: int):
        self.path = path
        self.n_atoms = int(n_atoms)
        self.n_floats = frame_record_floats(self.n_atoms)
        self.n_recorded = 0
        try:
            self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            size = os.fstat(self.fd).st_size
            if size == 0:
                os.write(self.fd, FRAMES_MAGIC + np.int64(self.n_atoms).astype("<i8").tobytes())
            else:
                self._check_header(size)
        except OSError as exc:
            raise DriverError(f"cannot write the frame record {path!r}: {exc.strerror}") from None

    def _check_header(self, size: int) -> None:
        with open(self.path, "rb") as fh:
            head = fh.read(FRAMES_HEADER_BYTES)
        if len(head) < FRAMES_HEADER_BYTES or head[:8] != FRAMES_MAGIC:
            raise DriverError(f"{self.path!r} exists and is not a dynamat frame record; not appending to it")
        n = int(np.frombuffer(head, "<i8", 1, 8)[0])
        if n != self.n_atoms:
            raise DriverError(f"the frame record {self.path!r} holds {n} atoms per frame, this run {self.n_atoms}")
        if (size - FRAMES_HEADER_BYTES) % (8 * self.n_floats):
            raise DriverError(f"the frame record {self.path!r} ends in a partial frame: trim it to its restart point "
                              "before appending (the supervisor does)")

    def record(self, step: int, cell_bohr, positions_bohr, result) -> None:
        """One written step: i-PI's h and positions, and the (energy, forces, virial, extra) sent back."""
        energy, forces, virial, _ = result
        row = np.empty(self.n_floats)
        n3 = 3 * self.n_atoms
        row[0] = step
        row[1:10] = np.asarray(cell_bohr, dtype=np.float64).reshape(9)
        row[10 : 10 + n3] = np.asarray(positions_bohr, dtype=np.float64).reshape(n3)
        row[10 + n3] = energy
        row[11 + n3 : 11 + 2 * n3] = np.asarray(forces, dtype=np.float64).reshape(n3)
        row[11 + 2 * n3 :] = np.asarray(virial, dtype=np.float64).reshape(9)
        data = row.astype("<f8", copy=False).tobytes()
        try:
            while data:
                data = data[os.write(self.fd, data):]
        except OSError as exc:
            raise DriverError(f"cannot write the frame record {self.path!r}: {exc.strerror}") from None
        self.n_recorded += 1

    def close(self) -> None:
        """Once only: a second os.close could close whatever file has been given the number since."""
        fd, self.fd = self.fd, None
        if fd is None:
            return
        try:
            os.close(fd)
        except OSError:
            pass


__all__ = ["NEEDS_SCHEDULE", "FrameRecorder"]
