"""Reads what an i-PI run leaves (properties file, extxyz or binary trajectories, and the driver's frame
record of every-step runs) into a Trajectory.

i-PI appends to its outputs when it restarts, so rows and frames are keyed by MD step and the last
copy of each step wins: a resumed run reads back with no duplicated frames.
"""

from __future__ import annotations

import io
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from ase import units
from ase.data import atomic_numbers

from dynamat.errors import DynamatError
from dynamat.io.extxyz import dropped_frame_note, warn
from dynamat.layout import PREFIX, RunFolder
from dynamat.trajectory import Trajectory, ipi_virial_to_stress
from dynamat_driver.contract import FRAMES_HEADER_BYTES, FRAMES_MAGIC, frame_record_floats
from dynamat_driver.units import EV_PER_HARTREE, HARTREE_PER_BOHR_PER_EV_PER_ANGSTROM

_COL = re.compile(r"#\s*(?:column|cols\.)\s+(\d+)(?:-(\d+))?\s+-->\s+([^\s:]+)")
_STEP = re.compile(r"Step:\s*(\d+)")
_LATTICE = re.compile(r'Lattice="([^"]+)"')


def read_properties(path: str | Path, notes: list[str] | None = None) -> dict[str, np.ndarray]:
    """i-PI properties file → {name with units: column(s)}, one row per step in increasing step order
    (the last copy of a step wins). A last row cut mid-line (a killed job) is dropped and said
    (stderr, and ``notes`` when given)."""
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
    if rows and not rows[-1].endswith("\n"):
        rows.pop()
        _note(notes, f"{path}: the last row is incomplete (the file was cut mid-line): dropped it")
    if not rows:
        return {k: np.empty((0,) if b - a == 1 else (0, b - a)) for k, (a, b) in names.items()}
    data = np.loadtxt(io.StringIO("".join(rows)), ndmin=2)
    out = {k: (data[:, a] if b - a == 1 else data[:, a:b]) for k, (a, b) in names.items()}
    if "step" in out:
        keep = _last_unique(out["step"].astype(int))
        out = {k: v[keep] for k, v in out.items()}
    return out


def _note(notes: list[str] | None, note: str) -> None:
    warn(note)
    if notes is not None:
        notes.append(note)


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


