"""Stress on demand: compute the model's stress only for force requests whose virial i-PI writes.

i-PI asks for a virial with every force request, but in NVT (fixed cell, no barostat) the virial
drives nothing: it only reaches the outputs (``virial_md``, ``pressure_md``, ``virial_cv``, ...),
which are written every ``stride`` steps. An MLIP's stress costs a second backward pass (CHGNet
0.3.0, 32 atoms: 190 ms for energy and forces, 300 ms with stress), so ``dynamat-driver
--stress-stride N`` computes it only for requests that belong to a step i-PI writes, and returns a
placeholder virial otherwise.

**The placeholder is NaN** (all nine components), never zeros: a misaligned schedule then shows as
NaN in the written pressure instead of a plausible "kinetic-only" number, and i-PI (3.3) accepts
it (it does not check virials; NVT integrators and thermostats never read them).

How i-PI's requests map to steps (measured with i-PI 3.3.1, ``benchmarks``/tests reproduce it):

* A fresh run: the first request is the initial structure, step 0, and its virial is written (the
  initial output row). Request k (classical) is step k: velocity Verlet asks once per step, at the
  new positions, and the outputs of step k are written right after it (i-PI writes when
  ``step % stride == 0``). SVR, Langevin and PILE-L thermostats ask nothing more; ``safe_stride``
  and checkpoints only copy state, they never trigger a request.
* A restart from a RESTART or checkpoint file holding ``<step>S</step>``: the first request is the
  structure of step S (needed for the first half kick) and its virial is *not* written (no initial
  output on restart); request k is step S + k. Passing ``--first-step S`` makes the driver compute
  stress on the first request when S is a multiple of N (one unneeded stress per restart, harmless).
* Path integrals with P beads: every step asks for all P beads. With ``batch_size`` B, i-PI hands a
  free client the requests queued so far (up to B) and pads a partial batch by repeating its last
  structure, so the P beads of one step may arrive in a varying number of requests (the bead queue
  and i-PI's poll thread race). A request never mixes two steps (the next step's beads are queued
  only when all forces of this one are back). The driver therefore counts *real* structures, the
  request's length minus its trailing copies of the last structure, until P are in. Only at a
  fresh start (step 0) are all P beads one structure (i-PI places every bead at the initial
  structure; dynamat never initialises beads otherwise), and padding cannot be told from beads
  there: step 0 ends when a request with another structure arrives.

A count that cannot be right (more real structures in a step than P) switches the schedule off:
stress on every request from then on, reported in the timing file (``stress.desynchronised``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from . import DriverError

#: the virial returned when the model's stress was not computed (i-PI units, 3×3)
PLACEHOLDER_VIRIAL = np.full((3, 3), np.nan)


def _same(c1, p1, c2, p2) -> bool:
    return np.array_equal(p1, p2) and np.array_equal(c1, c2)


@dataclass
class StressSchedule:
    """Decides, request by request, whether the model's stress is needed.

    ``stride``: i-PI writes the virial at steps that are multiples of it (the output stride of the
    properties that hold the virial; the smallest one if several). ``first_step``: the step of the
    first request this driver serves (0, or the ``<step>`` of the restart file i-PI started from).
    ``beads``: structures per MD step (path-integral beads, 1 for classical MD).
    """

    stride: int
    first_step: int = 0
    beads: int = 1

    def __post_init__(self):
        if self.stride < 1:
            raise DriverError(f"--stress-stride must be >= 1, got {self.stride}")
        if self.first_step < 0:
            raise DriverError(f"--first-step must be >= 0, got {self.first_step}")
        if self.beads < 1:
            raise DriverError(f"--beads must be >= 1, got {self.beads}")
        self.step = self.first_step  # the step of the request being served
        self.current_step = self.first_step  # the step of the last request needs_stress saw (error messages)
        self._seen = 0  # real structures of this step received so far
        self._only = None  # (cell, positions) while every structure of this step is this one
        self.desynchronised = False
        self.n_with_stress = 0  # requests
        self.n_without_stress = 0

    def _real_count(self, cells, positions) -> int:
        """Structures in a request minus the trailing copies i-PI pads a partial batch with."""
        n = len(positions)
        last = n - 1
        while last > 0 and _same(cells[last - 1], positions[last - 1], cells[n - 1], positions[n - 1]):
            last -= 1
        return last + 1

    def needs_stress(self, cells, positions) -> bool:
        """Call once per request, in order; True if this request's virial may be written."""
        if self.desynchronised:
            self.n_with_stress += 1
            return True
        if self._seen and self._only is not None:
            c0, p0 = self._only
            if any(not _same(c, p, c0, p0) for c, p in zip(cells, positions)):
                # a degenerate step (all beads one structure, a fresh start) ends when new positions come
                self._next_step()
        step = self.current_step = self.step
        real = self._real_count(cells, positions)
        if step == 0:
            # only a fresh start can have identical beads (all P at the initial structure); later,
            # trailing copies are always i-PI's padding
            all_one = all(_same(c, p, cells[0], positions[0]) for c, p in zip(cells, positions))
            if self._seen == 0:
                self._only = (cells[0].copy(), positions[0].copy()) if all_one else None
            elif self._only is not None and not all_one:
                self._only = None
        self._seen += real
        if self._seen > self.beads and self._only is None:
            # cannot happen with i-PI's request order: stop guessing, compute stress everywhere
            self.desynchronised = True
            self.n_with_stress += 1
            return True
        if self._seen >= self.beads:
            self._next_step()
        want = step % self.stride == 0
        if want:
            self.n_with_stress += 1
        else:
            self.n_without_stress += 1
        return want

    def _next_step(self):
        self.step += 1
        self._seen = 0
        self._only = None

    def describe(self) -> dict:
        return {
            "policy": f"model stress only on steps that are multiples of {self.stride} (i-PI's virial output "
            "stride); other requests return a NaN virial",
            "stride": self.stride,
            "first_step": self.first_step,
            "beads": self.beads,
            "next_step": self.step,
            "requests_with_stress": self.n_with_stress,
            "requests_without_stress": self.n_without_stress,
            "desynchronised": self.desynchronised,
        }


__all__ = ["PLACEHOLDER_VIRIAL", "StressSchedule"]
