"""Reader and writer for the DynaMat v1.0 reference HDF5 schema.

One group per system with datasets ``atomic_numbers`` (N,), ``pbc`` (3,), ``positions`` (M, N, 3) Å,
``cell`` (3, 3) or (M, 3, 3) Å, and optional ``energy`` (M,) eV, ``forces`` (M, N, 3) eV/Å,
``stress`` (M, 6) Voigt or (M, 3, 3), ``md_step`` (M,). Group attributes: ``schema`` = 1,
``dt_fs`` = time between saved frames, ``temperature_kelvin``. The stress unit is eV/Å³ unless the
group attribute ``stress_unit`` says ``GPa`` or ``kbar``; the sign is ASE's (positive = tensile).

The public DynaMat v1.0 file (Matbench-discovery's packing) is *label-free*: positions, per-frame
cells and, for most systems, stress, but no ``energy`` or ``forces``. :func:`reference_labels`
says which labels a system holds without reading frames, and :func:`require_labels` turns a missing
label into one clear error. :class:`ReferenceGroupWriter` streams frames into a group in exactly
the published layout (per-frame cells, gzip, frame-major chunks of at most 512 frames).

Every reader refuses a system that reads data it does not own: an external or soft link out of its
group, a hard link shared with another system, a virtual dataset mapping another file or system, raw
data kept in another file (:func:`_borrowed`). HDF5 would follow each silently. A top-level name
starting with ``.`` is a writer's unfinished group (:func:`_top_names`), never a system.
"""

from __future__ import annotations

import posixpath
from pathlib import Path

import h5py
import numpy as np

from dynamat.errors import DynamatError, ReferenceFormatError
from dynamat.trajectory import Trajectory, full_to_voigt
from dynamat.units import EV_PER_A3_TO_GPA

REQUIRED = ("atomic_numbers", "positions", "cell")
SCHEMA = 1  # the group attribute ``schema``; readers fail closed on another value
CHUNK_FRAMES = 512  # frames per HDF5 chunk, as in the published file
_STRESS_TO_EV_A3 = {
    "ev/a^3": 1.0,
    "ev/a3": 1.0,
    "ev/ang3": 1.0,
    "gpa": 1.0 / EV_PER_A3_TO_GPA,
    "kbar": 0.1 / EV_PER_A3_TO_GPA,
}


def h5_reason(exc: OSError) -> str:
    """Why h5py could not open a file, in a few words: its messages run over lines and name HDF5's internals
    (a one-line error cut at the first line read "(file read failed: time = Mon Dec 7 ...")."""
    text = " ".join(str(exc).split())
    for key, said in (("truncated file", "cut short"), ("file signature not found", "not HDF5"),
                      ("Is a directory", "a folder"), ("ermission denied", "permission denied")):
        if key in text:
            return said
    return text[:120]


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise DynamatError(f"reference file not found: {path}")
    if path.is_dir():
        raise ReferenceFormatError(f"{path} is a folder, not an HDF5 reference file")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ReferenceFormatError(f"{path} is not a readable HDF5 file ({h5_reason(exc)})") from None


def _top_names(f: h5py.File) -> list[str]:
    """The top-level names a reader considers, sorted: not those starting with ``.``, a writer's
    unfinished group (``reference generate`` stores ``.<name>.tmp`` and renames it when complete; a
    kill in between leaves it behind, and it must not read as a system nor spoil the file)."""
    return sorted(k for k in f.keys() if not k.startswith("."))


def replica_of(group: h5py.Group) -> str | None:
    """The ``replica_of`` attribute of a group (the system it is a further trajectory of), or None."""
    v = group.attrs.get("replica_of")
    if v is None:
        return None
    v = v.decode() if isinstance(v, bytes) else v
    return str(np.asarray(v).reshape(-1)[0]) if not isinstance(v, str) else v


def replicas_in(f: h5py.File, system: str) -> list[str]:
    """The groups of open file ``f`` that are further trajectories (``replica_of``) of ``system``: what goes
    with it when it is replaced, or they would set the new system's noise floor."""
    return [n for n in f if n != system and isinstance(f.get(n, getlink=True), h5py.HardLink)
            and isinstance(f[n], h5py.Group) and replica_of(f[n]) == system]


def list_systems(path: str | Path) -> list[str]:
    """Names of the systems (top-level groups) in a reference file, without the further replicas of a
    system (groups whose ``replica_of`` names another group, see :func:`reference_replicas`); a file in
    which any system reads data it does not own (see :func:`_check_own_data`) is refused as a whole."""
    with _open(path) as f:
        names = []
        for k in _top_names(f):
            _check_own_data(f, k)
            if isinstance(f[k], h5py.Group) and replica_of(f[k]) in (None, k):
                names.append(k)
        return names


