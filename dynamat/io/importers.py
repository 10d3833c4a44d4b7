"""A user's own ab-initio MD → a reference file in the DynaMat v1.0 schema, streamed through ASE's readers.

Formats (detected from the path, else from the first 4 KB: VASP outputs are often renamed):

* extxyz (``*.extxyz``, ``*.xyz``), and Matbench-discovery's raw layout: a folder per system holding
  ``traj.extxyz`` (one folder, or a folder of such folders: one system each, named after the folder);
* VASP: ``vasprun.xml``, ``OUTCAR`` (every ionic step; frame interval = POTIM, temperature = TEBEG
  from the file, else from an ``INCAR`` beside it; a TEBEG under 1 K is none, and the import asks for
  ``--temperature``), ``XDATCAR`` (positions and cells only; streamed by our own reader, checked against
  ASE's; interval = POTIM from an ``INCAR`` beside it times the configuration-number step);
* i-PI outputs: a run folder (``*.pos_0.extxyz``, ``*.pos_0.bin`` or the driver's frame record ``*.frames.f64``
  of an every-step ``dynamat run``, + properties ``*.out``), read as ``dynamat score`` reads a run folder
  (:func:`dynamat.io.run_folder.read_run_trajectory`): positions, cells, potential energy, forces where
  written and configurational stress (minus ``virial_md``), interval from the ``time`` column,
  temperature from ``input.xml``;
* LAMMPS text dumps (``*.lammpstrj``, ``*.dump``, ``dump.*``; metal units; the dump needs an
  ``element`` column); ASE trajectories (``*.traj``).

Units on the way out: positions and cells Å, energy eV, forces eV/Å, stress eV/Å³ as Voigt
``[xx, yy, zz, yz, xz, xy]`` with ASE's sign (positive = tensile). ASE's VASP and LAMMPS readers
already convert kBar/VASP sign and LAMMPS metal units; an extxyz ``virial`` (eV) without ``stress``
becomes stress = −virial / V. Energies, forces and stress are kept when every frame has them.

The frame interval ``dt_fs`` (time between *saved frames*, not the MD time step) and the temperature
come from the arguments, else the files' metadata (else, for the temperature, the ``_<T>K`` in the
name), and the interval is checked by equipartition on finite-difference velocities, corrected for
the finite-difference filter (:func:`check_frame_interval`): an interval the kinetic temperature
contradicts beyond the noise is refused with one line (:class:`dynamat.errors.DynamatError`) unless
``force``. Equipartition alone cannot tell frames further apart than said from a run colder than said (an
unequilibrated start, a weak thermostat); where every frame carries its own velocities (ASE ``.traj``,
extxyz ``momenta``, i-PI runs) their kinetic temperature does, so a refusal names the right way out and an
imported run more than 5 % off its temperature is warned of (:func:`_interval_refusal`). Sources of one
system are its consecutive segments: every frame must hold the first frame's atoms in the first frame's
order, and frames that carry ``time_fs`` (across every segment) or ``md_step`` (within a file, and across
files whose counter goes on) must follow each other one interval apart (a gap or an overlap is refused).
A reference needs at least ``MIN_MATCHED_FRAMES`` frames (what scoring compares). A folder of systems is
imported whole or not at all: each system goes to a temporary file first, and ``out_h5`` is opened for
writing only once all have. Frames go to disk in chunks of 512
(:class:`~dynamat.io.reference_h5.ReferenceGroupWriter`), so memory does not grow with the length of the
trajectory.

    from dynamat.io.importers import import_reference
    [res] = import_reference(["run/vasprun.xml"], "mine.h5", name="Si64_1000K", temperature_K=1000.0)
    res.dt_fs, res.dt_source, res.check.temperature_K, res.labels
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import h5py
import numpy as np
from ase.data import atomic_masses

from dynamat.catalogue import temperature_from_name
from dynamat.errors import DynamatError
from dynamat.io.extxyz import frame_fields, iread_extxyz
from dynamat.io.reference_h5 import ReferenceGroupWriter, h5_reason, replicas_in
from dynamat.metrics.equilibration import unequilibrated_start
from dynamat.metrics.frame_interval import (  # the one check
    CHECK_WINDOW,
    MIN_TEMPERATURE_K,
    EquipartitionCheck,
    check_frame_interval,
    equipartition_check,
)
from dynamat.metrics.vdos import kinetic_temperature
from dynamat.names import check_name
from dynamat.trajectory import MIN_MATCHED_FRAMES

__all__ = [
    "EquipartitionCheck",
    "ImportedSystem",
    "check_frame_interval",
    "detect_format",
    "import_reference",
    "iter_frames",
]

_TEMP_KEYS = ("temperature_K", "temperature_kelvin", "temperature", "tempK", "temp")


# ---------------------------------------------------------------------------------------------
# readers: each yields one dict per frame with positions (N,3), cell (3,3), numbers (N,) and, when
# present, energy, forces (N,3), stress (6,) Voigt, md_step, time_fs; meta gets pbc and metadata
@dataclass
class _Meta:
    numbers: np.ndarray | None = None
    pbc: np.ndarray | None = None
    dt_fs: float | None = None
    dt_from: str = ""
    temperature_K: float | None = None
    t_from: str = ""
    t_missing: str = ""  # why the files give no temperature (TEBEG = 0 in a vasprun): for the error
    notes: list[str] = field(default_factory=list)  # what a reader dropped (an incomplete last frame)
    # kinetic temperature (K) of each kept frame's own velocities (ASE trajectories, extxyz momenta, i-PI runs);
    # None once a kept frame has none. Never stored: it only tells a wrong interval from a run off its temperature
    stored_t: list[float] | None = field(default_factory=list)
    com_share: list[float] = field(default_factory=list)  # the centre of mass's share of each one's kinetic energy
    # the barostat of each i-PI run read (None: fixed cell): stored where every one ran the same
    ensembles: list[dict | None] = field(default_factory=list)


def detect_format(path: str | Path) -> str:
    """extxyz | mbd-folder | vasp-xml | vasp-out | vasp-xdatcar | ipi | lammps-dump-text | traj."""
    p = Path(path)
    if not p.exists():
        raise DynamatError(f"source not found: {p}")
    if p.is_dir():
        if (p / "traj.extxyz").exists():
            return "mbd-folder"
        if _ipi_prefix(p) is not None:
            return "ipi"
        raise DynamatError(f"{p} is a folder without traj.extxyz or i-PI outputs (*.pos_0.extxyz, *.pos_0.bin, "
                           "or the frame record *.frames.f64 of an every-step `dynamat run`)")
    name = p.name.lower()
    if name.endswith((".extxyz", ".xyz")):
        return "extxyz"
    if name.startswith("vasprun") and name.endswith(".xml"):
        return "vasp-xml"
    if name.startswith("outcar"):
        return "vasp-out"
    if name.startswith("xdatcar"):
        return "vasp-xdatcar"
    if name.endswith(".traj"):
        return "traj"
    if name.endswith((".lammpstrj", ".dump")) or name.startswith("dump"):
        return "lammps-dump-text"
    sniffed = _sniff_vasp(p)  # VASP outputs are often renamed (Ti_vasprun.xml, OUTCAR.1, run3.xml)
    if sniffed:
        return sniffed
    raise DynamatError(
        f"cannot tell the format of {p.name}: use .extxyz/.xyz, vasprun.xml, OUTCAR, XDATCAR (by name or "
        "content), an i-PI run folder, a LAMMPS dump (.lammpstrj, .dump) or an ASE .traj"
    )


def _sniff_vasp(p: Path, n_bytes: int = 4096) -> str | None:
    """vasp-xml | vasp-out | vasp-xdatcar from the first ``n_bytes`` of ``p``, else None.

    A vasprun.xml opens with ``<modeling>`` and a ``<generator>`` naming the program ``vasp``; an
    OUTCAR's first line is the version (`` vasp.6.3.0 ...``); an XDATCAR is a POSCAR-like header
    (comment, scale, three cell rows, symbols, counts) followed by ``Direct configuration=``."""
    try:
        with open(p, "rb") as fh:
            head = fh.read(n_bytes).decode("utf-8", errors="replace")
    except OSError:
        return None
    if "<modeling>" in head and re.search(r'<i name="program"[^>]*>\s*vasp', head):
        return "vasp-xml"
    if re.match(r"\s*vasp\.\d", head):
        return "vasp-out"
    lines = head.splitlines()
    if len(lines) >= 8 and "configuration=" in lines[7].replace(" ", ""):
        try:
            float(lines[1])
            [float(x) for row in lines[2:5] for x in row.split()]
            [int(c) for c in lines[6].split()]
        except ValueError:
            return None
        return "vasp-xdatcar"
    return None


def _ase_frames(path: Path, fmt: str, meta: _Meta) -> Iterator[dict]:
    """Frames of any format ASE reads, by the one set of fallbacks (:func:`dynamat.io.extxyz.frame_fields`);
    an extxyz through :func:`dynamat.io.extxyz.iread_extxyz`, which keeps the complete frames of a cut file."""
    import ase.io

    try:
        frames = iread_extxyz(path, meta.notes) if fmt == "extxyz" else ase.io.iread(path, index=":", format=fmt)
        for i, atoms in enumerate(frames):
            if i == 0:
                _header_from_atoms(atoms, meta)
            fr = frame_fields(atoms)  # velocities too: they judge the interval (a reference stores none)
            fr["numbers"] = atoms.numbers  # per frame: a file may change them, and then it is refused
            yield fr
    except DynamatError:
        raise
    except Exception as exc:  # noqa: BLE001 - ASE raises many kinds on malformed files
        raise DynamatError(f"cannot read {path} as {fmt}: {type(exc).__name__}: {exc}") from None


def _header_from_atoms(atoms, meta: _Meta) -> None:
    meta.numbers, meta.pbc = atoms.numbers.copy(), atoms.pbc.copy()
    if meta.temperature_K is None:
        for key in _TEMP_KEYS:
            if key in atoms.info:
                try:
                    meta.temperature_K, meta.t_from = float(atoms.info[key]), f"file metadata ({key})"
                    break
                except (TypeError, ValueError):
                    continue
    if meta.dt_fs is None and "dt_fs" in atoms.info:
        meta.dt_fs, meta.dt_from = float(atoms.info["dt_fs"]), "file metadata (dt_fs)"


def _scan_vasp_params(path: Path, names=("POTIM", "TEBEG", "NBLOCK"), max_lines: int = 20000) -> dict:
    """POTIM/TEBEG/NBLOCK from the head of a vasprun.xml, OUTCAR or INCAR (first value wins).

    INCAR syntax: tags in any case, ``!`` and ``#`` start a comment (an INCAR, or an OUTCAR's echo of
    it, may hold a commented-out ``!TEBEG = 0`` above the run's own TEBEG)."""
    found: dict[str, float] = {}
    xml = re.compile(r'<i name="(\w+)"[^>]*>\s*([-+0-9.eE]+)')
    txt = re.compile(r"\b(" + "|".join(names) + r")\s*=\s*([-+0-9.eE]+)", re.IGNORECASE)
    with open(path, errors="replace") as fh:
        for i, line in enumerate(fh):
            if i > max_lines or "<calculation>" in line:
                break
            for k, v in xml.findall(line) + txt.findall(re.split(r"[!#]", line, maxsplit=1)[0]):
                k = k.upper()
                if k in names and k not in found:
                    try:
                        found[k] = float(v.rstrip(";"))
                    except ValueError:
                        pass
            if len(found) == len(names):
                break
    return found