def last_recorded_step(path: str | Path) -> int | None:
    """The MD step of the last complete record of the driver's frame record (written every step, unbuffered:
    the supervisor's progress signal when i-PI flushes its properties only at restart points)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(FRAMES_HEADER_BYTES)
            if len(head) < FRAMES_HEADER_BYTES or head[:8] != FRAMES_MAGIC:
                return None
            size = 8 * frame_record_floats(int(np.frombuffer(head, "<i8", 1, 8)[0]))
            m = (fh.seek(0, 2) - FRAMES_HEADER_BYTES) // size
            if m < 1:
                return None
            fh.seek(FRAMES_HEADER_BYTES + (m - 1) * size)
            return int(np.frombuffer(fh.read(8), "<f8")[0])
    except (OSError, ValueError):
        return None


def _last_unique(steps: np.ndarray) -> np.ndarray:
    """Indices of the last occurrence of each step, in increasing step order.

    i-PI appends after a restart, so a run resumed from step 100 after a kill at 300, and killed again
    at 200, holds 0…300 then 100…200: the last copies, by step, are 0…99, 100…200 (second pass), 201…300.
    """
    rev = steps[::-1]
    _, first_in_rev = np.unique(rev, return_index=True)  # np.unique sorts by step
    return len(steps) - 1 - first_in_rev


def read_ipi_xyz(path: str | Path, notes: list[str] | None = None) -> dict[str, np.ndarray]:
    """An i-PI ``format='ase'`` trajectory → steps (M,), symbols (N,), cells (M,3,3) Å, data (M,N,k),
    one frame per step in increasing step order (the last copy of a step wins).

    Parsed with numpy in one pass; the atom count must not change. A last frame cut anywhere (a killed
    job) is dropped and said (stderr, and ``notes`` when given); the complete frames before it are kept.
    """
    path = Path(path)
    with open(path) as fh:
        text = fh.read()
    lines = text.splitlines()
    if not lines:
        return {"steps": np.empty(0, int), "cells": np.empty((0, 3, 3)), "data": None}
    whole = lines if text.endswith("\n") else lines[:-1]  # a line without its newline was cut
    n = int(lines[0])
    block = n + 2
    m = len(whole) // block
    if m * block < len(lines):
        _note(notes, dropped_frame_note(path, m))
    if m == 0:
        raise DynamatError(f"{path}: truncated trajectory (no complete frame)")
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


def bin_frame_layout(head: bytes) -> tuple[int, int, int]:
    """(atoms, bytes per frame, offset of the title) of an i-PI ``format='bin'`` trajectory, from its
    first bytes. A frame is: h (9 float64, lattice vectors as columns), int64 N, N×3 float64, int64 L,
    the species joined by '|' (L UTF-32 characters), then the title (UTF-32) without a length: i-PI's
    ``Step:  %10d  Bead:   %5d <what>{<units>}  cell{<units>}``, the same length in every frame."""
    if len(head) < 88:
        raise ValueError("shorter than one frame header")
    n = int(np.frombuffer(head, np.int64, 1, 72)[0])
    if not 0 < n < 10**8 or len(head) < 88 + 24 * n:
        raise ValueError("not an i-PI binary frame")
    at = 80 + 24 * n
    length = int(np.frombuffer(head, np.int64, 1, at)[0])
    title_at = at + 8 + 4 * length
    text = head[title_at:title_at + 4 * 400]
    text = text[: len(text) // 4 * 4].decode("utf-32-le", errors="replace")
    m = re.match(r"Step:\s*\d+\s+Bead:\s*\d+\s+\S+\{[^}]*\}\s+cell\{[^}]*\}", text)
    if m is None:
        raise ValueError("no i-PI title after the first frame")
    return n, title_at + 4 * m.end(), title_at


def read_bin_layout(fh) -> tuple[int, int, int]:
    """:func:`bin_frame_layout` of the open binary file ``fh``, reading only its first frame."""
    fh.seek(0)
    head = fh.read(80)
    if len(head) < 80:
        raise ValueError("shorter than one frame header")
    n = int(np.frombuffer(head, np.int64, 1, 72)[0])
    if not 0 < n < 10**8:
        raise ValueError("not an i-PI binary frame")
    head += fh.read(24 * n + 8)
    if len(head) < 88 + 24 * n:
        raise ValueError("shorter than one frame")
    length = int(np.frombuffer(head, np.int64, 1, 80 + 24 * n)[0])
    if not 0 <= length < 10**9:
        raise ValueError("not an i-PI binary frame")
    return bin_frame_layout(head + fh.read(4 * length + 4 * 400))


def read_ipi_bin(path: str | Path, notes: list[str] | None = None) -> dict[str, np.ndarray]:
    """An i-PI ``format='bin'`` trajectory (float64 frames, :func:`bin_frame_layout`) → the same
    dictionary as :func:`read_ipi_xyz`: steps (M,), symbols (N,), cells (M,3,3) Å as rows, data (M,N,3),
    one frame per step in increasing step order (the last copy of a step wins). A last frame cut short
    (a killed job) is dropped and said."""
    path = Path(path)
    raw = path.read_bytes()
    if not raw:
        return {"steps": np.empty(0, int), "cells": np.empty((0, 3, 3)), "data": None}
    try:
        n, size, title_at = bin_frame_layout(raw)
    except ValueError as exc:
        raise DynamatError(f"{path}: not an i-PI binary trajectory ({exc})") from None
    m = len(raw) // size
    if m * size < len(raw):
        _note(notes, dropped_frame_note(path, m))
    if m == 0:
        raise DynamatError(f"{path}: truncated trajectory (no complete frame)")
    frames = np.frombuffer(raw, np.uint8, m * size).reshape(m, size)
    floats = frames[:, : 80 + 24 * n]
    cells = floats[:, :72].copy().view(np.float64).reshape(m, 3, 3).transpose(0, 2, 1)
    data = floats[:, 80:].copy().view(np.float64).reshape(m, n, 3)
    titles = frames[:, title_at:].copy().view("<U%d" % ((size - title_at) // 4)).reshape(m)
    steps = np.array([int(_STEP.search(t).group(1)) for t in titles])
    names_at = 88 + 24 * n
    symbols = raw[names_at:title_at].decode("utf-32-le").split("|")
    keep = _last_unique(steps)
    return {"steps": steps[keep], "symbols": symbols, "cells": np.ascontiguousarray(cells[keep]), "data": data[keep]}


def read_frame_record(path: str | Path, notes: list[str] | None = None) -> dict:
    """The driver's frame record (:mod:`dynamat_driver.frames`) → the dictionary of :func:`read_ipi_xyz`
    (no symbols: the record holds none), with ``extra``: forces (M,N,3) eV/Å, energies (M,) eV and virials
    (M,3,3) eV. Positions and cells are converted to Å exactly as i-PI converts its ``positions{ase}``
    output (the same factor, one multiplication), forces back with the driver's own factor."""
    from ipi.utils.units import unit_to_user

    path = Path(path)
    raw = path.read_bytes()
    if raw[:8] != FRAMES_MAGIC or len(raw) < FRAMES_HEADER_BYTES:
        raise DynamatError(f"{path}: not a dynamat frame record")
    n = int(np.frombuffer(raw, "<i8", 1, 8)[0])
    width = frame_record_floats(n)
    body = len(raw) - FRAMES_HEADER_BYTES
    m = body // (8 * width)
    if m * 8 * width < body:
        _note(notes, dropped_frame_note(path, m))
    rec = np.frombuffer(raw, "<f8", m * width, FRAMES_HEADER_BYTES).reshape(m, width)
    steps = rec[:, 0].astype(int)
    keep = _last_unique(steps)
    rec = rec[keep]
    to_A = unit_to_user("length", "ase", 1.0)
    n3 = 3 * n
    return {
        "steps": steps[keep],
        "symbols": None,
        "cells": (rec[:, 1:10] * to_A).reshape(-1, 3, 3).transpose(0, 2, 1),
        "data": (rec[:, 10 : 10 + n3] * to_A).reshape(-1, n, 3),
        "extra": {
            "forces": rec[:, 11 + n3 : 11 + 2 * n3].reshape(-1, n, 3) / HARTREE_PER_BOHR_PER_EV_PER_ANGSTROM,
            "energies": rec[:, 10 + n3] * EV_PER_HARTREE,
            "virials": rec[:, 11 + 2 * n3 :].reshape(-1, 3, 3) * EV_PER_HARTREE,
        },
    }