def reference_replicas(path: str | Path, system: str) -> list[str]:
    """The groups holding independent reference trajectories of ``system``, replica 0 first.

    Convention (``reference generate --replicas``, or by hand with h5py): replica 0 is the group
    ``<system>``, replica k >= 1 the group ``<system>_r<k>``; each carries the attributes
    ``replica_of = "<system>"``, ``replica_index = k`` and ``seed``. A single-trajectory reference
    gives ``[system]``. A group claiming to be a replica of ``system`` under another name or index is
    refused, naming it."""
    from dynamat.names import replica_name

    with _open(path) as f:
        _group(f, system)
        found: dict[int, str] = {}
        for name in _top_names(f):
            if name == system or not isinstance(f.get(name, getlink=True), h5py.HardLink):
                continue
            g = f[name]
            if not isinstance(g, h5py.Group) or replica_of(g) != system:
                continue
            try:
                k = int(np.asarray(g.attrs.get("replica_index")).reshape(-1)[0])
            except (TypeError, ValueError):
                k = -1
            if k < 1 or name != replica_name(system, k):
                raise ReferenceFormatError(
                    f"{f.filename}: group {name!r} says it is a replica of {system!r} with replica_index "
                    f"{g.attrs.get('replica_index')!r}; replica k >= 1 must be the group {system}_r<k>")
            _group(f, name)  # schema, datasets, own data
            found[k] = name
    return [system] + [found[k] for k in sorted(found)]


def check_reference_file(path: str | Path) -> list[str]:
    """The systems of a file that is a reference in the published layout: an HDF5 file whose
    top-level groups each pass every reader's checks (schema, required datasets, own data).
    Raises ReferenceFormatError, naming what is wrong, otherwise."""
    path = Path(path)
    try:
        hdf5 = h5py.is_hdf5(path)
    except OSError:
        hdf5 = False
    if not hdf5:
        with open(path, "rb") as fh:
            head = fh.read(24)
        raise ReferenceFormatError(f"{path} is not an HDF5 file ({path.stat().st_size} bytes starting {head!r})")
    with _open(path) as f:
        names = [k for k in _top_names(f) if isinstance(f.get(k, getlink=True), h5py.HardLink)
                 and isinstance(f[k], h5py.Group)]
        for k in _top_names(f):
            _check_own_data(f, k)
        for k in names:
            _group(f, k)
    if not names:
        raise ReferenceFormatError(f"{path} holds no system group")
    return names


def _borrowed(f: h5py.File, system: str) -> str:
    """``"f: system s dataset d <how it borrows>"`` for the first dataset (or the group itself) of
    ``system`` whose data lives in another file or belongs to another system, else ``""``.

    HDF5 lets a group hold external links (another file), soft links (any path), hard links (one
    object named from two groups), virtual datasets (slices of other datasets, other files too) and
    external raw storage. All read silently as if the data were the system's own, so a copper group
    could hand out Cu3Au's positions. Nothing is followed here: links are inspected, not resolved."""
    where = f"{f.filename}: system {system!r}"
    root = f.get(system, getlink=True)
    if isinstance(root, h5py.ExternalLink):
        return f"{where} is an external link to {root.filename}:{root.path}"
    if isinstance(root, h5py.SoftLink):
        return f"{where} is a soft link to {root.path}"
    group = f[system]
    if not isinstance(group, h5py.Group):
        return ""
    if h5py.h5o.get_info(group.id).rc > 1:
        return f"{where} is one group under several names ({', '.join(_names_of(f, group))})"
    own = group.name.rstrip("/") + "/"
    for name in group:
        link = group.get(name, getlink=True)
        at = f"{where} dataset {name!r}"
        if isinstance(link, h5py.ExternalLink):
            return f"{at} is an external link to {link.filename}:{link.path}"
        if isinstance(link, h5py.SoftLink):
            target = posixpath.normpath(posixpath.join(own, link.path))
            if not target.startswith(own):
                return f"{at} is a soft link to {target}, outside the system's group"
            continue
        obj = group[name]
        n_links = h5py.h5o.get_info(obj.id).rc
        if n_links > 1:
            found = _names_of(f, obj)
            others = [n for n in found if not n.startswith(own)]
            if others or len(found) < n_links:
                return f"{at} is a hard link shared with {', '.join(others) or 'a path deeper in the file'}"
        if isinstance(obj, h5py.Dataset):
            if obj.external:
                return f"{at} keeps its data in the external file {obj.external[0][0]}"
            if obj.is_virtual:
                for src in obj.virtual_sources():
                    if src.file_name != "." or not posixpath.normpath(src.dset_name).startswith(own):
                        other = "" if src.file_name == "." else f"{src.file_name}:"
                        return f"{at} is a virtual dataset mapping {other}{src.dset_name}"
    return ""


