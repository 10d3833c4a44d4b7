"""Which reference file, which system in it, and the structure an MLIP run starts from."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

import ase

from dynamat.catalogue import get_system
from dynamat.download import default_reference_path
from dynamat.errors import DynamatError
from dynamat.io.reference_h5 import list_systems, read_reference, reference_attrs


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
    return reference, get_system(system, attrs, initial_atoms(reference, system), **overrides), attrs


def initial_atoms(reference: Path, system: str, frame: int = 0) -> ase.Atoms:
    """Frame ``frame`` of the reference trajectory as ASE Atoms: where an MLIP run starts."""
    first = read_reference(reference, system, frames=slice(frame, frame + 1))
    if first.n_frames == 0:
        raise DynamatError(f"system {system!r} has no frame {frame} in {reference}")
    first.check(f"{reference}:{system}")
    return ase.Atoms(numbers=first.numbers, positions=first.positions[0], cell=first.cells[0], pbc=first.pbc)
