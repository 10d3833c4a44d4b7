"""Readers of a run folder: the physical trajectory of a classical or path-integral run.

A PIMD run (``nbeads = P > 1``, templates ``pimd_pile_l.xml`` / ``pimd_trpmd.xml``) leaves, besides
the NVT outputs, ``simulation.pos_<b>.extxyz`` per bead (``b`` zero-padded to the digits of P),
``simulation.xc.extxyz`` / ``vc`` with the centroid positions and velocities, and in
``simulation.out`` the columns ``kinetic_cv``, ``kinetic_td`` and ``virial_cv`` (the bead-averaged
configurational virial; for P > 1 i-PI's ``virial_md`` is the *sum* over beads).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from pathlib import Path

import ase
import ase.io
import numpy as np
from ase import units
from ase.data import atomic_numbers

from dynamat.errors import DynamatError
from dynamat.io.ipi_output import read_aligned_frames, read_ipi_run
from dynamat.layout import PREFIX, RunFolder
from dynamat.trajectory import Trajectory, ipi_virial_to_stress


__all__ = ["bead_files", "input_info", "read_bead_positions", "read_bead_trajectory", "read_centroid_trajectory",
           "read_run_trajectory", "species_counts"]


def bead_files(run_dir: str | Path, what: str = "pos", prefix: str = PREFIX) -> list[Path]:
    """The per-bead trajectory files ``<prefix>.<what>_<b>.extxyz``, in bead order.

    i-PI zero-pads the bead index to the number of digits of P (``pos_00`` … ``pos_15``).
    """
    pat = re.compile(rf"^{re.escape(prefix)}\.{re.escape(what)}_(\d+)\.extxyz$")
    found = [(int(m.group(1)), p) for p in Path(run_dir).iterdir() if (m := pat.match(p.name))]
    return [p for _, p in sorted(found)]


def input_info(run_dir: Path) -> dict:
    """nbeads, temperature (K), total_steps, the frames' save stride (steps) and, for a run at constant
    pressure, its ``ensemble`` (:func:`npt_of`) from the run's input.xml, where present."""
    out: dict = {}
    try:
        root = ET.parse(RunFolder(run_dir).input_xml).getroot()
    except (OSError, ET.ParseError):
        return out
    init = root.find("system/initialize")
    if init is not None and init.get("nbeads"):
        out["nbeads"] = int(init.get("nbeads"))
    temp = root.find("system/ensemble/temperature")
    if temp is not None and (temp.get("units") or "kelvin") == "kelvin":
        out["temperature_K"] = float(temp.text)
    total = root.find("total_steps")
    if total is not None and (total.text or "").strip().isdigit():
        out["total_steps"] = int(total.text)
    strides = [el.get("stride") for el in root.findall("output/trajectory") + root.findall("output/properties")]
    strides = [int(x) for x in strides if x and x.strip().isdigit() and int(x) > 0]
    if strides:
        out["stride"] = strides[0]  # the first output's: dynamat's templates save every output at one stride
    npt = npt_of(root)
    if npt:
        out["ensemble"] = npt
    return out


def npt_of(root: ET.Element) -> dict | None:
    """The barostat of an i-PI input (its root element) that runs ``<dynamics mode='npt'>``: ``ensemble``,
    ``pressure_GPa``, ``barostat`` (a mode dynamat runs: isotropic, flexible) and ``tau_barostat_fs``, as
    ``reference generate --ensemble npt`` stores them; None for fixed-cell dynamics or another barostat.
    The units are read by i-PI's own converter (an input without them is in atomic units, as i-PI reads it)."""
    from ipi.utils.units import unit_to_internal, unit_to_user

    from dynamat.engines.ipi_input import BAROSTATS

    dyn, press = root.find("system/motion/dynamics"), root.find("system/ensemble/pressure")
    baro = dyn.find("barostat") if dyn is not None and dyn.get("mode") == "npt" else None
    tau = baro.find("tau") if baro is not None and baro.get("mode") in BAROSTATS else None
    if tau is None or press is None:
        return None
    try:
        p_GPa = unit_to_user("pressure", "gigapascal",
                             unit_to_internal("pressure", press.get("units", ""), float(press.text)))
        tau_fs = unit_to_user("time", "femtosecond", unit_to_internal("time", tau.get("units", ""), float(tau.text)))
    except (TypeError, ValueError, KeyError):  # a unit i-PI does not know: i-PI itself would not have run it
        return None
    return {"ensemble": "npt", "pressure_GPa": float(p_GPa), "barostat": baro.get("mode"),
            "tau_barostat_fs": float(tau_fs)}


