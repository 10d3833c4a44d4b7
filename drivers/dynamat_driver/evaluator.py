"""From i-PI's cells and positions (bohr) to a model's energy, forces and virial (atomic units).

* :func:`parse_species` expands an order-preserving run-length formula ('Cu3AuCu2').
* :func:`resolve_system` decides the species and periodicity from i-PI's INIT parameters and/or
  a template file.
* :class:`Evaluator` turns each request into ASE Atoms, calls the model (one batched call where
  the model can batch, else one call per structure), converts the results and times the model.
"""

from __future__ import annotations

import math
import os
import re
import statistics
import time
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from . import DriverError
from .protocol import MAX_ATOMS
from .units import (
    ANGSTROM_PER_BOHR,
    HARTREE_PER_BOHR_PER_EV_PER_ANGSTROM,
    HARTREE_PER_EV,
    virial_to_ipi,
)
from .stress import PLACEHOLDER_VIRIAL

# --------------------------------------------------------------------------------------------
# species
# --------------------------------------------------------------------------------------------

_FORMULA = re.compile(r"(?:[A-Z][a-z]?\d*)+")
_TERM = re.compile(r"([A-Z][a-z]?)(\d*)")


def parse_species(formula: str) -> list[str]:
    """Expands an order-preserving run-length formula, as ASE writes with
    ``get_chemical_formula(mode='reduce')``: 'AuCu31' → ['Au', 'Cu' × 31],
    'Cu3AuCu2' → ['Cu', 'Cu', 'Cu', 'Au', 'Cu', 'Cu']."""
    from ase.data import atomic_numbers

    text = (formula or "").strip()
    if not text or not _FORMULA.fullmatch(text):
        raise DriverError(f"cannot read species formula {formula!r} (expected e.g. 'Cu3AuCu2')")
    out: list[str] = []
    for sym, count in _TERM.findall(text):
        if sym not in atomic_numbers or sym == "X":
            raise DriverError(f"species formula {formula!r}: {sym!r} is not a chemical element")
        n = int(count) if count else 1
        if n < 1:
            raise DriverError(f"species formula {formula!r}: count 0 for {sym}")
        if len(out) + n > MAX_ATOMS:  # a list of that many symbols is the server's word on our memory
            raise DriverError(f"species formula {formula!r} has more than {MAX_ATOMS} atoms")
        out.extend([sym] * n)
    return out


def parse_pbc(text: str) -> np.ndarray:
    """'TTT', 'T T F', '110', 'True, True, False'-like → (3,) bool; one letter applies to all."""
    flags = [c for c in text.upper() if c in "TF10"]
    if len(flags) == 1:
        flags *= 3
    if len(flags) != 3:
        raise DriverError(f"cannot read pbc {text!r} (expected e.g. 'TTT' or 'TTF')")
    return np.array([c in "T1" for c in flags], dtype=bool)


@dataclass
class SystemSpec:
    """What the driver needs to know beyond i-PI's positions: species, pbc, template."""

    numbers: np.ndarray
    pbc: np.ndarray
    template: object | None = None  # ase.Atoms
    source: str = ""

    @property
    def symbols(self) -> list[str]:
        from ase.data import chemical_symbols

        return [chemical_symbols[z] for z in self.numbers]

    @property
    def formula(self) -> str:
        from ase.formula import Formula

        return Formula.from_list(self.symbols).format("reduce") if len(self.numbers) else ""


def read_template(path: str, what: str = "template"):
    import ase.io

    if not os.path.exists(path):
        raise DriverError(f"{what} file {path!r} does not exist")
    try:
        atoms = ase.io.read(path, index=0)
    except Exception as exc:  # ASE raises many kinds
        raise DriverError(f"cannot read {what} file {path!r}: {type(exc).__name__}: {exc}") from None
    if len(atoms) == 0:
        raise DriverError(f"{what} file {path!r} holds no atoms")
    return atoms