def _vasp_frames(path: Path, fmt: str, meta: _Meta) -> Iterator[dict]:
    par = _scan_vasp_params(path)
    what = "vasprun.xml" if fmt == "vasp-xml" else "OUTCAR"
    if "POTIM" in par and par["POTIM"] > 0:  # both files hold every ionic step
        meta.dt_fs, meta.dt_from = par["POTIM"], f"{what} (POTIM, every ionic step stored)"
    _vasp_temperature(meta, par, f"{path.name} (TEBEG)", path.parent / "INCAR")
    yield from _ase_frames(path, fmt, meta)


def _vasp_temperature(meta: _Meta, par: dict, where: str, incar: Path | None) -> None:
    """TEBEG (K) of the file, else of the ``INCAR`` beside it; a TEBEG under MIN_TEMPERATURE_K (VASP
    writes 0.0001 for a relaxation) or none at all is no temperature, and ``meta.t_missing`` says so."""
    if meta.temperature_K is not None:
        return
    tebeg = par.get("TEBEG")
    if (tebeg is None or tebeg < MIN_TEMPERATURE_K) and incar is not None and incar.is_file():
        beside = _scan_vasp_params(incar).get("TEBEG")
        if beside is not None and beside >= MIN_TEMPERATURE_K:
            tebeg, where = beside, "INCAR beside it (TEBEG)"
    if tebeg is not None and tebeg >= MIN_TEMPERATURE_K:
        meta.temperature_K, meta.t_from = tebeg, where
    else:
        name = where.split(" (", 1)[0]
        meta.t_missing = (f"{name} has no TEBEG" if tebeg is None
                          else f"{name} sets TEBEG = {tebeg:g} K, which is no MD temperature")