def _names_of(f: h5py.File, obj) -> list[str]:
    """The paths in ``f``, top-level groups and their members, that are hard links to ``obj``."""
    names: list[str] = []
    for top in f:
        if not isinstance(f.get(top, getlink=True), h5py.HardLink):
            continue
        item = f[top]
        if item.id == obj.id:
            names.append(f"/{top}")
        if isinstance(item, h5py.Group):
            names += [f"/{top}/{m}" for m in item
                      if isinstance(item.get(m, getlink=True), h5py.HardLink) and item[m].id == obj.id]
    return names


def _check_own_data(f: h5py.File, system: str) -> None:
    problem = _borrowed(f, system)
    if problem:
        raise ReferenceFormatError(
            f"{problem}; a reference system must hold its own data (copy it into the group)"
        )


def _group(f: h5py.File, system: str) -> h5py.Group:
    names = set(_top_names(f))  # the link names, none resolved
    if system in names:
        _check_own_data(f, system)
    if system not in names or not isinstance(f[system], h5py.Group):
        known = ", ".join(sorted(names)) or "none"
        raise DynamatError(f"system {system!r} is not in {f.filename} (it holds: {known})")
    g = f[system]
    schema = g.attrs.get("schema")
    schema = None if schema is None else np.asarray(schema).reshape(-1)[0].item()
    if schema != SCHEMA:
        raise ReferenceFormatError(
            f"system {system!r} in {f.filename} has schema {schema}; this reader knows schema {SCHEMA}"
        )
    missing = [k for k in REQUIRED if k not in g]
    if missing:
        raise ReferenceFormatError(
            f"system {system!r} in {f.filename} lacks dataset(s) {', '.join(missing)}"
        )
    return g


def reference_attrs(path: str | Path, system: str) -> dict:
    """The group attributes of one system, as plain Python values."""
    with _open(path) as f:
        g = _group(f, system)
        return {k: (v.item() if hasattr(v, "item") else v) for k, v in g.attrs.items()}


def reference_cells(path: str | Path, system: str) -> np.ndarray:
    """The cells of one system without its frames: (M, 3, 3) Å, or one (3, 3) cell where the file stores one."""
    with _open(path) as f:
        g = _group(f, system)
        try:
            return np.asarray(g["cell"][()], dtype=float)
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise ReferenceFormatError(f"cannot read system {system!r}: {exc}") from None


def reference_stress(path: str | Path, system: str) -> np.ndarray | None:
    """The stress of one system without its frames: (M, 6) eV/Å³, ASE Voigt and sign; None where none is stored."""
    from dynamat.trajectory import full_to_voigt

    with _open(path) as f:
        g = _group(f, system)
        if "stress" not in g:
            return None
        try:
            stress = np.asarray(g["stress"][()], dtype=float)
        except (ValueError, TypeError, OSError) as exc:
            raise ReferenceFormatError(f"cannot read system {system!r}: {exc}") from None
        scale = _stress_scale(g.attrs, system)
    if stress.ndim == 3 and stress.shape[1:] == (3, 3):
        stress = full_to_voigt(stress)
    if stress.ndim != 2 or stress.shape[1] != 6:
        raise ReferenceFormatError(f"system {system!r}: stress must be (M, 6) or (M, 3, 3), got {stress.shape}")
    return stress * scale


def _stress_scale(attrs, system: str) -> float:
    """The factor from the group's ``stress_unit`` (eV/Å³ where none is said) to eV/Å³."""
    unit = str(attrs.get("stress_unit", "eV/A^3")).lower().replace("å", "a")
    if unit not in _STRESS_TO_EV_A3:
        raise ReferenceFormatError(f"unknown stress_unit {unit!r} for system {system!r}")
    return _STRESS_TO_EV_A3[unit]