def resolve_system(params: dict | None, template=None, template_path: str | None = None) -> SystemSpec:
    """Species from, in order: the INIT ``species`` token; the ``--template`` structure
    (``template`` Atoms or ``template_path``); the file named by the INIT ``template`` token
    (relative to the driver's working directory). pbc from the INIT ``pbc`` token, else the
    template structure, else periodic in all directions."""
    from ase.data import atomic_numbers

    params = params or {}
    if template is None and template_path:
        template = read_template(template_path, "--template")
    token_template = None
    tok = params.get("template", "")
    if template is None and tok:
        if os.path.exists(tok):
            token_template = read_template(tok, "template (named by i-PI)")
    tmpl = template if template is not None else token_template

    species_tok = params.get("species", "")
    if species_tok:
        symbols = parse_species(species_tok)
        numbers = np.array([atomic_numbers[s] for s in symbols], dtype=int)
        source = f"i-PI species {species_tok!r}"
        if template is not None and (
            len(template) != len(numbers) or not np.array_equal(template.numbers, numbers)
        ):
            raise DriverError(
                f"the species sent by i-PI ({species_tok}) disagree with the --template structure "
                f"({template.get_chemical_formula(mode='reduce')})"
            )
    elif tmpl is not None:
        numbers = np.array(tmpl.numbers, dtype=int)
        source = "--template" if template is not None else f"template file {tok!r}"
    else:
        hint = f" (i-PI named template {tok!r}, not found from {os.getcwd()})" if tok else ""
        raise DriverError(
            "no species: i-PI sent no 'species' parameter and no template file was found"
            f"{hint}; pass --template FILE (any ASE-readable structure)"
        )

    if params.get("pbc"):
        pbc = parse_pbc(params["pbc"])
    elif tmpl is not None:
        pbc = np.array(tmpl.pbc, dtype=bool)
    else:
        pbc = np.array([True, True, True])
    if tmpl is not None and len(tmpl) != len(numbers):
        tmpl = None  # a template of another size cannot serve as reference structure
    return SystemSpec(numbers=numbers, pbc=pbc, template=tmpl, source=source)


# --------------------------------------------------------------------------------------------
# timing
# --------------------------------------------------------------------------------------------


@dataclass
class ModelTiming:
    """Model-only wall time (the model call, not the socket or the unit conversion).

    Evaluations with and without the model's stress (``--stress-stride``) are also kept apart, so
    the per-evaluation time says what was computed: ``model_seconds_per_evaluation`` is over all
    evaluations, ``..._with_stress`` and ``..._without_stress`` over each kind."""

    warmup: int = 5
    per_evaluation: list = field(default_factory=list)  # seconds per structure evaluated
    with_stress: list = field(default_factory=list)  # per structure, stress computed
    without_stress: list = field(default_factory=list)  # per structure, energy and forces only
    n_calls: int = 0
    n_batched_calls: int = 0
    total_seconds: float = 0.0

    def add(self, n_structures: int, seconds: float, batched: bool, stress: bool = True) -> None:
        self.n_calls += 1
        self.n_batched_calls += int(batched)
        self.total_seconds += seconds
        per = [seconds / n_structures] * n_structures
        self.per_evaluation.extend(per)
        (self.with_stress if stress else self.without_stress).extend(per)

    def _stats(self, s: list) -> dict:
        body = s[self.warmup :] if len(s) > self.warmup else s
        return {
            "mean": statistics.fmean(body) if body else None,
            "median": statistics.median(body) if body else None,
            "min": min(body) if body else None,
            "n": len(body),
            "warmup_excluded": len(s) - len(body),
        }

    def summary(self) -> dict:
        s = self.per_evaluation
        return {
            "n_evaluations": len(s),
            "n_evaluations_with_stress": len(self.with_stress),
            "n_model_calls": self.n_calls,
            "n_batched_calls": self.n_batched_calls,
            "model_seconds_total": self.total_seconds,
            "model_seconds_per_evaluation": self._stats(s),
            "model_seconds_per_evaluation_with_stress": self._stats(self.with_stress),
            "model_seconds_per_evaluation_without_stress": self._stats(self.without_stress),
            "model_seconds_first_evaluations": s[: self.warmup],
        }


def _volume(cell: np.ndarray) -> float:
    """|det(cell)| (Å³) as a triple product of Python floats: np.linalg.det costs ~30 µs a call."""
    (a0, a1, a2), (b0, b1, b2), (c0, c1, c2) = cell.tolist()
    return abs(a0 * (b1 * c2 - b2 * c1) - a1 * (b0 * c2 - b2 * c0) + a2 * (b0 * c1 - b1 * c0))


# --------------------------------------------------------------------------------------------
# the evaluator
# --------------------------------------------------------------------------------------------