def _xdatcar_frames(path: Path, fmt: str, meta: _Meta) -> Iterator[dict]:
    """Streams an XDATCAR (fixed or variable cell), one configuration at a time, as ASE reads it."""
    from ase.symbols import symbols2numbers

    incar = path.parent / "INCAR"
    par = _scan_vasp_params(incar) if incar.exists() else {}
    cell = numbers = None
    steps: list[int] = []
    with open(path) as fh:
        while True:
            line = fh.readline()
            if not line:
                break
            if "Direct configuration=" not in line:  # a header: comment, scale, cell, symbols, counts
                try:
                    scale = float(fh.readline())
                except ValueError:
                    break
                rows = [fh.readline().split() for _ in range(3)]
                cell = np.array(rows, float) * scale
                symbols = fh.readline().split()
                counts = [int(c) for c in fh.readline().split()]
                numbers = np.repeat(symbols2numbers(symbols), counts)
                line = fh.readline()
                if "configuration" not in line:
                    raise DynamatError(f"{path}: expected 'Direct configuration=' after the header")
            if meta.numbers is None:
                meta.numbers, meta.pbc = numbers, np.ones(3, bool)
            m = re.search(r"configuration=\s*(\d+)", line)
            step = int(m.group(1)) if m else len(steps) + 1
            block = np.loadtxt([fh.readline() for _ in range(len(numbers))], ndmin=2)[:, :3]
            steps.append(step)
            if len(steps) == 2 and meta.dt_fs is None and "POTIM" in par:
                meta.dt_fs = par["POTIM"] * (steps[1] - steps[0])
                meta.dt_from = f"INCAR POTIM × {steps[1] - steps[0]} configurations per frame"
            if len(steps) == 1 and par:  # an INCAR beside it
                _vasp_temperature(meta, par, "INCAR (TEBEG)", None)
            yield {"positions": block @ cell, "cell": cell.copy(), "md_step": step, "numbers": numbers}


#: what names an i-PI run folder's output prefix: its positions in any form a run writes them
_IPI_POSITIONS = (".pos_0.extxyz", ".pos_0.xyz", ".pos_0.bin", ".frames.f64")


def _ipi_prefix(path: Path) -> str | None:
    """The output prefix of the i-PI run in folder ``path`` (``simulation``), None when it holds none."""
    for suffix in _IPI_POSITIONS:
        found = sorted(path.glob(f"*{suffix}"))
        if found:
            return found[0].name[: -len(suffix)]
    return None


def _ipi_frames(path: Path, fmt: str, meta: _Meta) -> Iterator[dict]:
    from dynamat.io.run_folder import input_info, read_run_trajectory

    # the run-folder reader `dynamat score` uses: extxyz, i-PI's binary frames and the driver's frame record
    # of every-step runs, forces where the run wrote them
    t = read_run_trajectory(path, prefix=_ipi_prefix(path))
    meta.notes.extend(t.notes)
    meta.numbers, meta.pbc = t.numbers, np.ones(3, bool)
    if t.dt_fs is not None:
        meta.dt_fs, meta.dt_from = t.dt_fs, "i-PI properties (time column)"
    info = input_info(path)
    temp = info.get("temperature_K")  # the run readers' rule: the ensemble's, in kelvin
    meta.ensembles.append(info.get("ensemble"))
    if temp is not None:
        meta.temperature_K, meta.t_from = temp, "i-PI input.xml (ensemble temperature)"
    for i in range(t.n_frames):
        fr = {"positions": t.positions[i], "cell": t.cells[i], "numbers": t.numbers}
        if t.energies is not None:
            fr["energy"] = t.energies[i]
        if t.forces is not None:
            fr["forces"] = t.forces[i]
        if t.stress is not None:
            fr["stress"] = t.stress[i]
        if t.steps is not None:
            fr["md_step"] = int(t.steps[i])
        if t.velocities is not None:
            fr["velocities"] = t.velocities[i]
        yield fr


def _lammps_frames(path: Path, fmt: str, meta: _Meta) -> Iterator[dict]:
    with open(path) as fh:
        head = "".join(fh.readline() for _ in range(12))
        if "ITEM: ATOMS" in head and "element" not in head.split("ITEM: ATOMS", 1)[1].split("\n", 1)[0]:
            raise DynamatError(f"{path}: the LAMMPS dump has no 'element' column, so its atom types "
                               "cannot be mapped to elements (dump with `dump_modify ... element ...`)")
    steps = []
    with open(path) as fh:
        prev = ""
        for line in fh:
            if prev.startswith("ITEM: TIMESTEP"):
                steps.append(int(line.split()[0]))
            prev = line
    for i, fr in enumerate(_ase_frames(path, fmt, meta)):
        if i < len(steps):
            fr["md_step"] = steps[i]
        # a dump holds no total energy: ASE's reader fills in 0.0, which is no label (ase/io/lammpsrun.py)
        fr.pop("energy", None)
        yield fr


_READERS: dict[str, Callable[[Path, str, _Meta], Iterator[dict]]] = {
    "extxyz": _ase_frames,
    "traj": _ase_frames,
    "vasp-xml": _vasp_frames,
    "vasp-out": _vasp_frames,
    "vasp-xdatcar": _xdatcar_frames,
    "ipi": _ipi_frames,
    "lammps-dump-text": _lammps_frames,
}


