"""``dynamat reference import``: a user's own ab-initio MD as a reference file in the DynaMat v1.0 schema;
``dynamat reference generate``: a new one made with i-PI and a force client (:mod:`dynamat.refgen`)."""

from __future__ import annotations

import json
from pathlib import Path

import click

from dynamat.cli.common import (driver_options, ensemble_options, eta_printer, label_gap, model_option,
                                protocol_overrides, seed_option, with_options)
from dynamat.errors import DynamatError
from dynamat.layout import check_file_target
from dynamat.models_file import model_option_args


@click.group("reference")
def reference_group() -> None:
    """Reference files: import your own ab-initio MD, or generate one."""


def _isolated(text: str | None) -> dict | None:
    """``Cu=-0.25,Au=-0.1`` or a JSON object or a JSON file -> {symbol: eV}."""
    if not text:
        return None
    if Path(text).is_file():
        text = Path(text).read_text()
    try:
        if text.lstrip().startswith("{"):
            return {str(k): float(v) for k, v in json.loads(text).items()}
        return {k.strip(): float(v) for k, v in (kv.split("=", 1) for kv in text.split(","))}
    except (ValueError, TypeError) as exc:
        raise DynamatError(f"--isolated-energies wants SYMBOL=eV,... or a JSON object, got {text!r} ({exc})") from None


