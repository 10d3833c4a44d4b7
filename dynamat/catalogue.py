"""The system catalogue (``dynamat/data/systems.toml``) and the rules that fill in what it does not say.

Every value a run uses (class, dimensionality, temperature, protocol and its knobs, start frame)
comes from one of four places, in this order of precedence:

1. the command line (an override: ``--protocol``, ``--class``, ``--dims``, ``--timestep-fs``,
   ``--tau-fs``, ``--thermostat``, ``--start-frame``; and the ensemble: ``--ensemble npt --pressure-GPa P
   [--barostat isotropic|flexible] [--tau-barostat-fs T]``, which also sets a burn-in of 5 τ_barostat);
2. the catalogue entry for the system's name (it wins over everything inferred);
3. the reference file's group attributes (``temperature_kelvin``, and ``system_class``/``dims``
   where a file such as the bundled demo states them; ``ensemble npt`` with its pressure, barostat and
   τ where the reference ran at constant pressure: runs then do too, unless ``--ensemble nvt``);
4. inference by the documented rules below, from the system's name and its first frame.

Each :class:`System` keeps, per value, a one-line source ("catalogue", "inferred from ...",
"command line (--dims)"), reported by ``dynamat systems`` and recorded in run.json.

Inference rules (the public DynaMat v1.0 file carries no class or dimensionality):

* **Protocol** (paper, Methods IV.A.2): anthracene, naphthalene and tetracene by name: i-PI
  Langevin, 0.5 fs, tau 10 fs, every step (``langevin_10fs``); pentacene and picene by name: the
  same with tau 500 fs (``langevin_500fs``); any other molecular crystal ``langevin_10fs``; every
  other system the inorganic protocol (``nhc``: 0.25 fs, tau 254.5 fs, a frame every 10 steps).
* **Class**, first rule that matches, on the composition of the first frame (or, without a frame,
  of the chemical formula at the start of the name, ``bulkCu3Au_500K`` -> Cu3Au):

  - ``molecular crystal``: the name starts with one of the five molecules above, or the
    composition holds both C and H and nothing but H C N O S P F Cl Br I;
  - ``liquid``: the name says so (a word ``liquid``, ``liq``, ``melt`` or ``water`` between
    ``_``/``-``), or the composition is water (H2O);
  - ``pure metal``: a single element, and it is a metal (not H, He, B, C, N, O, F, Ne, Si, P, S,
    Cl, Ar, Ge, As, Se, Br, Kr, Sb, Te, I, Xe, Rn);
  - ``alloy``: two or more elements, all of them metals;
  - ``perovskite``: three elements in the ratio 1:1:3 (ABX3), the X (the triple one) O F Cl Br
    or I, A and B metals;
  - ``TMD``: two elements in the ratio 1:2 (MX2), M a transition metal (groups 3-12), X S Se or Te;
  - ``oxide``: oxygen and at least one metal;
  - ``semiconductor``: no metal other than Al Ga In Zn Cd Hg Sn, and at least one of B C Si Ge
    N P As Sb S Se Te (Si, Ge, SiC, GaAs, GaN, CdTe, ZnS; never "pure metal" for Si);
  - ``other``: anything else.

  Each class except ``molecular crystal`` gets the inorganic protocol.
* **Dimensionality**: a periodic direction whose lattice planes hold an empty slab (no atom) at
  least :data:`VACUUM_GAP_A` thick, or a non-periodic direction, is not extended. One such
  direction: 2D (Eq. 5 uses xx and yy, so the vacuum must lie along z); none: 3D.
* **Temperature**: the file's ``temperature_kelvin``, else the ``_<T>K`` in the name.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field, replace
from functools import lru_cache
from importlib import resources
from pathlib import Path

import numpy as np

from dynamat.errors import DynamatError

#: An empty slab at least this thick (Å, measured perpendicular to the lattice planes) along a
#: periodic direction is a vacuum gap. Interlayer van der Waals gaps in bulk layered crystals
#: (graphite 3.4 Å between planes, TiSe2 ~3 Å between Se sheets) stay well below it.
VACUUM_GAP_A = 6.0

#: Molecular crystals recognised by name (paper, Methods IV.A.2) and their protocol.
MOLECULAR_CRYSTAL_PROTOCOLS = {
    "anthracene": "langevin_10fs",
    "naphthalene": "langevin_10fs",
    "tetracene": "langevin_10fs",
    "pentacene": "langevin_500fs",
    "picene": "langevin_500fs",
}
INORGANIC_PROTOCOL = "nhc"

CLASSES = ("molecular crystal", "pure metal", "alloy", "perovskite", "TMD",
           "semiconductor", "oxide", "liquid", "other")

_NONMETALS = {"H", "He", "B", "C", "N", "O", "F", "Ne", "Si", "P", "S", "Cl", "Ar", "Ge", "As", "Se",
              "Br", "Kr", "Sb", "Te", "I", "Xe", "Rn", "At"}
_ORGANIC = {"H", "C", "N", "O", "S", "P", "F", "Cl", "Br", "I"}
_PEROVSKITE_X = {"O", "F", "Cl", "Br", "I"}
_CHALCOGENS = {"S", "Se", "Te"}
_SEMI_METALS = {"Al", "Ga", "In", "Zn", "Cd", "Hg", "Sn"}
_SEMI_ANIONS = {"B", "C", "Si", "Ge", "N", "P", "As", "Sb", "S", "Se", "Te"}
_LIQUID_WORDS = ("liquid", "liq", "melt", "water")
_TEMPERATURE_IN_NAME = re.compile(r"(?:^|[_-])(\d+(?:\.\d+)?)K(?=$|[_-])")
_FORMULA_IN_NAME = re.compile(r"^(?:bulk|slab|mono|ML)?((?:[A-Z][a-z]?\d*)+)(?=$|[_-])")

#: The protocol knobs an override may set, and the Protocol field each one sets.
PROTOCOL_KNOBS = {"timestep_fs": "timestep_fs", "tau_fs": "tau_fs", "thermostat": "ipi_thermostat"}
#: the isothermal-isobaric knobs (``--ensemble npt --pressure-GPa P [--barostat B] [--tau-barostat-fs T]``)
ENSEMBLE_KNOBS = ("ensemble", "pressure_GPa", "barostat", "tau_barostat_fs")
DEFAULT_TAU_BAROSTAT_FS = 1000.0  # a piston slower than the phonons (~100 fs) and the thermostat
#: an NPT run starts from the reference's cell; scoring drops this many barostat time constants of it
#: (the cell's relaxation to the model's own volume), unless the protocol's burn-in is longer
NPT_BURN_IN_TAUS = 5.0
OVERRIDE_KEYS = ("protocol", "system_class", "dims", "timestep_fs", "tau_fs", "thermostat", "start_frame",
                 *ENSEMBLE_KNOBS)
_CLI_FLAG = {"protocol": "--protocol", "system_class": "--class", "dims": "--dims",
             "timestep_fs": "--timestep-fs", "tau_fs": "--tau-fs", "thermostat": "--thermostat",
             "start_frame": "--start-frame", "ensemble": "--ensemble", "pressure_GPa": "--pressure-GPa",
             "barostat": "--barostat", "tau_barostat_fs": "--tau-barostat-fs"}


@dataclass(frozen=True)
class Protocol:
    name: str
    paper_thermostat: str
    ipi_thermostat: str
    timestep_fs: float  # the MLIP's MD time step, fs (not the reference's frame interval)
    tau_fs: float
    stride: int  # MD steps between saved frames
    time_ps: float
    burn_in_ps: float = 0.0  # leading MD time dropped before scoring
    relax: bool = False  # relax positions and cell with the model first (paper Fig. S5)
    relax_fmax_eV_per_A: float = 0.01
    relax_max_steps: int = 500
    ensemble: str = "nvt"  # "npt": i-PI's barostat moves the cell (the stress is then computed every step)
    pressure_GPa: float | None = None  # NPT only: the external pressure
    barostat: str | None = None  # NPT only: "isotropic" or "flexible"
    tau_barostat_fs: float | None = None  # NPT only: the piston's time constant

    @property
    def steps(self) -> int:
        """MD steps for the full protocol length."""
        return int(round(self.time_ps * 1000.0 / self.timestep_fs))

    @property
    def thermostat(self) -> str:
        """The i-PI thermostat mode the run uses."""
        return self.ipi_thermostat


@dataclass(frozen=True)
class System:
    name: str
    system_class: str
    temperature_K: float
    dims: int
    protocol: Protocol
    in_catalogue: bool = True
    start_frame: int = 0  # reference frame the MLIP run starts from
    #: value name -> where it came from ("catalogue", "inferred from ...", "command line (--dims)")
    sources: Mapping[str, str] = field(default_factory=dict, compare=False)
    reference_dt_fs: float | None = None  # the reference file's interval between saved frames, fs
    #: where the reference's cell varies (NPT), the mean cell runs start in (:func:`dynamat.reference.variable_cell`)
    start_cell: Mapping | None = field(default=None, compare=False)

    def md_settings(self, steps: int | None = None, seed: int = 12345, nbeads: int = 1):
        p = self.protocol
        return _md_settings_class()(
            thermostat=p.ipi_thermostat,
            timestep_fs=p.timestep_fs,
            tau_fs=p.tau_fs,
            stride=p.stride,
            steps=p.steps if steps is None else int(steps),
            temperature_K=self.temperature_K,
            seed=seed,
            nbeads=nbeads,
            ensemble=p.ensemble,
            pressure_GPa=p.pressure_GPa,
            barostat=p.barostat or "isotropic",
            tau_barostat_fs=p.tau_barostat_fs,
        )

    def source(self, key: str) -> str:
        """Where value ``key`` came from (keys as in :meth:`provenance`)."""
        return self.sources.get(key, "catalogue" if self.in_catalogue else "unknown")

    def provenance(self) -> dict[str, str]:
        """Source of every value: class, dims, temperature_K, protocol, timestep_fs, tau_fs,
        thermostat, stride, start_frame."""
        keys = ("class", "dims", "temperature_K", "protocol", "timestep_fs", "tau_fs", "thermostat",
                "stride", "start_frame") + (ENSEMBLE_KNOBS if self.protocol.ensemble == "npt" else ())
        return {k: self.source(k) for k in keys}

    def as_dict(self) -> dict:
        """Every value used, JSON-ready, with its source (for run.json and ``dynamat systems --json``).

        Times in fs and ps, temperature in K. ``reference_dt_fs`` is the reference's interval
        between saved frames; ``protocol.timestep_fs`` the MLIP's MD step: never the same thing.
        """
        p = self.protocol
        proto = asdict(p)
        proto["thermostat"] = p.ipi_thermostat
        proto["steps"] = p.steps
        return {
            "name": self.name,
            "class": self.system_class,
            "dims": self.dims,
            "temperature_K": self.temperature_K,
            "start_frame": self.start_frame,
            "reference_dt_fs": self.reference_dt_fs,
            "in_catalogue": self.in_catalogue,
            "pressure_components": ["xx", "yy", "zz"] if self.dims == 3 else ["xx", "yy"],
            "protocol": proto,
            "sources": self.provenance(),
        } | ({"start_cell": dict(self.start_cell)} if self.start_cell else {})

    def describe(self) -> dict:
        """What run.json records as ``system_info``: :meth:`as_dict`."""
        return self.as_dict()


def _md_settings_class():
    from dynamat.engines.ipi_input import MDSettings  # lazily: the engines package is heavy

    return MDSettings


def _thermostats() -> tuple[str, ...]:
    """i-PI thermostat modes with an input template."""
    from dynamat.engines.ipi_input import TEMPLATES

    return tuple(TEMPLATES)


@lru_cache(maxsize=1)
def _raw() -> dict:
    return tomllib.loads(resources.files("dynamat.data").joinpath("systems.toml").read_text())


def protocol_names() -> list[str]:
    return sorted(_raw()["protocols"])


def protocol(name: str) -> Protocol:
    try:
        p = _raw()["protocols"][name]
    except KeyError:
        raise DynamatError(f"unknown protocol {name!r}; known: {', '.join(protocol_names())}") from None
    return Protocol(name=name, **p)


def as_npt(p: Protocol, pressure_GPa: float, barostat: str, tau_barostat_fs: float) -> Protocol:
    """``p`` with i-PI's barostat at ``pressure_GPa``; its burn-in at least :data:`NPT_BURN_IN_TAUS` barostat
    time constants, since the cell starts at the reference's volume, not the model's."""
    return replace(p, ensemble="npt", pressure_GPa=pressure_GPa, barostat=barostat, tau_barostat_fs=tau_barostat_fs,
                   burn_in_ps=max(p.burn_in_ps, NPT_BURN_IN_TAUS * tau_barostat_fs / 1000.0))


def with_protocol(system: System, name: str | None) -> System:
    """``system`` run under another catalogue protocol (e.g. the relaxed-cell one), or unchanged."""
    if not name:
        return system
    old = system.protocol
    p = protocol(name)
    if old.ensemble == "npt":  # NPT stays NPT
        p = as_npt(p, old.pressure_GPa, old.barostat, old.tau_barostat_fs)
    src = dict(system.sources)
    for k in ("protocol", "timestep_fs", "tau_fs", "thermostat", "stride"):
        src[k] = "command line (--protocol)" if k == "protocol" else f"protocol {name} (command line --protocol)"
    return replace(system, protocol=p, sources=src)


#: the classical thermostats i-PI's path-integral template replaces by PILE-L (dynamat.engines.ipi_input)
CLASSICAL_THERMOSTATS = ("svr", "langevin")


def with_beads(system: System, nbeads: int) -> System:
    """``system`` as a path-integral run of ``nbeads`` beads runs it: i-PI's PILE-L thermostat (Langevin on
    every normal mode of the ring polymer, the centroid's with the protocol's tau) in place of a classical
    one, its source saying what it replaced, so run.json and ``dynamat inputs`` record what i-PI runs.
    The protocol's own svr is replaced; an svr asked for with ``--thermostat`` is refused (PILE-L is not a
    global velocity rescaling of the centroid), a langevin one is honoured by PILE-L. Classical (1 bead),
    a path-integral mode already (pile_l, trpmd) and NPT (refused by the runner) are returned unchanged."""
    p = system.protocol
    if int(nbeads) <= 1 or p.ensemble == "npt" or p.ipi_thermostat not in CLASSICAL_THERMOSTATS:
        return system
    was, src = p.ipi_thermostat, system.source("thermostat")
    asked = src.startswith("command line")
    if was == "svr" and asked:
        raise DynamatError(f"--thermostat svr cannot run with --beads {nbeads}: path integrals use i-PI's PILE-L "
                           "(Langevin on every normal mode, the centroid's with --tau-fs), not a global velocity "
                           "rescaling; drop --thermostat, or give --thermostat langevin")
    sources = dict(system.sources)
    sources["thermostat"] = (f"pile_l (path integrals, {nbeads} beads; replaces {was} from {src}: PILE-L is "
                             "Langevin on every normal mode, the centroid's with tau_fs)")
    return replace(system, protocol=replace(p, ipi_thermostat="pile_l"), sources=sources)


def system_names() -> list[str]:
    return sorted(_raw()["systems"])


def classes() -> dict[str, str]:
    """Class name -> default protocol name, for every class the rules can give."""
    return {**{c: INORGANIC_PROTOCOL for c in CLASSES}, **dict(_raw()["classes"])}


# ------------------------------------------------------------------------------------ geometry
@dataclass(frozen=True)
class Geometry:
    """One frame: atomic numbers (N,), positions (N, 3) Å, cell (3, 3) Å rows, pbc (3,)."""

    numbers: np.ndarray
    positions: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray

    @classmethod
    def of(cls, obj) -> Geometry:
        """From ase.Atoms, a dynamat Trajectory (its first frame) or a Geometry."""
        if isinstance(obj, Geometry):
            return obj
        if hasattr(obj, "get_positions"):  # ase.Atoms
            return cls(np.asarray(obj.numbers), obj.get_positions(), np.asarray(obj.cell.array),
                       np.asarray(obj.pbc, bool))
        if hasattr(obj, "cells") and hasattr(obj, "positions"):  # Trajectory
            return cls(np.asarray(obj.numbers), np.asarray(obj.positions)[0], np.asarray(obj.cells)[0],
                       np.asarray(obj.pbc, bool))
        raise TypeError(f"cannot take a geometry from {type(obj).__name__}")


def vacuum_gaps_A(geometry) -> np.ndarray:
    """(3,) thickness in Å of the widest atom-free slab between the lattice planes of each direction.

    For lattice vector i the atoms' fractional coordinates s_i (mod 1) are sorted; the widest
    circular gap in s_i times the interplanar spacing V / |a_j × a_k| is the slab thickness. A
    non-periodic direction reports infinity.
    """
    g = Geometry.of(geometry)
    cell = np.asarray(g.cell, float)
    vol = abs(np.linalg.det(cell))
    out = np.full(3, np.inf)
    if vol < 1e-9 or len(g.positions) == 0:
        return out
    frac = np.asarray(g.positions, float) @ np.linalg.inv(cell)
    for i in range(3):
        if not g.pbc[i]:
            continue
        j, k = [x for x in range(3) if x != i]
        spacing = vol / np.linalg.norm(np.cross(cell[j], cell[k]))
        s = np.sort(np.mod(frac[:, i], 1.0))
        gaps = np.diff(np.concatenate([s, [s[0] + 1.0]]))
        out[i] = float(gaps.max()) * spacing
    return out


def infer_dims(geometry) -> tuple[int, str]:
    """(dims, reason) from a vacuum gap (see :data:`VACUUM_GAP_A`) or a non-periodic direction."""
    g = Geometry.of(geometry)
    gaps = vacuum_gaps_A(g)
    axes = "abc"
    flat = [i for i in range(3) if gaps[i] >= VACUUM_GAP_A]
    if not flat:
        return 3, f"inferred from geometry: no vacuum gap >= {VACUUM_GAP_A:g} A along a, b or c (widest {gaps.max():.1f} A)"
    if len(flat) > 1:
        raise DynamatError(
            "vacuum or no periodicity along " + " and ".join(axes[i] for i in flat)
            + ": a wire or cluster; the paper's pressure (Eq. 5) covers 3D and 2D only: if the structure is bulk "
            "or a slab, say so with `dynamat run --dims 3` (or 2) or the reference group's "
            "attribute dims"
        )
    i = flat[0]
    what = "not periodic" if not g.pbc[i] else f"vacuum gap of {gaps[i]:.1f} A"
    note = "" if i == 2 else " (Eq. 5 uses xx, yy: the vacuum should lie along z)"
    return 2, f"inferred from geometry: {what} along {axes[i]}{note}"


# ------------------------------------------------------------------------------------ class
def _symbols(numbers) -> list[str]:
    from ase.data import chemical_symbols

    return [chemical_symbols[int(z)] for z in np.asarray(numbers).reshape(-1)]


def _composition_from_name(name: str) -> dict[str, int] | None:
    m = _FORMULA_IN_NAME.match(name)
    if not m:
        return None
    from ase.data import chemical_symbols

    comp: dict[str, int] = {}
    for sym, count in re.findall(r"([A-Z][a-z]?)(\d*)", m.group(1)):
        if sym not in chemical_symbols[1:]:
            return None
        comp[sym] = comp.get(sym, 0) + (int(count) if count else 1)
    return comp or None


def _molecule_in_name(name: str) -> str | None:
    low = name.lower()
    for mol in MOLECULAR_CRYSTAL_PROTOCOLS:
        if low.startswith(mol):
            return mol
    return None


def _liquid_in_name(name: str) -> bool:
    return any(w in re.split(r"[_\-.\d]+", name.lower()) for w in _LIQUID_WORDS)


def classify_composition(comp: Mapping[str, int], name: str = "") -> tuple[str, str]:
    """(class, the rule that gave it) for a composition {symbol: count}; rules in the module doc."""
    els = set(comp)
    metals = {e for e in els if e not in _NONMETALS}
    formula = "".join(f"{e}{comp[e] if comp[e] != 1 else ''}" for e in sorted(els))
    if _molecule_in_name(name):
        return "molecular crystal", f"name starts with {_molecule_in_name(name)}"
    if _liquid_in_name(name):
        return "liquid", "the name says liquid"
    if {"C", "H"} <= els <= _ORGANIC:
        return "molecular crystal", f"{formula}: C and H with only H C N O S P halogens"
    if len(els) == 1 and metals:
        return "pure metal", f"{formula}: one element, a metal"
    if len(els) >= 2 and metals == els:
        return "alloy", f"{formula}: metals only"
    if len(els) == 3:
        x = [e for e in els if e in _PEROVSKITE_X]
        if len(x) == 1 and len(metals) == 2:
            others = [comp[e] for e in els if e != x[0]]
            if others[0] == others[1] and comp[x[0]] == 3 * others[0]:
                return "perovskite", f"{formula}: ABX3 with X = {x[0]}"
    if len(els) == 2:
        m = [e for e in els if e in metals and _is_transition_metal(e)]
        x = [e for e in els if e in _CHALCOGENS]
        if m and x and comp[x[0]] == 2 * comp[m[0]]:
            return "TMD", f"{formula}: MX2 with M = {m[0]} a transition metal, X = {x[0]}"
    if els == {"H", "O"} and comp["H"] == 2 * comp["O"]:
        return "liquid", f"{formula}: water"
    if "O" in els and metals:
        return "oxide", f"{formula}: oxygen and a metal"
    if metals <= _SEMI_METALS and els & _SEMI_ANIONS:
        return "semiconductor", f"{formula}: group 12-16 elements, no other metal"
    return "other", f"{formula}: none of the class rules matches"


def _is_transition_metal(sym: str) -> bool:
    from ase.data import atomic_numbers

    z = atomic_numbers[sym]
    return 21 <= z <= 30 or 39 <= z <= 48 or 57 <= z <= 80


def infer_class(name: str, geometry=None) -> tuple[str, str]:
    """(class, source) from the first frame's composition, else from the formula in the name."""
    if _molecule_in_name(name):
        return "molecular crystal", f"inferred from the name ({_molecule_in_name(name)})"
    if geometry is not None:
        syms = _symbols(Geometry.of(geometry).numbers)
        comp: dict[str, int] = {}
        for s in syms:
            comp[s] = comp.get(s, 0) + 1
        cls, why = classify_composition(comp, name)
        return cls, f"inferred from composition ({why})"
    comp = _composition_from_name(name)
    if comp is None and _liquid_in_name(name):
        return "liquid", "inferred from the name (it says liquid)"
    if comp is None:
        raise DynamatError(
            f"system {name!r}: not in the catalogue, no class in the reference file, and no structure "
            "given to infer it from (pass --class or the reference file)"
        )
    cls, why = classify_composition(comp, name)
    return cls, f"inferred from the formula in the name ({why})"


