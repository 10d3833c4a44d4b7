"""Reader and writer for the DynaMat v1.0 reference HDF5 schema.

One group per system with datasets ``atomic_numbers`` (N,), ``pbc`` (3,), ``positions`` (M, N, 3) Å,
``cell`` (3, 3) or (M, 3, 3) Å, and optional ``energy`` (M,) eV, ``forces`` (M, N, 3) eV/Å,
``stress`` (M, 6) Voigt or (M, 3, 3), ``md_step`` (M,). Group attributes: ``schema`` = 1,
``dt_fs`` = time between saved frames, ``temperature_kelvin``. The stress unit is eV/Å³ unless the
group attribute ``stress_unit`` says ``GPa`` or ``kbar``; the sign is ASE's (positive = tensile).
"""

from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np

from dynamat.errors import DynamatError, ReferenceFormatError
from dynamat.trajectory import Trajectory
from dynamat.units import EV_PER_A3_TO_GPA

REQUIRED = ("atomic_numbers", "positions", "cell")
_STRESS_TO_EV_A3 = {
    "ev/a^3": 1.0,
    "ev/a3": 1.0,
    "ev/ang3": 1.0,
    "gpa": 1.0 / EV_PER_A3_TO_GPA,
    "kbar": 0.1 / EV_PER_A3_TO_GPA,
}


def _open(path: str | Path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        raise DynamatError(f"reference file not found: {path}")
    try:
        return h5py.File(path, "r")
    except OSError as exc:
        raise ReferenceFormatError(f"{path} is not a readable HDF5 file ({exc})") from None


def list_systems(path: str | Path) -> list[str]:
    """Names of the systems (top-level groups) in a reference file."""
    with _open(path) as f:
        return sorted(k for k, v in f.items() if isinstance(v, h5py.Group))


def _group(f: h5py.File, system: str) -> h5py.Group:
    if system not in f or not isinstance(f[system], h5py.Group):
        known = ", ".join(sorted(f.keys())) or "none"
        raise DynamatError(f"system {system!r} is not in {f.filename} (it holds: {known})")
    g = f[system]
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
        unit = str(attrs.get("stress_unit", "eV/A^3")).lower().replace("å", "a")
        if unit not in _STRESS_TO_EV_A3:
            raise ReferenceFormatError(f"unknown stress_unit {unit!r} for system {system!r}")
        opt["stress"] = np.asarray(opt["stress"], float) * _STRESS_TO_EV_A3[unit]
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