def read_reference(
    path: str | Path, system: str, frames: slice | np.ndarray | None = None
) -> Trajectory:
    """One system as a Trajectory; ``frames`` selects a subset without reading the rest."""
    sel = slice(None) if frames is None else frames
    with _open(path) as f:
        g = _group(f, system)
        attrs = {k: v for k, v in g.attrs.items()}
        try:
            positions = g["positions"][sel]
            cell = g["cell"]
            cells = cell[sel] if cell.ndim == 3 else cell[()]
            numbers = g["atomic_numbers"][()]
            pbc = g["pbc"][()] if "pbc" in g else np.ones(3, bool)
            opt = {}
            for key, name in (("energies", "energy"), ("forces", "forces"), ("stress", "stress")):
                if name in g:
                    opt[key] = g[name][sel]
            steps = g["md_step"][sel] if "md_step" in g else None
        except (KeyError, ValueError, TypeError, OSError) as exc:
            raise ReferenceFormatError(f"cannot read system {system!r}: {exc}") from None
    if "stress" in opt:
        opt["stress"] = np.asarray(opt["stress"], float) * _stress_scale(attrs, system)
    dt = attrs.get("dt_fs")
    step_stride = 1 if isinstance(sel, slice) is False or sel.step is None else sel.step
    try:
        return Trajectory(
            numbers=numbers,
            positions=positions,
            cells=cells,
            pbc=pbc,
            dt_fs=None if dt is None else float(dt) * step_stride,
            steps=steps,
            temperature_K=(
                float(attrs["temperature_kelvin"]) if "temperature_kelvin" in attrs else None
            ),
            name=system,
            **opt,
        )
    except ValueError as exc:
        raise ReferenceFormatError(f"system {system!r}: {exc}") from None


def write_reference(path: str | Path, traj: Trajectory, attrs: dict | None = None) -> None:
    """Adds (or replaces) one system group, named ``traj.name``, in the DynaMat v1.0 schema."""
    if not traj.name:
        raise ValueError("trajectory needs a name to be written as a system group")
    with h5py.File(path, "a") as f:
        if traj.name in f:
            del f[traj.name]
        g = f.create_group(traj.name)
        comp = dict(compression="gzip", compression_opts=6, shuffle=True)
        g["atomic_numbers"] = traj.numbers.astype(np.int32)
        g["pbc"] = traj.pbc
        g.create_dataset("positions", data=traj.positions, **comp)
        cells = traj.cells
        same = np.allclose(cells, cells[0])
        g.create_dataset("cell", data=cells[0] if same else cells)
        for key, name in (("energies", "energy"), ("forces", "forces"), ("stress", "stress")):
            value = getattr(traj, key)
            if value is not None:
                g.create_dataset(name, data=value, **comp)
        if traj.steps is not None:
            g["md_step"] = traj.steps
        g.attrs["schema"] = 1
        if traj.dt_fs is not None:
            g.attrs["dt_fs"] = float(traj.dt_fs)
        if traj.temperature_K is not None:
            g.attrs["temperature_kelvin"] = float(traj.temperature_K)
        if traj.stress is not None:
            g.attrs["stress_unit"] = "eV/A^3"
        for k, v in (attrs or {}).items():
            g.attrs[k] = v


def reference_n_frames(path: str | Path, system: str) -> int:
    """Number of frames of one system, without reading them."""
    with _open(path) as f:
        return int(_group(f, system)["positions"].shape[0])


def reference_labels(path: str | Path, system: str) -> dict[str, bool]:
    """Which labels one system holds: ``{"energy": bool, "forces": bool, "stress": bool}``."""
    with _open(path) as f:
        g = _group(f, system)
        return {k: k in g for k in ("energy", "forces", "stress")}


def has_energy_forces(path: str | Path, system: str) -> bool:
    """True when the system has both energies and forces (Eq. 1-2 can be scored)."""
    lab = reference_labels(path, system)
    return lab["energy"] and lab["forces"]


def require_labels(path: str | Path, system: str) -> None:
    """Raise one clear DynamatError when ``system`` lacks energies or forces (a label-free system)."""
    lab = reference_labels(path, system)
    if lab["energy"] and lab["forces"]:
        return
    missing = " or ".join(k if k == "forces" else "energies" for k in ("energy", "forces") if not lab[k])
    raise DynamatError(
        f"system {system!r} in {Path(path).name} is label-free: the file holds no {missing} for it "
        "(the public DynaMat v1.0 file's labels are private), so energy and force errors (Eq. 1-2) "
        "cannot be computed; observables (Eq. 3-12) can"
    )