def iter_frames(path: str | Path, meta: _Meta | None = None) -> Iterator[dict]:
    """The frames of one source file (or i-PI/Matbench-discovery folder), one dict each."""
    path = Path(path)
    fmt = detect_format(path)
    if fmt == "mbd-folder":
        path, fmt = path / "traj.extxyz", "extxyz"
    return _READERS[fmt](path, fmt, meta if meta is not None else _Meta())


# ---------------------------------------------------------------------------------------------
@dataclass
class ImportedSystem:
    """What :func:`import_reference` wrote for one system."""

    name: str
    out: str
    sources: list[str]
    formats: list[str]
    n_frames: int
    n_atoms: int
    dt_fs: float  # time between saved frames, fs
    dt_source: str
    temperature_K: float
    temperature_source: str
    labels: dict[str, bool]  # energy, forces, stress present
    check: EquipartitionCheck | None
    forced: bool = False
    notes: list[str] = field(default_factory=list)
    first_frame: int = 0  # frames of the sources dropped before the first one kept (--start-frame, --drop-ps)
    warnings: list[str] = field(default_factory=list)  # kept, but probably not what the user wants
    velocity_temperature_K: float | None = None  # of the files' own velocities, where every frame has them

    @property
    def velocity_implied_dt_fs(self) -> float | None:
        """The interval (fs) at which the frames move as the files' own velocities say (None without them)."""
        if self.check is None or self.velocity_temperature_K is None:
            return None
        return _interval_at(self.check, self.velocity_temperature_K)

    @property
    def label_free(self) -> bool:
        """True when there are neither energies nor forces: no single-point error (Eq. 1-2) on this system
        (with one of them, ``dynamat singlepoint`` scores the equation it allows)."""
        return not (self.labels.get("energy") or self.labels.get("forces"))

    def as_dict(self) -> dict:
        d = asdict(self)
        d["label_free"] = self.label_free
        if self.check is not None:
            d["check"]["ok"] = self.check.ok
        return d


def _system_groups(sources: Sequence[str | Path], name: str | None) -> list[tuple[str, list[Path]]]:
    paths = [Path(s) for s in sources]
    if not paths:
        raise DynamatError("no source given")
    for p in paths:
        if not p.exists():
            raise DynamatError(f"source not found: {p}")
    if len(paths) == 1 and paths[0].is_dir() and not (paths[0] / "traj.extxyz").exists():
        subs = sorted(d for d in paths[0].iterdir() if d.is_dir() and (d / "traj.extxyz").exists())
        if subs:  # Matbench-discovery's raw layout: one folder per system
            if name and len(subs) > 1:
                raise DynamatError(f"{paths[0]} holds {len(subs)} systems; --name names one system")
            return [(name or d.name, [d]) for d in subs]
    p0 = paths[0]
    if name:
        default = name
    elif p0.is_dir():
        default = p0.resolve().name
    elif detect_format(p0) in ("vasp-xml", "vasp-out", "vasp-xdatcar") or p0.name == "traj.extxyz":
        default = p0.resolve().parent.name
    else:
        default = p0.name
        for suffix in (".gz", ".bz2", ".xz", ".extxyz", ".xyz", ".traj", ".lammpstrj", ".dump"):
            default = default.removesuffix(suffix)
    return [(default, paths)]


def import_reference(
    sources: Sequence[str | Path],
    out_h5: str | Path,
    name: str | None = None,
    dt_fs: float | None = None,
    temperature_K: float | None = None,
    force: bool = False,
    isolated_energies: dict | None = None,
    progress: Callable[[str, int], None] | None = None,
    start_frame: int = 0,
    drop_ps: float | None = None,
) -> list[ImportedSystem]:
    """Imports ab-initio MD into ``out_h5`` (created, or a group added) in the DynaMat v1.0 schema.

    ``sources``: files (or folders) of one system, concatenated in order, or one folder in
    Matbench-discovery's raw layout (a system per subfolder). ``name``: the group name [default:
    the folder's or file's name]. ``dt_fs``: time between the *saved frames* in fs; ``temperature_K``
    the run's temperature: both default to the files' metadata (and the name's ``_<T>K``).
    ``force``: keep an interval the equipartition check refuses, and replace an existing group.
    ``isolated_energies``: {element symbol or Z: eV}, stored as the group attribute
    ``isolated_atom_energies_eV`` (JSON, by symbol) for Eq. 1's isolated-atom referencing.
    ``progress(name, frames_written)`` is called every 512 frames. ``start_frame`` (a frame index of
    the concatenated sources) or ``drop_ps`` (ps from the first frame: by ``dt_fs``, else by the
    frames' ``time_fs``, else by the files' interval) drop an unequilibrated start;
    one is detected (:func:`dynamat.metrics.equilibration.unequilibrated_start`) and named in
    ``warnings`` with the ``--start-frame``/``--drop-ps`` that removes it. A frame with a NaN or
    infinite position, cell, energy, force or stress is refused (one line: file, frame, field).
    """
    from ase.data import chemical_symbols

    out_h5 = Path(out_h5)
    if dt_fs is not None and not (np.isfinite(dt_fs) and dt_fs > 0):
        raise DynamatError(f"--dt-fs must be a positive number of fs, got {dt_fs}")
    if temperature_K is not None and not (np.isfinite(temperature_K) and temperature_K >= MIN_TEMPERATURE_K):
        raise DynamatError(f"--temperature must be a number of K, at least {MIN_TEMPERATURE_K:g}, got {temperature_K}")
    if start_frame and drop_ps is not None:
        raise DynamatError("give --start-frame or --drop-ps, not both")
    if start_frame < 0 or (drop_ps is not None and not (np.isfinite(drop_ps) and drop_ps >= 0)):
        raise DynamatError(f"--start-frame and --drop-ps drop frames from the start: got {start_frame}, {drop_ps}")
    drop = (int(start_frame), drop_ps)
    groups = _system_groups(sources, name)
    for sys_name, _ in groups:  # all, before any is imported: a system becomes a run folder and a temporary file's name
        try:
            check_name("system", sys_name)
        except DynamatError as exc:
            raise DynamatError(f"{exc}; name the system with --name NAME" if not name else str(exc)) from None
    if out_h5.exists() and not _is_hdf5(out_h5):  # --force too: it replaces systems, never another file
        raise DynamatError(f"--out {out_h5} exists and is not an HDF5 file; not touching it: choose another --out")
    if out_h5.exists() and not force:
        try:
            with h5py.File(out_h5, "r") as f:
                held = [sys_name for sys_name, _ in groups if sys_name in f]
        except OSError as exc:  # HDF5's signature, but cut short or unreadable
            raise DynamatError(f"--out {out_h5} exists and is not a readable HDF5 file ({h5_reason(exc)}); not "
                               "touching it: choose another --out") from None
        if held:
            raise DynamatError(f"{out_h5} already holds a system {held[0]!r}; pass --force to replace it")
    # every system to its own temporary file first: --out is opened for writing only once all imported,
    # so a system that fails leaves it as it was (no half of a folder's systems)
    tmps = {sys_name: out_h5.with_name(f".{out_h5.name}.{sys_name}.{os.getpid()}.tmp") for sys_name, _ in groups}
    try:
        results = [_import_one(sys_name, paths, tmps[sys_name], dt_fs, temperature_K, force, isolated_energies,
                               progress, chemical_symbols, drop) for sys_name, paths in groups]
        with h5py.File(out_h5, "a") as dst:
            for res in results:
                _store(tmps[res.name], dst, res)
                res.out = str(out_h5)
    finally:
        for tmp in tmps.values():
            tmp.unlink(missing_ok=True)
    return results