def infer_protocol(name: str, system_class: str) -> tuple[str, str]:
    """(protocol name, source): the paper's protocol for a molecule by name, else for the class."""
    mol = _molecule_in_name(name)
    if mol:
        return MOLECULAR_CRYSTAL_PROTOCOLS[mol], f"inferred from the name ({mol}, paper Methods IV.A.2)"
    return classes().get(system_class, INORGANIC_PROTOCOL), f"inferred from the class ({system_class})"


def temperature_from_name(name: str) -> float | None:
    """The ``<T>K`` after ``_`` or ``-`` in a system name (``bulkCu_300K-Artrith_VASP`` -> 300)."""
    m = _TEMPERATURE_IN_NAME.search(name)
    return float(m.group(1)) if m else None


# ------------------------------------------------------------------------------------ systems
def _check_overrides(overrides: Mapping) -> dict:
    out = {k: v for k, v in overrides.items() if v is not None}
    unknown = set(out) - set(OVERRIDE_KEYS)
    if unknown:
        raise TypeError(f"unknown override(s): {', '.join(sorted(unknown))}")
    if "system_class" in out and out["system_class"] not in classes():
        raise DynamatError(f"unknown class {out['system_class']!r}; known: {', '.join(classes())}")
    if "dims" in out and int(out["dims"]) not in (2, 3):
        raise DynamatError(f"--dims must be 2 or 3, got {out['dims']}")
    for k in ("timestep_fs", "tau_fs"):
        if k in out and not (np.isfinite(float(out[k])) and float(out[k]) > 0):
            raise DynamatError(f"{_CLI_FLAG[k]} must be a positive number of fs, got {out[k]}")
    if "thermostat" in out and out["thermostat"] not in _thermostats():
        raise DynamatError(f"unknown thermostat {out['thermostat']!r}; i-PI modes: {', '.join(_thermostats())}")
    if "start_frame" in out and int(out["start_frame"]) < 0:
        raise DynamatError(f"--start-frame must be >= 0, got {out['start_frame']}")
    check_ensemble(out)
    return out


