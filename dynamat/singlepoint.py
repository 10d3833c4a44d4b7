"""Energy and force errors (paper Eq. 1-2) of a model on the labelled frames of a reference system.

Frames are served to a ``dynamat-driver`` over i-PI's socket protocol (:mod:`dynamat.socket_server`),
in batches; when the reference carries isolated-atom energies (another code), both sides are
referenced to isolated atoms, as the paper does.
"""

from __future__ import annotations

import json
from typing import Callable

import ase
import numpy as np

from dynamat.engines.ipi_input import species_formula
from dynamat.errors import DynamatError
from dynamat.io.reference_h5 import read_reference
from dynamat.metrics.energy_force import force_component_rmse
from dynamat.reference import load_system
from dynamat.scoring import score_singlepoint
from dynamat.socket_server import DriverServer

MAX_BATCH = 4096
#: how Eq. 1 compares energies of two codes (the paper references both sides to isolated atoms)
ENERGY_REFERENCES = ("auto", "isolated", "absolute", "fluctuation")


def run_singlepoint(model: str, reference, system: str, every: int = 1, max_frames: int | None = None,
                    batch_size: int = 8, driver_cmd: str | None = None, driver_args=(),
                    progress: Callable[[int, int], None] | None = None, energy_reference: str = "auto") -> dict:
    """Energies and forces of ``model`` on every ``every``-th labelled frame; Eq. 1-2 errors (the one its
    labels allow where the reference holds only forces, or only energies: the other is None, with a note).

    ``energy_reference`` (Eq. 1): ``isolated`` references each side to its own isolated atoms (the
    reference file's ``isolated_atom_energies_eV``, the model's computed through the driver), as the
    paper does across codes; ``absolute`` compares raw energies (meaningful only within one code);
    ``fluctuation`` subtracts each side's mean (Matbench-discovery's); ``auto``: isolated when the
    file has isolated-atom energies, else fluctuation — never a cross-code absolute difference."""
    if energy_reference not in ENERGY_REFERENCES:
        raise DynamatError(f"--energy-reference must be one of {', '.join(ENERGY_REFERENCES)}, got {energy_reference!r}")
    if every < 1:
        raise DynamatError(f"--every must be at least 1, got {every}")
    if max_frames is not None and max_frames < 1:
        raise DynamatError(f"--max-frames must be at least 1, got {max_frames}")
    if not 1 <= batch_size <= MAX_BATCH:
        raise DynamatError(f"--batch-size must be between 1 and {MAX_BATCH}, got {batch_size}")
    reference, sys_entry, attrs = load_system(reference, system)
    traj = read_reference(reference, system, frames=slice(None, None, every))
    if max_frames:
        traj = traj[:max_frames]
    if traj.energies is None and traj.forces is None:
        raise DynamatError(f"system {system!r} in {reference} holds no energy and force labels (a label-free "
                           "reference); single-point errors (Eq. 1-2) need them")
    if traj.n_frames == 0:
        raise DynamatError(f"system {system!r} has no frames")
    traj.check(f"{reference}:{system}")  # non-finite input never reaches a model (a NaN would pass in a batch)
    ref_iso = attrs.get("isolated_atom_energies_eV")
    choice = energy_reference
    if traj.energies is None:  # forces only (a LAMMPS dump holds no total energy): Eq. 2 without Eq. 1
        if choice != "auto":
            raise DynamatError(f"--energy-reference {choice}: system {system!r} in {reference} holds forces but no "
                               "energies, so there is no Eq. 1 to reference; leave --energy-reference out")
        choice = None
    elif choice == "auto":
        choice = "isolated" if ref_iso else "fluctuation"
    if choice == "isolated" and not ref_iso:
        raise DynamatError(f"--energy-reference isolated: {reference} gives no isolated_atom_energies_eV for "
                           f"{system!r}; use fluctuation, or absolute if both come from the same code")
    if choice == "fluctuation" and traj.n_frames < 2:
        how = ("--energy-reference auto is fluctuation here (the file gives no isolated-atom energies)"
               if energy_reference == "auto" else "--energy-reference fluctuation")
        raise DynamatError(f"{how} subtracts each side's mean energy: over {traj.n_frames} frame its RMSE is 0 by "
                           "construction; use at least 2 frames (a smaller --every or a larger --max-frames)")
    species = species_formula(ase.Atoms(numbers=traj.numbers))
    kw = dict(driver_cmd=driver_cmd, driver_args=tuple(driver_args))
    e = np.empty(traj.n_frames)
    f = np.empty((traj.n_frames, traj.n_atoms, 3))
    with DriverServer(model, species, traj.n_atoms, batch_size=batch_size, **kw) as srv:
        chunk = max(batch_size, 16)
        for i in range(0, traj.n_frames, chunk):
            j = min(i + chunk, traj.n_frames)
            e[i:j], f[i:j], _ = srv.evaluate(traj.cells[i:j], traj.positions[i:j])
            if progress:
                progress(j, traj.n_frames)
    e_iso_pred = e_iso_ref = None
    if choice == "isolated":
        e_iso_ref = {int(ase.Atoms(k).numbers[0]): float(v) for k, v in json.loads(ref_iso).items()}
        try:
            e_iso_pred = isolated_atom_energies(model, sorted(set(traj.numbers.tolist())), **kw)
        except DynamatError as exc:
            raise DynamatError(f"the isolated-atom energy of {model} is unavailable ({exc}); "
                               "pass --energy-reference fluctuation") from None
    res = score_singlepoint(traj.energies, traj.forces, e, f, traj.n_atoms, e_iso_ref=e_iso_ref,
                            e_iso_pred=e_iso_pred, numbers=traj.numbers)
    if choice == "fluctuation":
        res["energy_rmse_eV_per_atom"] = res["energy_fluctuation_rmse_eV_per_atom"]
    res["energy_reference"] = choice
    if e_iso_pred is not None:
        res["isolated_atom_energies_model_eV"] = {ase.Atoms(numbers=[z]).get_chemical_symbols()[0]: v
                                                  for z, v in e_iso_pred.items()}
    res["n_frames_singlepoint"] = traj.n_frames
    if traj.n_frames < 2:  # a mean-subtracted RMSE of one frame is 0 by construction: none, not a perfect score
        res["energy_fluctuation_rmse_eV_per_atom"] = None
    for key, label in (("energy_rmse_eV_per_atom", "energies"), ("force_rmse_eV_per_A", "forces")):
        if res[key] is None and getattr(traj, label) is None:
            res[f"{key}_note"] = f"the reference holds no {label}"
    res["matbench_singlepoint"] = {  # Matbench-discovery's definitions: mean-subtracted E, per-component F
        "energy_rmse": res["energy_fluctuation_rmse_eV_per_atom"],
        "force_rmse": None if traj.forces is None else force_component_rmse(f, traj.forces),
    }
    return res


def isolated_atom_energies(model: str, numbers, box_A: float = 20.0, **driver_kw) -> dict[int, float]:
    """The model's energy (eV) of one atom of each element alone in a ``box_A`` Å cube."""
    out = {}
    for z in numbers:
        sym = ase.Atoms(numbers=[z]).get_chemical_symbols()[0]
        with DriverServer(model, sym, 1, batch_size=1, **driver_kw) as srv:
            box = np.eye(3)[None] * box_A
            out[int(z)] = float(srv.evaluate(box, np.full((1, 1, 3), box_A / 2))[0][0])
    return out