def read_ipi_frames(path: str | Path, notes: list[str] | None = None) -> dict[str, np.ndarray]:
    """A trajectory of any kind a run holds: the driver's frame record, i-PI's binary (``.bin``) or extxyz."""
    path = Path(path)
    with open(path, "rb") as fh:
        if fh.read(len(FRAMES_MAGIC)) == FRAMES_MAGIC:
            return read_frame_record(path, notes)
    return (read_ipi_bin if path.suffix == ".bin" else read_ipi_xyz)(path, notes)


@dataclass
class AlignedFrames:
    """The frames of an i-PI run that every file holds, aligned by MD step once.

    ``data[role]`` is (M, N, k) for each trajectory file given (k = columns after the species);
    ``props`` the properties columns at the same steps (empty when the file is absent or does not
    cover the steps); ``notes`` what was dropped.
    """

    steps: np.ndarray  # (M,) MD steps, strictly increasing
    symbols: list[str]
    cells: np.ndarray  # (M, 3, 3) Å, from the first file
    data: dict[str, np.ndarray]
    props: dict[str, np.ndarray] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @property
    def numbers(self) -> np.ndarray:
        return np.array([atomic_numbers[s] for s in self.symbols])

    def frame_interval_fs(self) -> float | None:
        """The median spacing of the ``time`` column at these steps (fs), to 12 significant digits; None without
        it. i-PI sums its time in atomic units, so a column written to the bit (``floatformat='%24.16e'``) is
        spaced 2.4999999999999996 fs for 2.5: that is the interval given, and Matbench's time matching (the
        decimal's fraction, ``Fraction(repr(dt))``) and the frame matching need it as given."""
        t = self.props.get("time{femtosecond}")
        if t is None or len(self.steps) < 2:
            return None
        return float(f"{float(np.median(np.diff(t))):.12g}")