def species_counts(run_dir: Path, prefix: str) -> dict[str, int]:
    """Atoms per element, from init.xyz or else the first frame of a trajectory."""
    rf = RunFolder(run_dir, prefix)
    for cand in [rf.init_xyz, rf.centroid_positions, *bead_files(run_dir, "pos", prefix)[:1]]:
        if cand.exists():
            try:
                symbols = ase.io.read(cand, index=0).get_chemical_symbols()
            except Exception:
                continue
            return {s: symbols.count(s) for s in dict.fromkeys(symbols)}
    raise DynamatError(f"cannot tell the species of the run in {run_dir} (no init.xyz or trajectory)")


def read_centroid_trajectory(run_dir: str | Path, prefix: str = PREFIX, name: str = "") -> Trajectory:
    """The ring-polymer centroids of a PIMD run as a Trajectory.

    Positions from ``x_centroid`` (Å), velocities from ``v_centroid`` (Å/fs), energies the
    bead-averaged potential (eV), stress minus ``virial_cv`` (bead-averaged configurational
    virial, ASE sign and Voigt order); frames are the steps present in both files
    (:func:`dynamat.io.ipi_output.read_aligned_frames`).
    """
    run_dir = Path(run_dir)
    rf = RunFolder(run_dir, prefix)
    xc_file = rf.centroid_positions
    if not xc_file.exists():
        raise DynamatError(f"no centroid trajectory in {run_dir} (expected {xc_file.name})")
    fr = read_aligned_frames({"centroid": xc_file, "centroid velocity": rf.centroid_velocities}, rf.properties)
    info = input_info(run_dir)
    if "virial_cv{ev/ang3}" in fr.props:
        vir = fr.props["virial_cv{ev/ang3}"]
    elif "virial_md{ev/ang3}" in fr.props:
        vir = fr.props["virial_md{ev/ang3}"] / info.get("nbeads", 1)  # virial_md sums the beads
    else:
        vir = None
    vc = fr.data.get("centroid velocity")
    return Trajectory(
        numbers=fr.numbers, positions=fr.data["centroid"][:, :, -3:], cells=fr.cells, dt_fs=fr.frame_interval_fs(),
        # i-PI's ase format writes pos (zeros here) then the quantity: take the last 3 columns
        velocities=None if vc is None else vc[:, :, -3:] * units.fs,
        energies=fr.props.get("potential{electronvolt}"),
        stress=None if vir is None else ipi_virial_to_stress(vir), steps=fr.steps,
        temperature_K=info.get("temperature_K"), name=name or f"{run_dir.name}:centroid", notes=fr.notes,
    )


def read_bead_positions(run_dir: str | Path, prefix: str = PREFIX) -> dict:
    """All beads: steps (M,), symbols, cells (M, 3, 3) and positions (M, P, N, 3) Å, at the steps every bead holds."""
    files = bead_files(run_dir, "pos", prefix)
    if not files:
        raise DynamatError(f"no per-bead position files {prefix}.pos_<b>.extxyz in {run_dir}")
    fr = read_aligned_frames({f"bead {b}": f for b, f in enumerate(files)})
    pos = np.stack([fr.data[f"bead {b}"][:, :, :3] for b in range(len(files))], axis=1)
    return {"steps": fr.steps, "symbols": fr.symbols, "cells": fr.cells, "positions": pos, "notes": fr.notes}


def read_bead_trajectory(run_dir: str | Path, prefix: str = PREFIX, name: str = "") -> Trajectory:
    """Every bead of every saved step as one frame (step-major: step 0 beads 0…P−1, step 1 …).

    Bead b of atom i interacts only with bead b of the other atoms, so the quantum pair
    distribution is the average over beads of each bead's g(r) — exactly the RDF of these
    frames (:func:`dynamat.pimd.full_bead_rdf`). The frames are not equally spaced in time (``dt_fs`` is
    None): use it for structural averages, and the centroid trajectory for dynamics.
    """
    d = read_bead_positions(run_dir, prefix)
    m, p, n, _ = d["positions"].shape
    numbers = np.array([atomic_numbers[s] for s in d["symbols"]])
    return Trajectory(
        numbers=numbers, positions=d["positions"].reshape(m * p, n, 3),
        cells=np.repeat(d["cells"], p, axis=0), steps=np.repeat(d["steps"], p),
        temperature_K=input_info(Path(run_dir)).get("temperature_K"),
        name=name or f"{Path(run_dir).name}:beads", notes=d["notes"],
    )


def read_run_trajectory(run_dir: str | Path, prefix: str = PREFIX) -> Trajectory:
    """The physical trajectory of a run: the centroids of a PIMD-template run (any P, P = 1
    included), else the classical NVT outputs (:func:`dynamat.io.ipi_output.read_ipi_run`)."""
    run_dir = Path(run_dir)
    if RunFolder(run_dir, prefix).centroid_positions.exists():
        return read_centroid_trajectory(run_dir, prefix)
    traj = read_ipi_run(run_dir, prefix)
    traj.temperature_K = input_info(run_dir).get("temperature_K")
    return traj