@reference_group.command("import")
@click.argument("sources", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Reference HDF5 to create or add the system to.")
@click.option("--name", default=None, help="System (group) name [default: the folder's or file's name].")
@click.option("--dt-fs", type=float, default=None,
              help="Time between the saved frames in fs (not the MD time step) [default: from the files' metadata].")
@click.option("--temperature", "temperature_K", type=float, default=None,
              help="The run's temperature in K [default: the files' metadata, else <T>K in the name].")
@click.option("--force", is_flag=True,
              help="Keep a frame interval the equipartition check refuses; replace an existing system.")
@click.option("--isolated-energies", default=None,
              help="Isolated-atom energies in eV for Eq. 1's referencing: Cu=-0.25,Au=-0.1, a JSON object or a JSON file.")
@click.option("--start-frame", type=click.IntRange(0), default=0,
              help="Drop the frames before this one (an unequilibrated start; counted over all SOURCEs from 0).")
@click.option("--drop-ps", type=click.FloatRange(0), default=None,
              help="Drop the first T ps of frames (an unequilibrated start); needs the frame interval, or "
                   "frames that carry time_fs.")
def import_command(sources, out, name, dt_fs, temperature_K, force, isolated_energies, start_frame, drop_ps):
    """Import SOURCE... (extxyz, a folder holding traj.extxyz or such folders, vasprun.xml, OUTCAR,
    XDATCAR, an i-PI run folder, a LAMMPS dump, an ASE .traj) into OUT in the DynaMat v1.0 schema.

    Several SOURCEs are one system's consecutive segments: the same atoms in the same order, and no gap
    or overlap where the frames carry time_fs or md_step. The frame interval is checked by
    equipartition on finite-difference velocities; an interval it contradicts is refused. A start far
    more ordered than the rest (the ideal lattice) is named in a warning with the --start-frame or
    --drop-ps that drops it; a NaN energy, force or position is refused."""
    from dynamat.io.importers import import_reference

    check_file_target(out, "--out")

    def progress(system: str, n: int) -> None:
        if n % 10240 == 0:
            click.echo(f"  {system}: {n} frames", err=True)

    results = import_reference(sources, out, name=name, dt_fs=dt_fs, temperature_K=temperature_K, force=force,
                               isolated_energies=_isolated(isolated_energies), progress=progress,
                               start_frame=start_frame, drop_ps=drop_ps)
    for r in results:
        have = [k for k in ("energy", "forces", "stress") if r.labels[k]]
        lab = " ".join(have) if have else "none"
        chk = ""
        if r.check is not None:
            chk = (f"; equipartition {r.check.temperature_K:.0f} K (finite differences, filter-corrected), "
                   f"frames look {r.check.implied_dt_fs:.3g} fs apart")
        if r.velocity_implied_dt_fs is not None:
            chk += (f" at {r.temperature_K:g} K, {r.velocity_implied_dt_fs:.3g} fs at the "
                    f"{r.velocity_temperature_K:.0f} K of the files' own velocities")
        click.echo(f"imported {r.name} -> {r.out}: {r.n_frames} frames of {r.n_atoms} atoms, "
                   f"{r.dt_fs:g} fs apart ({r.dt_source}), {r.temperature_K:g} K ({r.temperature_source}); "
                   f"labels: {lab}{label_gap(r.labels)}{chk}")
        if r.forced:
            click.echo(f"  warning: kept {r.dt_fs:g} fs against the equipartition check (--force)", err=True)
        for note in r.notes:
            click.echo(f"  note: {note}", err=True)
        for line in r.warnings:
            click.echo(f"dynamat: warning: {line}", err=True)


@reference_group.command("generate")
@click.option("--engine", type=click.Choice(["driver", "ase", "cp2k"]), required=True,
              help="Force client: driver (a dynamat model), ase (an ASE calculator), cp2k (CP2K, PBE by default).")
@click.option("--structure", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Start structure, any ASE-readable file (CIF, POSCAR, extxyz; its last frame).")
@click.option("--name", required=True, help="System (group) name in --out; replica k is NAME_r<k>.")
@click.option("--temperature", "temperature_K", type=float, required=True, help="Temperature in K.")
@click.option("--time-ps", type=float, required=True, help="Production time stored, ps (after equilibration).")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="Reference HDF5 to create or add to; run folders go to OUT.work/ beside it.")
@click.option("--model", default=None, help="--engine driver: the model (see `dynamat models`, or MODULE:CALLABLE).")
@click.option("--calculator", default=None, help="--engine ase: MODULE:CALLABLE returning an ASE calculator.")
@model_option
@click.option("--cp2k-input", type=click.Path(path_type=Path, dir_okay=False, exists=True), default=None,
              help="--engine cp2k: a CP2K input template replacing dynamat's PBE defaults (see README).")
@click.option("--class", "system_class", default=None, help="Material class, which picks the protocol [default: inferred].")
@click.option("--timestep-fs", type=float, default=None, help="MD time step in fs [default: the class protocol's].")
@click.option("--tau-fs", type=float, default=None, help="Thermostat time constant in fs [default: the protocol's].")
@click.option("--thermostat", default=None, help="i-PI thermostat mode, e.g. svr or langevin [default: the protocol's].")
@click.option("--stride", type=click.IntRange(1), default=None, help="MD steps between stored frames [default: the protocol's].")
@click.option("--equilibrate-ps", type=click.FloatRange(0), default=1.0, show_default=True,
              help="Run this long first and drop it; the kinetic temperature must have settled.")
@click.option("--replicas", type=click.IntRange(1, 1000), default=1, show_default=True,
              help="Independent trajectories with different seeds: groups NAME, NAME_r1, ...")
@seed_option()
@click.option("--overwrite", is_flag=True, help="Replace existing groups and run folders of this name.")
@with_options(ensemble_options)
@with_options(driver_options)
def generate_command(engine, structure, name, temperature_K, time_ps, out, model, calculator, model_options,
                     cp2k_input, system_class, timestep_fs, tau_fs, thermostat, stride, equilibrate_ps, replicas,
                     seed, overwrite, ensemble, pressure_GPa, barostat, tau_barostat_fs, driver_cmd, driver_args):
    """Generate a reference trajectory with i-PI and a first-principles (or any) force client, stored in
    OUT in the published layout with provenance. A killed run resumes when the same command is rerun.
    With --ensemble npt i-PI's barostat moves the cell: every stored frame keeps its own cell."""
    from dynamat.refgen import GenerateRequest, generate

    check_file_target(out, "--out")
    overrides = protocol_overrides(None, system_class, None, timestep_fs, tau_fs, thermostat, None, ensemble=ensemble,
                                   pressure_GPa=pressure_GPa, barostat=barostat, tau_barostat_fs=tau_barostat_fs)
    req = GenerateRequest(engine=engine, structure=structure, name=name, temperature_K=temperature_K,
                          time_ps=time_ps, out=out, model=model, calculator=calculator,
                          model_options=model_option_args(model_options), overrides=overrides, stride=stride,
                          equilibrate_ps=equilibrate_ps, replicas=replicas, seed=seed, overwrite=overwrite,
                          cp2k_input=cp2k_input, driver_cmd=driver_cmd, driver_args=tuple(driver_args))
    results = generate(req, progress_for=lambda g: eta_printer(f"{engine}/{g}"),
                       announce=lambda m: click.echo(m, err=True),
                       warn=lambda m: click.echo(f"dynamat: warning: {m}", err=True))
    for r in results:
        click.echo(f"stored {r.name} -> {out}: {r.n_frames} frames, seed {r.seed} (run folder {r.run_dir})")