def check_ensemble(ov: dict) -> None:
    """``--ensemble npt`` needs ``--pressure-GPa``; ``--ensemble nvt`` takes no barostat knob. Knobs without
    ``--ensemble`` may adjust a reference file's own NPT (:func:`_ensemble` decides); their values are checked."""
    from dynamat.engines.ipi_input import BAROSTATS, ENSEMBLES

    ens = ov.get("ensemble")
    if ens is not None and ens not in ENSEMBLES:
        raise DynamatError(f"--ensemble must be one of {', '.join(ENSEMBLES)}, got {ens!r}")
    if ens == "nvt":
        refuse_barostat_knobs(ov)
    if ens == "npt" and "pressure_GPa" not in ov:
        raise DynamatError("--ensemble npt needs --pressure-GPa P (the external pressure in GPa, e.g. 0)")
    if "pressure_GPa" in ov and not np.isfinite(float(ov["pressure_GPa"])):
        raise DynamatError(f"--pressure-GPa must be a finite number, got {ov['pressure_GPa']}")
    if ov.get("barostat", "isotropic") not in BAROSTATS:
        raise DynamatError(f"--barostat must be one of {', '.join(BAROSTATS)}, got {ov['barostat']!r}")
    tau = ov.get("tau_barostat_fs", DEFAULT_TAU_BAROSTAT_FS)
    if not (np.isfinite(float(tau)) and float(tau) > 0):
        raise DynamatError(f"--tau-barostat-fs must be a positive number of fs, got {tau}")