def _is_hdf5(path: Path) -> bool:
    try:
        return bool(h5py.is_hdf5(path))
    except OSError:
        return False


def _store(tmp: Path, dst: h5py.File, res: ImportedSystem) -> None:
    """Copies the system ``res.name`` from ``tmp`` into ``dst``, replacing a group of that name."""
    sys_name = res.name
    with h5py.File(tmp, "r") as src:
        if sys_name in dst:
            # its further trajectories go with it: left, they would set the replaced system's noise floor
            stale = replicas_in(dst, sys_name)
            for n in (sys_name, *stale):
                del dst[n]
            if stale:
                res.notes.append(f"replaced {sys_name!r} and removed its replicas {', '.join(stale)}")
        src.copy(src[sys_name], dst, name=sys_name)


def _import_one(sys_name, paths, tmp, dt_arg, t_arg, force, isolated, progress, chemical_symbols,
                drop=(0, None)) -> ImportedSystem:
    """One system: stream its frames into ``tmp``, settle and check the frame interval and temperature,
    then write the group's attributes."""
    meta = _Meta()
    with h5py.File(tmp, "w") as f:
        writer, formats, first_steps, dropped = _stream_frames(f, sys_name, paths, meta, progress, dt_arg, drop)
        g = f[sys_name]
        notes = list(meta.notes)
        dt, dt_src = _frame_interval(dt_arg, meta, notes)
        temp, t_src = _temperature(sys_name, t_arg, meta)
        vel = _velocity_temperature(meta.stored_t, temp)
        if dt is None:
            probe = check_frame_interval(g["positions"], g["cell"], meta.pbc, meta.numbers, 1.0, temp)
            why = (f"the file's own velocities ({vel.temperature_K:.0f} K) suggest "
                   f"{_interval_at(probe, vel.temperature_K):.3g} fs" if vel
                   else f"equipartition at {temp:g} K suggests {probe.implied_dt_fs:.3g} fs")
            raise DynamatError(f"{sys_name}: the source does not say the time between its frames; give --dt-fs ({why})")
        check = _checked_interval(sys_name, g, meta, dt, dt_src, temp, force, notes, dropped, vel)
        warnings = (_start_warnings(sys_name, g, meta, dt, dropped)
                    + _temperature_warnings(sys_name, vel, temp, t_src, meta.com_share))
        attrs = {
            "source_files": json.dumps([str(p) for p in paths]),
            "source_formats": json.dumps(formats),
            "dt_fs_source": dt_src,
            "temperature_source": t_src,
        }
        t_v = vel.temperature_K if vel else None
        if check is not None:
            attrs["equipartition_temperature_K"] = check.temperature_K
        if t_v is not None:
            attrs["velocity_temperature_K"] = t_v
        if dropped:
            attrs["source_first_frame"] = dropped
        npt = meta.ensembles[0] if meta.ensembles and all(e == meta.ensembles[0] for e in meta.ensembles) else None
        if npt:  # an i-PI NPT run: runs against it take its ensemble (catalogue.get_system)
            attrs.update(npt)
            notes.append(f"the i-PI input ran NPT at {npt['pressure_GPa']:g} GPa ({npt['barostat']} barostat, tau "
                         f"{npt['tau_barostat_fs']:g} fs): runs against this reference do too, unless --ensemble nvt")
        if isolated:
            attrs["isolated_atom_energies_eV"] = json.dumps(_isolated_by_symbol(isolated, meta.numbers,
                                                                                chemical_symbols))
        n = writer.finish(dt, temp, attrs)
        labels = {k: k in g for k in ("energy", "forces", "stress")}
        if len(first_steps) >= 2 and first_steps[1] <= first_steps[0]:
            notes.append("md_step does not increase between the first frames")
    return ImportedSystem(
        name=sys_name, out="", sources=[str(p) for p in paths], formats=formats, n_frames=n,
        n_atoms=len(meta.numbers), dt_fs=dt, dt_source=dt_src, temperature_K=temp, temperature_source=t_src,
        labels=labels, check=check, forced=bool(check is not None and not check.ok and force), notes=notes,
        first_frame=dropped, warnings=warnings, velocity_temperature_K=t_v,
    )


def _start_warnings(sys_name, g, meta: _Meta, dt: float, dropped: int) -> list[str]:
    """A warning naming the --start-frame / --drop-ps that removes an unequilibrated start, if any."""
    k = unequilibrated_start(g["positions"], g["cell"], meta.pbc, dt)
    if not k:
        return []
    first = dropped + k
    return [f"{sys_name}: frames {dropped}-{first - 1} of the source are far more ordered than the rest (an "
            f"unequilibrated start, e.g. the ideal lattice: spikes in the reference g(r)); frame {first} is the "
            f"first equilibrated one: import again with --start-frame {first} or --drop-ps {first * dt / 1000:.6g}"]