class ReferenceGroupWriter:
    """Streams frames into one system group in the published layout, in bounded memory.

    Datasets ``atomic_numbers`` (N,), ``pbc`` (3,), then per frame ``positions`` (M, N, 3) Å,
    ``cell`` (M, 3, 3) Å, and when given ``energy`` (M,) eV, ``forces`` (M, N, 3) eV/Å,
    ``stress`` (M, 6) eV/Å³ Voigt xx yy zz yz xz xy (ASE sign), ``md_step`` (M,); gzip,
    frame-major chunks of ``min(M, 512)`` frames. Group attrs ``schema`` = 1, ``dt_fs`` (time
    between saved frames, fs) and ``temperature_kelvin`` (set by :meth:`finish`).

    Which optional fields exist is fixed by the first frame; a later frame that lacks one, or has
    one the first lacked, is an error (a partly labelled trajectory is not silently cut).

        with h5py.File(path, "a") as f:
            w = ReferenceGroupWriter(f.create_group("Si_1000K"), numbers, pbc)
            w.add(positions=p, cell=c, energy=e, forces=fr, stress=s, md_step=k)  # one frame
            w.finish(dt_fs=1.0, temperature_kelvin=1000.0)
    """

    FIELDS = ("positions", "cell", "energy", "forces", "stress", "md_step")

    def __init__(self, group: h5py.Group, numbers, pbc, chunk_frames: int = CHUNK_FRAMES):
        self.group = group
        self.numbers = np.asarray(numbers, dtype=np.int64).reshape(-1)
        self.n_atoms = len(self.numbers)
        self.chunk = int(chunk_frames)
        group.attrs["schema"] = SCHEMA
        group.create_dataset("atomic_numbers", data=self.numbers)
        group.create_dataset("pbc", data=np.asarray(pbc, dtype=bool).reshape(3))
        self.present: tuple[str, ...] | None = None
        self.buf: dict[str, list] = {}
        self.n_frames = 0

    def _shape(self, name: str) -> tuple[int, ...]:
        n = self.n_atoms
        return {"positions": (n, 3), "cell": (3, 3), "energy": (), "forces": (n, 3), "stress": (6,),
                "md_step": ()}[name]

    def add(self, **frame) -> None:
        """One frame; keys among :attr:`FIELDS` (None values count as absent)."""
        have = tuple(k for k in self.FIELDS if frame.get(k) is not None)
        if self.present is None:
            if "positions" not in have or "cell" not in have:
                raise DynamatError("a reference frame needs positions and a cell")
            self.present = have
            self.buf = {k: [] for k in have}
        elif have != self.present:
            gained = set(have) - set(self.present)
            lost = set(self.present) - set(have)
            what = ", ".join(sorted(lost or gained))
            raise DynamatError(
                f"frame {self.n_frames} {'lacks' if lost else 'adds'} {what}, which "
                f"{'the earlier frames have' if lost else 'the earlier frames lack'}"
            )
        for k in have:
            v = np.asarray(frame[k], dtype=np.int64 if k == "md_step" else np.float64)
            if k == "stress" and v.shape == (3, 3):
                v = full_to_voigt(v)
            if v.shape != self._shape(k):
                raise DynamatError(f"frame {self.n_frames}: {k} has shape {v.shape}, expected {self._shape(k)}")
            self.buf[k].append(v)
        self.n_frames += 1
        if len(self.buf["positions"]) >= self.chunk:
            self._flush()

    def _flush(self) -> None:
        if not self.buf or not self.buf.get("positions"):
            return
        for k, rows in self.buf.items():
            block = np.stack(rows)
            if k not in self.group:
                shape = self._shape(k)
                self.group.create_dataset(
                    k, shape=(0,) + shape, maxshape=(None,) + shape, dtype=block.dtype,
                    chunks=(len(block),) + shape, compression="gzip",  # min(M, 512) frames
                )
            ds = self.group[k]
            m0 = ds.shape[0]
            ds.resize(m0 + len(block), axis=0)
            ds[m0:] = block
            rows.clear()

    def finish(self, dt_fs: float | None, temperature_kelvin: float | None, attrs: dict | None = None) -> int:
        """Writes what is buffered and the group attributes; returns the number of frames."""
        self._flush()
        if self.n_frames == 0:
            raise DynamatError("no frames to write")
        if dt_fs is not None:
            self.group.attrs["dt_fs"] = float(dt_fs)
        if temperature_kelvin is not None:
            self.group.attrs["temperature_kelvin"] = float(temperature_kelvin)
        for k, v in (attrs or {}).items():
            if v is not None:
                self.group.attrs[k] = v
        return self.n_frames