def refuse_barostat_knobs(ov: Mapping, why: str = "") -> None:
    """The barostat's knobs given where no barostat runs: one line naming them."""
    extra = [_CLI_FLAG[k] for k in ENSEMBLE_KNOBS[1:] if k in ov]
    if extra:
        raise DynamatError(f"{', '.join(extra)} only {'matters' if len(extra) == 1 else 'matter'} "
                           f"with --ensemble npt{why}")


def get_system(
    name: str,
    attrs: Mapping | None = None,
    geometry=None,
    *,
    overrides: Mapping | None = None,
    **kw,
) -> System:
    """The System for ``name``: catalogue entry, reference-file ``attrs``, inference, overrides.

    ``attrs``: the reference group's attributes (``temperature_kelvin``, ``dt_fs``, optional
    ``system_class`` and ``dims``). ``geometry``: a frame of the system (ase.Atoms, a Trajectory or
    :class:`Geometry`) for class and dimensionality inference. Overrides, as ``overrides={...}`` or
    keywords: ``protocol``, ``system_class``, ``dims``, ``timestep_fs``, ``tau_fs``,
    ``thermostat`` (an i-PI mode), ``start_frame``. Precedence: overrides, catalogue, file
    attributes, inference; a catalogue temperature that contradicts the file's is an error.

        get_system("bulkCu_300K-Artrith_VASP")
        get_system("pentacene_300K", {"temperature_kelvin": 300.0}, atoms, dims=3, tau_fs=100.0)
    """
    attrs = dict(attrs or {})
    ov = _check_overrides({**(overrides or {}), **kw})
    entry = _raw()["systems"].get(name) or {}
    in_cat = bool(entry)
    src: dict[str, str] = {}

    # temperature
    t_file = attrs.get("temperature_kelvin")
    if "temperature_K" in entry:
        temp = float(entry["temperature_K"])
        src["temperature_K"] = "catalogue"
        if t_file is not None and abs(float(t_file) - temp) > 1e-6:
            raise DynamatError(f"system {name!r}: the reference file says {t_file} K, the catalogue {temp} K")
    elif t_file is not None:
        temp, src["temperature_K"] = float(t_file), "reference file (temperature_kelvin)"
    elif temperature_from_name(name) is not None:
        temp, src["temperature_K"] = temperature_from_name(name), "inferred from the name"
    else:
        raise DynamatError(
            f"unknown system {name!r}: not in the catalogue, and neither the reference file "
            "(temperature_kelvin) nor the name (<T>K) gives its temperature "
            "(known: " + ", ".join(system_names()) + ")"
        )

    # class
    if "system_class" in ov:
        cls, src["class"] = ov["system_class"], "command line (--class)"
    elif "class" in entry:
        cls, src["class"] = entry["class"], "catalogue"
    elif attrs.get("system_class") is not None:
        cls, src["class"] = str(attrs["system_class"]), "reference file (system_class)"
        if cls not in classes():
            raise DynamatError(f"system {name!r} has unknown class {cls!r}; known: {', '.join(classes())}")
    else:
        try:
            cls, src["class"] = infer_class(name, geometry)
        except DynamatError:
            if geometry is None and not attrs:
                raise DynamatError(
                    f"unknown system {name!r}: not in the catalogue (known: {', '.join(system_names())}); "
                    "give its reference file"
                ) from None
            raise

    # dims
    if "dims" in ov:
        dims, src["dims"] = int(ov["dims"]), "command line (--dims)"
    elif "dims" in entry:
        dims, src["dims"] = int(entry["dims"]), "catalogue"
    elif attrs.get("dims") is not None:
        dims, src["dims"] = int(attrs["dims"]), "reference file (dims)"
    elif geometry is not None:
        dims, src["dims"] = infer_dims(geometry)
    else:
        dims, src["dims"] = 3, "default (no structure given to look for a vacuum gap)"

    # protocol and its knobs
    if "protocol" in ov:
        pname, psrc = ov["protocol"], "command line (--protocol)"
    elif "protocol" in entry:
        pname, psrc = entry["protocol"], "catalogue"
    else:
        pname, psrc = infer_protocol(name, cls)
    p = protocol(pname)
    src["protocol"] = psrc
    for k in ("timestep_fs", "tau_fs", "thermostat", "stride"):
        src[k] = f"protocol {pname} ({psrc})"
    knobs = {PROTOCOL_KNOBS[k]: (str(v) if k == "thermostat" else float(v))
             for k, v in ov.items() if k in PROTOCOL_KNOBS}
    if knobs:
        p = replace(p, **knobs)
        for k in PROTOCOL_KNOBS:
            if k in ov:
                src[k] = f"command line ({_CLI_FLAG[k]})"

    ens, ens_source = _ensemble(name, ov, attrs)
    if ens.get("ensemble") == "npt":
        if dims != 3:
            raise DynamatError(f"system {name!r} is a 2D slab: a barostat would squeeze its vacuum; NPT needs a 3D "
                               "system" + ("" if "ensemble" in ov else " (its reference file says npt: give --ensemble nvt)"))
        p = as_npt(p, float(ens["pressure_GPa"]), str(ens.get("barostat", "isotropic")),
                   float(ens.get("tau_barostat_fs", DEFAULT_TAU_BAROSTAT_FS)))
        for k in ENSEMBLE_KNOBS:
            src[k] = ens_source(k)

    start = int(ov.get("start_frame", 0))
    src["start_frame"] = "command line (--start-frame)" if "start_frame" in ov else "default (first frame)"
    dt_ref = attrs.get("dt_fs")
    return System(
        name=name,
        system_class=cls,
        temperature_K=temp,
        dims=dims,
        protocol=p,
        in_catalogue=in_cat,
        start_frame=start,
        sources=src,
        reference_dt_fs=None if dt_ref is None else float(dt_ref),
    )