def _stream_frames(f, sys_name, paths, meta: _Meta, progress, dt_arg=None, drop=(0, None)):
    """Every frame of ``paths`` from the first kept one (``drop``: start frame, or ps) into a new group
    of ``f``: (writer, formats, the first md_steps, frames dropped). Every frame must hold the first
    frame's atoms in its order, and the kept ones must follow each other one interval apart
    (:class:`_Continuity`) and be at least ``MIN_MATCHED_FRAMES``; their ``time_fs`` give ``meta`` an
    interval where nothing else did."""
    formats, steps_seen = [], []
    writer = keep = first = None
    dropped = 0
    clock = _Continuity(meta.notes)
    for path in paths:
        formats.append(detect_format(path))
        clock.new_file()
        for i, fr in enumerate(iter_frames(path, meta)):
            first = first or (path, fr["numbers"], np.array(meta.pbc, bool))
            _refuse_other_atoms(path, i, fr.pop("numbers"), *first[:2])
            if i == 0 and not np.array_equal(meta.pbc, first[2]):  # each file's header sets it
                raise DynamatError(f"{path} is periodic along {np.asarray(meta.pbc, bool).tolist()} where "
                                   f"{first[0]} is along {first[2].tolist()}: another system; import it separately")
            if keep is None:  # the reader has read its header: the files' interval is known if they say it
                keep = _drop_rule(drop, dt_arg if dt_arg is not None else meta.dt_fs, fr)
            if writer is None and not keep(dropped, path, i, fr):
                dropped += 1
                continue
            _refuse_non_finite(path, i, fr)
            clock.check(path, i, fr)
            _record_velocities(meta, fr.pop("velocities", None), first[1])
            if writer is None:
                writer = ReferenceGroupWriter(f.create_group(sys_name), first[1], meta.pbc)
            if "md_step" in fr and len(steps_seen) < 3:
                steps_seen.append(fr["md_step"])
            writer.add(**{k: v for k, v in fr.items() if k != "time_fs"})
            if progress and writer.n_frames % 512 == 0:
                progress(sys_name, writer.n_frames)
    _refuse_too_few(paths, writer, dropped)
    writer._flush()
    if progress:
        progress(sys_name, writer.n_frames)
    meta.numbers = writer.numbers  # the stored ones give the masses of the equipartition check
    if meta.dt_fs is None and clock.dt_fs is not None:
        meta.dt_fs, meta.dt_from = clock.dt_fs, "file metadata (time_fs)"
    return writer, formats, steps_seen, dropped


def _refuse_too_few(paths, writer, dropped: int) -> None:
    """Scoring compares at least MIN_MATCHED_FRAMES frames of each side over the matched duration, and
    the reference's own frames bound its side: a shorter reference would import but never score."""
    n = 0 if writer is None else writer.n_frames
    if n >= MIN_MATCHED_FRAMES:
        return
    after = f" after the first {dropped} (--start-frame/--drop-ps)" if dropped else ""
    if n == 0:
        raise DynamatError(f"{', '.join(map(str, paths))} holds no frames{after}")
    raise DynamatError(f"{', '.join(map(str, paths))} holds {n} frame{'s' * (n != 1)}{after}; a reference needs "
                       f"at least {MIN_MATCHED_FRAMES}, as scoring compares at least {MIN_MATCHED_FRAMES} frames "
                       "of each trajectory")


def _refuse_other_atoms(path: Path, i: int, numbers, first_path: Path, first_numbers) -> None:
    """Every frame holds the first frame's atoms, element by element in its order: the group stores the
    first frame's atomic numbers, so another system's frames, or the same atoms listed in another order,
    would be scored (and weighed by mass) as if they were the first's."""
    from ase.data import chemical_symbols
    from ase.symbols import Symbols

    if len(numbers) != len(first_numbers):
        raise DynamatError(f"{path}: frame {i} has {len(numbers)} atoms where the first frame has {len(first_numbers)}")
    if np.array_equal(numbers, first_numbers):
        return
    now, was = Symbols(numbers).get_chemical_formula(), Symbols(first_numbers).get_chemical_formula()
    if now != was:
        raise DynamatError(f"{path}: frame {i} has atoms {now} where the first frame ({first_path}) has {was}: "
                           "another system; import it separately (its own --name)")
    k = int(np.flatnonzero(np.asarray(numbers) != np.asarray(first_numbers))[0])
    raise DynamatError(f"{path}: frame {i} has atoms {now} in another order than the first frame's ({first_path}): "
                       f"atom {k} is {chemical_symbols[numbers[k]]}, {chemical_symbols[first_numbers[k]]} there; "
                       "write every segment with its atoms in one order")


def _drop_rule(drop, dt_fs: float | None, fr0: dict) -> Callable[[int, Path, int, dict], bool]:
    """Whether a frame before the first kept one is kept, given (frames dropped so far, path, index,
    frame): by its index (``--start-frame``; ``--drop-ps`` over the interval ``dt_fs``) or, where no
    interval was given and the frames carry ``time_fs``, by its time since the first frame."""
    start_frame, drop_ps = drop
    if drop_ps is None:
        return lambda k, *_: k >= start_frame
    if dt_fs is not None:
        n = int(np.ceil(drop_ps * 1000.0 / dt_fs - 1e-6))
        return lambda k, *_: k >= n
    if "time_fs" not in fr0:
        raise DynamatError("--drop-ps needs the time between frames, which the source does not say: "
                           "give --dt-fs, or --start-frame instead")
    t0, cut_fs = fr0["time_fs"], drop_ps * 1000.0 - TIME_TOL_FS

    def by_time(k, path, i, fr):
        if "time_fs" not in fr:
            raise DynamatError(f"{path}: frame {i} has no time_fs, so --drop-ps cannot tell how far it is "
                               "from the first frame; give --dt-fs, or --start-frame instead")
        return fr["time_fs"] - t0 >= cut_fs
    return by_time


#: least tolerance on the time between frames: writers print times rounded, and sum them in floats
TIME_TOL_FS = 1e-3


