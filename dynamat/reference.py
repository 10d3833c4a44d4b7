"""Which reference file, which system in it, and the structure an MLIP run starts from."""

from __future__ import annotations

from dataclasses import replace
from importlib import resources
from pathlib import Path

import ase
import numpy as np

from dynamat.catalogue import get_system
from dynamat.download import default_reference_path
from dynamat.errors import DynamatError
from dynamat.io.reference_h5 import list_systems, read_reference, reference_attrs, reference_cells, reference_stress

#: cells of one reference that differ by more than this (Å, any component) make a variable-cell trajectory
CELL_VARIES_A = 1e-6


def default_reference() -> Path:
    """The bundled demo reference (EMT-made, DynaMat v1.0 schema)."""
    return Path(str(resources.files("dynamat.data").joinpath("demo_reference.h5")))


def resolve_reference(reference: Path | None, system: str) -> Path:
    """The reference file to use: the one given; else the bundled demo file for its systems; else the
    DynaMat v1.0 file downloaded by `dynamat data download`."""
    if reference is not None:
        return Path(reference)
    demo = default_reference()
    if system in list_systems(demo):
        return demo
    downloaded = default_reference_path()
    if downloaded is None:
        raise DynamatError(
            f"system {system!r} is not in the bundled demo file and no DynaMat v1.0 reference is downloaded; "
            "run `dynamat data download` or pass --reference FILE"
        )
    return downloaded


def systems_held(reference: Path) -> str:
    """What ``reference`` holds, for an error line: the names when few, else how to list them (the
    DynaMat v1.0 file holds too many for one line)."""
    names = list_systems(reference)
    if len(names) <= 8:
        return f"it holds: {', '.join(names) or 'none'}"
    return (f"it holds {len(names)} systems, e.g. {', '.join(names[:3])}; list them with "
            f"`dynamat systems --reference {reference}`")


def load_system(reference: Path | None, system: str, **overrides):
    """(reference path, catalogue System, the group's attributes) for ``system``."""
    reference = resolve_reference(reference, system)
    attrs = reference_attrs(reference, system)
    # the first frame lets the catalogue infer class and dims (vacuum gap) where it is silent
    cells = reference_cells(reference, system)
    start = _mean_cell(cells)
    first = _frame_atoms(reference, system, 0, start)
    entry = get_system(system, attrs, first, **overrides)
    if start is not None and attrs.get("pressure_GPa") is not None:  # what `reference generate --ensemble npt` ran at
        start["reference_pressure_GPa"] = float(attrs["pressure_GPa"])
    elif start is not None and entry.dims == 3:  # an NPT trajectory made elsewhere: its frames tell the pressure
        start.update(frames_pressure(reference_stress(reference, system), cells, len(first), entry.temperature_K) or {})
    return reference, replace(entry, start_cell=start), attrs


def frames_pressure(stress, cells, n_atoms: int, temperature_K: float) -> dict | None:
    """The pressure an NPT trajectory that does not store it was held at: the mean instantaneous pressure of its
    stress-labelled frames (:func:`~dynamat.metrics.pressure.instantaneous_pressure_GPa`), with its block-bootstrap
    standard error; None without stress. ``stress`` (M, 6) eV/Å³ or None, ``cells`` (M, 3, 3) Å.
    ``--ensemble npt --pressure-GPa`` that value runs its ensemble."""
    from dynamat.metrics.pressure import instantaneous_pressure_GPa
    from dynamat.metrics.uncertainty import block_bootstrap_mean_se

    if stress is None or cells.ndim != 3 or len(cells) != len(stress):
        return None
    labelled = np.isfinite(stress).all(axis=1)
    if labelled.sum() < 2:
        return None
    p = instantaneous_pressure_GPa(stress[labelled], np.abs(np.linalg.det(cells[labelled])), n_atoms, temperature_K)
    return {"reference_pressure_GPa": float(p.mean()), "reference_pressure_se_GPa": float(block_bootstrap_mean_se(p)),
            "reference_pressure_source": f"mean instantaneous pressure of its {int(labelled.sum())} stress-labelled "
                                         "frames (Eq. 5 + N k_B T/V)"}


def reference_pressure_said(start_cell: dict | None) -> tuple[str, str] | None:
    """(the pressure a variable-cell reference was held at, as said; how it is known): the file's stated value as
    stored, or its frames' estimate (:func:`frames_pressure`) rounded, with its standard error. None: unknown."""
    p = (start_cell or {}).get("reference_pressure_GPa")
    if p is None:
        return None
    se = start_cell.get("reference_pressure_se_GPa")
    return (f"{p:g}", "") if se is None else (f"{p:.3g}", f" (its frames' mean pressure, ± {se:.2g} GPa)")


def variable_cell(reference: Path, system: str) -> dict | None:
    """Where the reference's cell varies between frames (an NPT trajectory): the cell runs start in, the mean
    of its cells (Å), with the spread of the frames' volumes; None for a fixed cell (the paper's references).

    A fixed-cell run started in one instantaneous cell of an NPT trajectory sits off the ensemble's mean
    volume by that frame's fluctuation, σ_V/V = √(k_B T / (B V)) (0.9 % for 32 Cu atoms at 300 K: 1.2 GPa at
    B = 134 GPa), which the pressure error (Eq. 7) would score as the model's; in the mean cell that error is
    second order. An NPT run starts there too (the barostat has less to burn in)."""
    return _mean_cell(reference_cells(reference, system))


def _mean_cell(cells: np.ndarray) -> dict | None:
    """:func:`variable_cell` of the cells read."""
    if cells.ndim != 3 or len(cells) < 2 or np.abs(cells - cells[0]).max() <= CELL_VARIES_A:
        return None
    vols = np.abs(np.linalg.det(cells))
    mean = cells.mean(axis=0)
    return {"source": f"mean of the reference's {len(cells)} cells (they vary between frames: variable cell)",
            "cell_A": mean.tolist(), "volume_A3": float(abs(np.linalg.det(mean))),
            "frame_volume_rel_sd": float(vols.std() / vols.mean())}


def initial_atoms(reference: Path, system: str, frame: int = 0) -> ase.Atoms:
    """Frame ``frame`` of the reference trajectory as ASE Atoms: where an MLIP run starts. Where the reference's
    cell varies, the frame is scaled to the mean cell (:func:`variable_cell`), its fractional coordinates kept.
    A caller holding the system's catalogue entry calls :func:`start_atoms` (the cells are read once)."""
    return _frame_atoms(reference, system, frame, variable_cell(reference, system))


def start_atoms(reference: Path, entry, frame: int = 0) -> ase.Atoms:
    """:func:`initial_atoms` for a :func:`load_system` entry, whose ``start_cell`` says the cell to start in."""
    return _frame_atoms(reference, entry.name, frame, entry.start_cell)


def _frame_atoms(reference: Path, system: str, frame: int, start_cell: dict | None) -> ase.Atoms:
    first = read_reference(reference, system, frames=slice(frame, frame + 1))
    if first.n_frames == 0:
        raise DynamatError(f"system {system!r} has no frame {frame} in {reference}")
    first.check(f"{reference}:{system}")
    atoms = ase.Atoms(numbers=first.numbers, positions=first.positions[0], cell=first.cells[0], pbc=first.pbc)
    if start_cell is not None:
        atoms.set_cell(start_cell["cell_A"], scale_atoms=True)
    return atoms