def _ensemble(name: str, ov: Mapping, attrs: Mapping) -> tuple[dict, Callable[[str], str]]:
    """(the ensemble knobs a run takes, where each came from): the command line's ``--ensemble`` where given,
    else the reference file's own (``ensemble npt`` with ``pressure_GPa``, ``barostat``, ``tau_barostat_fs``,
    as ``reference generate --ensemble npt`` and ``reference import`` of an NPT run store them), else NVT.
    A reference run at constant pressure is compared with a run of that ensemble: its pressure and volume
    distributions (Eq. 9) are that ensemble's; ``--ensemble nvt`` runs its mean cell fixed instead, and the
    barostat's knobs given alone (``--pressure-GPa 2``) replace the file's own: its barostat at another pressure."""
    if "ensemble" in ov:
        return dict(ov), lambda k: f"command line ({_CLI_FLAG[k]})" if k in ov else "default (--ensemble npt)"
    knobs = {k: ov[k] for k in ENSEMBLE_KNOBS[1:] if k in ov}
    if attrs.get("ensemble") != "npt":
        refuse_barostat_knobs(knobs, f" (system {name!r}: its reference stores no barostat to adjust)")
        return {}, lambda k: "default (--ensemble nvt)"
    file = {k: (str(attrs[k]) if k in ("ensemble", "barostat") else float(attrs[k]))
            for k in ENSEMBLE_KNOBS if attrs.get(k) is not None}
    try:
        check_ensemble(file)
    except DynamatError as exc:
        raise DynamatError(f"system {name!r}: the reference file's ensemble attributes: {exc}") from None

    def source(k: str) -> str:
        if k in knobs:
            return f"command line ({_CLI_FLAG[k]}, over the reference file's ensemble npt)"
        return f"reference file ({k})" if k in file else "default (the reference file's ensemble npt)"
    return file | knobs, source


def system_from_reference(reference: str | Path, name: str, **overrides) -> System:
    """The System for group ``name`` of a reference file: its attributes and first frame feed the
    inference (see :func:`get_system`); ``overrides`` as there.

        system_from_reference("dynamat_v1.h5", "TiSe2_400K", start_frame=200)
    """
    from dynamat.io.reference_h5 import read_reference, reference_attrs

    attrs = reference_attrs(reference, name)
    first = read_reference(reference, name, frames=slice(0, 1))
    return get_system(name, attrs, first, **overrides)


def systems_in_reference(reference: str | Path, **overrides) -> list[System]:
    """Every system of a reference file, each with its values' sources."""
    from dynamat.io.reference_h5 import list_systems

    return [system_from_reference(reference, n, **overrides) for n in list_systems(reference)]