class _Continuity:
    """Consecutive kept frames one interval apart: by ``time_fs`` across every source (the first two
    times set the interval), by ``md_step`` within a file (its first two steps set the stride) and
    across files whose step counter goes on. A gap (a segment missing) or an overlap (a restart that
    wrote frames again) would otherwise be scored as continuous dynamics: wrong velocities and VDOS."""

    def __init__(self, notes: list[str]):
        self.notes = notes
        self.dt_fs = None
        self.time = None  # (path, index, time_fs) of the last kept frame, while frames carry a time
        self.step = self.stride = self.first_step = None  # this file's: (path, index, md_step) of the last
        self.before = None  # (first step, (path, index, last step), stride) of the file before

    def new_file(self) -> None:
        if self.step is not None:
            self.before = (self.first_step, self.step, self.stride)
        self.step = self.stride = self.first_step = None

    def check(self, path: Path, i: int, fr: dict) -> None:
        if "time_fs" in fr:
            self._time(path, i, fr["time_fs"])
        elif self.time is not None:  # nothing to compare with: said, not refused
            self.notes.append(f"{path} frame {i} has no time_fs: no gap or overlap is looked for from there on")
            self.time = None
        if "md_step" in fr:
            self._step(path, i, fr["md_step"])

    def _time(self, path, i, t) -> None:
        if self.time is not None:
            gone = t - self.time[2]
            if self.dt_fs is None and gone > TIME_TOL_FS:
                self.dt_fs = gone
            elif self.dt_fs is None or abs(gone - self.dt_fs) > max(TIME_TOL_FS, 1e-6 * self.dt_fs):
                raise _discontinuity(path, i, t, self.time, self.dt_fs, "time_fs", "fs")
        self.time = (path, i, t)

    def _step(self, path, i, step) -> None:
        if self.step is None:
            self.first_step = step
            self._across_files(path, i, step)
        elif self.stride is None:
            self.stride = step - self.step[2]  # not increasing: noted by _import_one, not checked
        elif self.stride > 0 and step - self.step[2] != self.stride:
            raise _discontinuity(path, i, step, self.step, self.stride, "md_step", "steps")
        self.step = (path, i, step)

    def _across_files(self, path, i, step) -> None:
        if self.before is None or (self.before[2] or 0) <= 0:  # no stride known to go on with
            return
        first, last, stride = self.before
        # a step at or before the file before's first one: the counter started again (a VASP XDATCAR
        # restarts at 1), which says nothing of the time between the files
        if step > first and step != last[2] + stride:
            raise _discontinuity(path, i, step, last, stride, "md_step", "steps")


def _discontinuity(path, i, value, prev, interval, label: str, unit: str) -> DynamatError:
    ppath, pi, pv = prev
    before = f"frame {pi}" if ppath == path else f"{ppath} frame {pi}"
    apart = f"frames {interval:.10g} {unit} apart" if interval else "no time between them"
    if interval and value - pv > interval:
        fix = ("a gap (frames missing between the segments): import the segments separately, each its own "
               "system (--name)")
    else:
        fix = ("an overlap (frames written twice, e.g. by a restart): cut the repeated frames out of one "
               "segment, or import the segments separately")
    return DynamatError(f"{path}: frame {i} is at {label} {value:.10g} after {before} at {pv:.10g}, "
                        f"{apart}: {fix}")


def _refuse_non_finite(path: Path, i: int, fr: dict) -> None:
    """A NaN or infinite number (a failed SCF step, a crashed writer) is refused, never stored: it
    would poison every error average of a reference silently."""
    for key in ("positions", "cell", "energy", "forces", "stress"):
        v = fr.get(key)
        if v is not None and not np.all(np.isfinite(v)):
            raise DynamatError(f"{path}: frame {i} has a non-finite {key} (NaN or inf); cut that frame out "
                               "of the file, or start the import after it (--start-frame)")


def _frame_interval(dt_arg, meta: _Meta, notes: list[str]) -> tuple[float | None, str]:
    """(fs, where from): the argument, else the files' metadata."""
    if dt_arg is None:
        return meta.dt_fs, meta.dt_from
    dt = float(dt_arg)
    if meta.dt_fs is not None and abs(meta.dt_fs - dt) > 1e-6 * dt:
        notes.append(f"--dt-fs {dt:g} overrides {meta.dt_from}: {meta.dt_fs:g} fs")
    return dt, "argument (--dt-fs)"


def _temperature(sys_name: str, t_arg, meta: _Meta) -> tuple[float, str]:
    """(K, where from): the argument, else the files' metadata, else the name's ``_<T>K``."""
    if t_arg is not None:
        return float(t_arg), "argument (--temperature)"
    if meta.temperature_K is not None:
        if not meta.temperature_K >= MIN_TEMPERATURE_K:  # never an interval "suggested" against ~0 K
            raise DynamatError(f"{sys_name}: {meta.t_from} says {meta.temperature_K:g} K, which is no MD "
                               "temperature; give --temperature K (the run's temperature)")
        return meta.temperature_K, meta.t_from
    temp = temperature_from_name(sys_name)
    if temp is None:
        why = meta.t_missing or "the source does not say its temperature"
        raise DynamatError(f"{sys_name}: {why}; give --temperature K (the run's temperature)")
    return temp, "the name"


def _checked_interval(sys_name, g, meta: _Meta, dt, dt_src, temp, force, notes, dropped: int,
                      vel: EquipartitionCheck | None) -> EquipartitionCheck | None:
    """The equipartition check of ``dt`` (None under 4 frames); a refused interval raises unless ``force``."""
    if g["positions"].shape[0] < 4:
        notes.append("fewer than 4 frames: frame interval not checked")
        return None
    check = check_frame_interval(g["positions"], g["cell"], meta.pbc, meta.numbers, dt, temp)
    if not check.has_target:  # _temperature lets none through: never suggest an interval against ~0 K
        raise DynamatError(f"{sys_name}: {temp:g} K is no MD temperature; give --temperature K")
    if not check.ok and not force and not np.isfinite(check.implied_dt_fs):
        raise DynamatError(f"{sys_name}: the atoms do not move between frames (0 K by equipartition): not an MD "
                           f"trajectory at {temp:g} K; pass --force to import it anyway")
    if not check.ok and not force:
        raise DynamatError(_interval_refusal(sys_name, g, meta, check, dt_src, temp, dropped, vel))
    return check