def read_aligned_frames(files: dict[str, Path], props_file: Path | None = None) -> AlignedFrames:
    """The steps every trajectory in ``files`` (role → path; the first is required, an absent or empty
    other is left out) holds, with the properties at those steps.

    Properties that stop short of the trajectories (i-PI killed between its writes) cut the frames to
    the steps they cover; properties that miss steps elsewhere (another stride) are left out, as they
    cannot be aligned.
    """
    notes: list[str] = []
    (first_role, first), *others = files.items()
    if not first.exists():
        raise DynamatError(f"no i-PI trajectory in {first.parent} (expected {first.name})")
    read = {first_role: read_ipi_frames(first, notes)}
    if read[first_role]["data"] is None or not len(read[first_role]["steps"]):
        raise DynamatError(f"{first} holds no frames")
    for role, path in others:
        if path is not None and path.exists():
            got = read_ipi_frames(path, notes)
            if got["data"] is not None:
                read[role] = got
    steps = read[first_role]["steps"]
    for got in read.values():
        steps = np.intersect1d(steps, got["steps"])
    props = {}
    if props_file is not None and props_file.exists():
        props, steps = _props_at(read_properties(props_file, notes), steps, props_file, notes)
    if not len(steps):
        raise DynamatError(f"the trajectories of {first.parent} share no step")
    at = {role: np.searchsorted(got["steps"], steps) for role, got in read.items()}
    data = {role: got["data"][at[role]] for role, got in read.items()}
    for role, got in read.items():  # what a frame record holds besides positions (forces, energies, virials)
        data.update({name: v[at[role]] for name, v in (got.get("extra") or {}).items()})
    symbols = next((got["symbols"] for got in read.values() if got.get("symbols") is not None), None)
    if symbols is None:
        raise DynamatError(f"no trajectory of {first.parent} names the species")
    return AlignedFrames(steps=steps, symbols=symbols, cells=read[first_role]["cells"][at[first_role]], data=data,
                         props=props, notes=notes)


def _props_at(props: dict, steps: np.ndarray, path: Path, notes: list[str]) -> tuple[dict, np.ndarray]:
    if "step" not in props or not len(props["step"]):
        return {}, steps
    p_steps = props["step"].astype(int)
    covered = np.isin(steps, p_steps)
    if not covered.all():
        behind = steps > p_steps[-1]
        if behind.all() or not covered[~behind].all():
            return {}, steps
        _note(notes, f"{path} stops at step {int(p_steps[-1])}: dropped the {int(behind.sum())} trajectory "
                     "frame(s) after it")
        steps = steps[~behind]
    j = np.searchsorted(p_steps, steps)
    return {k: v[j] for k, v in props.items()}, steps


def _forces(fr: AlignedFrames) -> np.ndarray | None:
    """The driver's recorded forces, else i-PI's forces trajectory (its ase format writes zeros for the
    positions, then the forces: the last 3 columns), else None."""
    if "forces" in fr.data:
        return fr.data["forces"]
    return fr.data["force"][:, :, -3:] if "force" in fr.data else None


def read_ipi_run(run_dir: str | Path, prefix: str = PREFIX, name: str = "") -> Trajectory:
    """Positions, velocities (Å/fs), configurational stress and potential energy of an i-PI run.

    The stress is minus i-PI's ``virial_md`` (the configurational part only; ``pressure_md`` would
    add the kinetic term). Frames are those steps present in both trajectory files
    (:func:`read_aligned_frames`); in an every-step run, the positions and the forces come from the driver's
    frame record (float64 as i-PI sent and received them) and the velocities from i-PI's binary frames. The
    forces of a run without a record come from i-PI's forces trajectory ``<prefix>.frc_0`` where the run wrote
    one (a generated reference: extxyz, or float64 ``.bin`` at stride 1), else are None.
    """
    run_dir = Path(run_dir)
    rf = RunFolder(run_dir, prefix)
    record = rf.frame_record  # every-step protocols: the driver's record, else i-PI's positions
    positions = record if record.exists() else rf.trajectory("pos")
    files = {"position": positions, "velocity": rf.trajectory("vel")}
    if not record.exists():  # a generated reference's forces (dynamat reference generate), where written
        files["force"] = rf.trajectory("frc")
    fr = read_aligned_frames(files, rf.properties)
    vir = fr.props.get("virial_md{ev/ang3}")
    energies = fr.props.get("potential{electronvolt}")
    return Trajectory(
        numbers=fr.numbers,
        positions=fr.data["position"][:, :, :3],
        cells=fr.cells,
        dt_fs=fr.frame_interval_fs(),
        # columns after species: pos(3) then velocities(3) in ASE units
        velocities=fr.data["velocity"][:, :, -3:] * units.fs if "velocity" in fr.data else None,
        energies=energies,
        forces=_forces(fr),
        stress=None if vir is None else ipi_virial_to_stress(vir),
        steps=fr.steps,
        name=name or run_dir.name,
        notes=fr.notes,
    )