@dataclass
class Request:
    """What one i-PI request asks of the model: ``atoms`` (the distinct structures), whether their
    stress is needed, and for each slot of the request the index of its structure."""

    first: list
    todo: list
    atoms: list
    stress: bool
    #: (MD step, i-PI's cell, positions) when this request's frame goes to the frame record
    record: tuple | None = None


class Evaluator:
    """Callable for :func:`dynamat_driver.protocol.run_client`.

    ``evaluator(cells, positions)``: cells are i-PI's h matrices (lattice vectors as columns,
    bohr), positions (nat, 3) arrays in bohr; returns one ``(energy Ha, forces Ha/bohr (nat, 3),
    virial Ha (3, 3), extra '')`` per structure. Identical structures in one request (i-PI pads
    partial batches by repeating the last one) are evaluated once.
    """

    def __init__(self, model, system: SystemSpec, *, batched: bool = True, stress_schedule=None,
                 record: str | None = None):
        self.model = model
        #: a :class:`~dynamat_driver.stress.StressSchedule`, or None: stress on every request
        self.stress_schedule = stress_schedule
        #: ``record``: the frame record file (:mod:`dynamat_driver.frames`); the schedule tells the steps
        self.recorder = None
        if record:
            from .frames import NEEDS_SCHEDULE, FrameRecorder

            if stress_schedule is None or stress_schedule.beads != 1:
                raise DriverError(NEEDS_SCHEDULE)
            self.recorder = FrameRecorder(record, len(system.numbers))
        self.system = system
        self.batched = bool(batched) and bool(getattr(model, "can_batch", False))
        self.timing = ModelTiming()
        self.n_requests = 0
        self._atoms = []  # one reusable Atoms per batch slot
        self._first = True
        model.check_species(system.numbers)

    # -- helpers ------------------------------------------------------------------------
    def _slot(self, i: int):
        while len(self._atoms) <= i:
            from ase import Atoms

            n = len(self.system.numbers)
            self._atoms.append(
                Atoms(numbers=self.system.numbers, positions=np.zeros((n, 3)), cell=np.eye(3), pbc=self.system.pbc)
            )
        return self._atoms[i]

    def to_atoms(self, cell_bohr: np.ndarray, pos_bohr: np.ndarray, slot: int = 0):
        """Writes one i-PI structure into the reusable Atoms of ``slot`` (Å, cell as rows)."""
        pos = np.asarray(pos_bohr, dtype=np.float64).reshape(-1, 3)
        n = len(self.system.numbers)
        if len(pos) != n:
            raise DriverError(
                f"i-PI sent {len(pos)} atoms but the species ({self.system.source}) list {n}"
            )
        atoms = self._slot(slot)
        # straight into the arrays (atoms.cell[:] = ... goes through ASE's Cell machinery: ~15 µs)
        np.multiply(np.asarray(cell_bohr, dtype=np.float64).reshape(3, 3).T, ANGSTROM_PER_BOHR, out=atoms.cell.array)
        np.multiply(pos, ANGSTROM_PER_BOHR, out=atoms.arrays["positions"])
        return atoms

    @staticmethod
    def _unique(cells, positions) -> list[int]:
        """index of the first identical structure for each structure."""
        if len(cells) == 1:
            return [0]
        first = []
        for i in range(len(cells)):
            j_same = i
            for j in range(i):
                if first[j] == j and np.array_equal(positions[i], positions[j]) and np.array_equal(cells[i], cells[j]):
                    j_same = j
                    break
            first.append(j_same)
        return first

    def _to_ipi(self, result, atoms, want_stress: bool = True):
        energy, forces, stress = result
        f = np.asarray(forces, dtype=np.float64).reshape(-1, 3)
        if not (math.isfinite(energy) and np.isfinite(f).all()):
            raise DriverError(
                f"model {self.model.name!r} returned non-finite energy or forces at request {self.n_requests}"
                f"{'' if self.stress_schedule is None else f' (MD step {self.stress_schedule.current_step})'}"
                " (the structure may have exploded)"
            )
        if not want_stress:
            # the same marker whether or not the model computed a stress anyway (see stress.py)
            vir = PLACEHOLDER_VIRIAL
        else:
            vir = virial_to_ipi(stress, _volume(atoms.cell.array)) if stress is not None else np.zeros((3, 3))
        return (energy * HARTREE_PER_EV, f * HARTREE_PER_BOHR_PER_EV_PER_ANGSTROM, vir, "")

    # -- evaluation ---------------------------------------------------------------------
    def _refuse_exploded(self, atoms_list: Sequence) -> None:
        """After a model failed: a non-finite cell or positions from i-PI (its integrator or barostat blown up)
        is said as the explosion it is, not as the model's own error on it. Looked at only then: no per-step cost."""
        for a in atoms_list:
            if not (np.isfinite(a.arrays["positions"]).all() and np.isfinite(a.cell.array).all()):
                raise DriverError(f"i-PI sent non-finite positions or cell at request {self.n_requests} "
                                  "(the structure has exploded)") from None

    def evaluate_atoms(self, atoms_list: Sequence, stress: bool = True) -> list:
        """Runs the model on ASE Atoms (batched if allowed), timing the model call only.
        Returns model results in eV units: (energy, forces, stress or None). ``stress=False``
        lets a model that can (``Model.skips_stress``) leave its stress out."""
        if self._first:
            ref = self.system.template if self.system.template is not None else atoms_list[0]
            self.model.prepare(ref)
        n = len(atoms_list)
        kw = {} if stress or not getattr(self.model, "skips_stress", False) else {"stress": False}
        t0 = time.perf_counter()
        try:
            if n > 1 and self.batched:
                results = self.model.calculate_batch(atoms_list, **kw)
                batched = True
            else:
                results = []
                for a in atoms_list:
                    results.append(self.model.calculate(a, self._first, **kw))
                    self._first = False
                batched = False
        except Exception:
            self._refuse_exploded(atoms_list)
            raise
        self.timing.add(n, time.perf_counter() - t0, batched, stress=stress or not kw)
        self._first = False
        return results

    def __call__(self, cells: Sequence[np.ndarray], positions: Sequence[np.ndarray]) -> list:
        request = self.begin(cells, positions)
        return self.finish(request, self.evaluate_atoms(request.atoms, stress=request.stress))

    def begin(self, cells: Sequence[np.ndarray], positions: Sequence[np.ndarray]) -> "Request":
        """One i-PI request as the structures the model must evaluate (duplicates dropped)."""
        want = True if self.stress_schedule is None else self.stress_schedule.needs_stress(cells, positions)
        first = self._unique(cells, positions)
        todo = [i for i, j in enumerate(first) if i == j]
        atoms_list = [self.to_atoms(cells[i], positions[i], slot=k) for k, i in enumerate(todo)]
        return Request(first=first, todo=todo, atoms=atoms_list, stress=want, record=self._to_record(want, cells, positions))

    def _to_record(self, want: bool, cells, positions) -> tuple | None:
        """(step, cell, positions) when this request is a written step the frame record lacks."""
        sched = self.stress_schedule
        if self.recorder is None or not want:
            return None
        if sched.desynchronised or len(cells) != 1:
            raise DriverError("the frame record cannot tell this request's MD step (several structures per step); "
                              "run without --record")
        step = sched.current_step
        if self.n_requests == 0 and step == sched.first_step > 0:
            return None  # a resumed run's first request: the restart step, recorded by the run before
        return (step, cells[0], positions[0])

    def finish(self, request: "Request", results: list) -> list:
        """The model's results (eV units) for ``request.atoms`` → i-PI's answer for every slot."""
        converted = {i: self._to_ipi(r, a, request.stress)
                     for i, r, a in zip(request.todo, results, request.atoms)}
        if request.record is not None:
            self.recorder.record(*request.record, converted[0])
        self.n_requests += 1
        return [converted[j] for j in request.first]

    def describe(self) -> dict:
        d = self.model.describe()
        d.update(
            batched=self.batched,
            n_atoms=int(len(self.system.numbers)),
            species=self.system.formula,
            species_source=self.system.source,
            pbc=[bool(x) for x in self.system.pbc],
        )
        return d

    def close(self) -> None:
        """Closes the frame record (its records are on disk already: each is one unbuffered write)."""
        if self.recorder is not None:
            self.recorder.close()

    def stress_summary(self) -> dict:
        """What the timing file says about the stress: computed on every request, or on demand."""
        if self.stress_schedule is None:
            return {"policy": "model stress on every request"}
        d = self.stress_schedule.describe()
        if self.recorder is not None:
            d["frames_recorded"] = self.recorder.n_recorded
        d["model_skips_stress"] = bool(getattr(self.model, "skips_stress", False))
        return d


__all__ = ["parse_species", "parse_pbc", "resolve_system", "read_template", "SystemSpec", "ModelTiming", "Evaluator",
           "Request"]