def _interval_refusal(sys_name, g, meta: _Meta, check: EquipartitionCheck, dt_src, temp, dropped: int,
                      vel: EquipartitionCheck | None) -> str:
    """Why an interval is refused, and what to give instead. Equipartition cannot tell frames further apart
    than said from a run colder than said (an unequilibrated start, a weak thermostat): the files' own
    velocities can, where they hold them; without them both ways out are named."""
    dt = check.dt_fs
    head = f"{sys_name}: frames {dt:g} fs apart ({dt_src}) give {check.temperature_K:.0f} K by equipartition"
    coarse = (" (frames this far apart alias fast vibrations: the check may be off, --force keeps them)"
              if check.coarse_fraction > 0.2 else "")
    if vel is None:
        return (f"{head}, not {temp:g} K: they look {check.implied_dt_fs:.3g} fs apart; give --dt-fs "
                f"{check.implied_dt_fs:.3g}, or, if the interval is right, the run is not at {temp:g} K: "
                f"{_colder_run_hint(g, meta, dt, dropped)}; or pass --force{coarse}")
    t_v = vel.temperature_K
    dt_v = _interval_at(check, t_v)
    if max(dt_v / dt, dt / dt_v) - 1.0 > check.tolerance:
        return (f"{head}, not the {t_v:.0f} K of the file's own velocities: they look {dt_v:.3g} fs apart; "
                f"give --dt-fs {dt_v:.3g} or pass --force{coarse}")
    return (f"{head}, as the file's own velocities do ({t_v:.0f} K), not {temp:g} K: the interval is right and "
            f"the run is not at {temp:g} K: {_colder_run_hint(g, meta, dt, dropped)}; or pass --force")


def _colder_run_hint(g, meta: _Meta, dt: float, dropped: int) -> str:
    """--start-frame K where the start is unequilibrated, and --temperature."""
    k = unequilibrated_start(g["positions"], g["cell"], meta.pbc, dt)
    start = f"drop its unequilibrated start (--start-frame {dropped + k}) or " if k else ""
    return f"{start}give the temperature it ran at (--temperature)"


def _interval_at(check: EquipartitionCheck, temperature_K: float) -> float:
    """The frame interval (fs) at which the check's frames would be at ``temperature_K`` (T ∝ 1/dt²)."""
    return float(check.dt_fs * np.sqrt(check.temperature_K / temperature_K))


def _record_velocities(meta: _Meta, velocities, numbers) -> None:
    """Adds a kept frame's kinetic temperature from its own velocities (Å/fs) to ``meta.stored_t``, and its centre
    of mass's share of the kinetic energy to ``meta.com_share``."""
    if meta.stored_t is None:
        return
    if velocities is None:
        meta.stored_t = None
        return
    v, m = np.asarray(velocities, float), atomic_masses[numbers]
    meta.stored_t.append(float(kinetic_temperature(v[None], m)[0]))
    two_k = float(np.einsum("n,nk,nk->", m, v, v))
    p = m @ v
    meta.com_share.append(float(p @ p / m.sum() / two_k) if two_k > 0 else 0.0)


def _temperature_warnings(sys_name, vel: EquipartitionCheck | None, temp: float, t_src: str,
                          com_share: list[float]) -> list[str]:
    """A warning where the files' own velocities put the run off the temperature it is imported at by more
    than 5 % and three block standard errors: the model's runs are thermostatted at that temperature. Where the
    centre of mass moves with over 1 % of the kinetic energy it says so: the temperature (3N − 3 degrees of
    freedom) and the VDOS leave it out, and a thermostat of the total kinetic energy leaves the rest that cooler
    (ASE MD from a Maxwell-Boltzmann draw without ``Stationary``)."""
    if vel is None or abs(vel.temperature_K - temp) <= max(0.05 * temp, 3.0 * vel.stderr_K):
        return []
    share = float(np.mean(com_share)) if com_share else 0.0
    drift = (f"; its centre of mass moves with {100 * share:.1f} % of the kinetic energy, which the temperature "
             "leaves out" if share > 0.01 else "")
    return [f"{sys_name}: the files' own velocities say {vel.temperature_K:.0f} ± {vel.stderr_K:.0f} K, not the "
            f"{temp:g} K ({t_src}) that runs against it are thermostatted at: give --temperature, or drop an "
            f"unequilibrated start (--start-frame){drift}"]


#: stored velocities whose temperature is further than this factor from the run's are not taken as evidence:
#: they are in other units than the reader assumed (a LAMMPS dump in real units reads 10⁶ × too hot, Å/fs
#: taken for ASE units ~100 ×), while a run that never reached its temperature is within it (an unthermostatted
#: start from the lattice halves it)
STORED_VELOCITY_FACTOR = 3.0


def _velocity_temperature(stored_t: list[float] | None, temp: float) -> EquipartitionCheck | None:
    """The kinetic temperature of the files' own velocities (mean and block standard error, K) over the interval
    check's window (the middle CHECK_WINDOW frames), or None: no velocities, all zero (a file written without
    motion), or further than STORED_VELOCITY_FACTOR from the run's temperature ``temp`` (K)."""
    if not stored_t:
        return None
    w = min(CHECK_WINDOW, len(stored_t))
    t0 = (len(stored_t) - w) // 2
    vel = equipartition_check(stored_t[t0 : t0 + w], 1.0, temp)  # stored velocities: no interval, no filter
    mean = vel.temperature_K
    plausible = np.isfinite(mean) and temp / STORED_VELOCITY_FACTOR < mean < temp * STORED_VELOCITY_FACTOR
    return vel if plausible else None


def _isolated_by_symbol(isolated: dict, numbers, chemical_symbols) -> dict[str, float]:
    """{symbol or Z: eV} → {symbol: eV}, covering every element of the system, else one line."""
    e_iso = {}
    for k, v in isolated.items():
        sym = chemical_symbols[int(k)] if str(k).isdigit() else str(k)
        if sym not in chemical_symbols[1:]:
            raise DynamatError(f"isolated-atom energy for unknown element {k!r}")
        e_iso[sym] = float(v)
    missing = sorted({chemical_symbols[z] for z in numbers} - set(e_iso))
    if missing:
        raise DynamatError(f"isolated-atom energies lack {', '.join(missing)}")
    return e_iso
