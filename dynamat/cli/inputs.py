"""``dynamat inputs``: an i-PI input for a system's reference protocol, to run by hand."""

from __future__ import annotations

import secrets
import shlex
from pathlib import Path

import click

from dynamat.catalogue import with_beads
from dynamat.cli.common import (dispersion_options, ensemble_options, model_option,
                                models_file_option, protocol_options, protocol_overrides, reference_option,
                                seed_option, served_model, system_option, with_options)
from dynamat.engines.ipi_input import write_inputs
from dynamat.errors import DynamatError
from dynamat.known_models import check_model_options
from dynamat.layout import RunFolder
from dynamat.models_file import dispersion_args, model_option_args
from dynamat.names import check_socket_name, model_folder
from dynamat.reference import load_system, start_atoms
from dynamat.runner import steps_for


@click.command()
@system_option
@reference_option
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Folder for input.xml and init.xyz.")
@click.option("--steps", type=click.IntRange(1, 100_000_000), default=None, help="MD steps [default: the protocol's full length].")
@click.option("--time-ps", type=float, default=None, help="Simulated time in ps instead of --steps.")
@seed_option(12345)
@click.option("--unix", "unix_name", default=None,
              help="Unix socket name (i-PI adds /tmp/ipi_) [default: dynamat-<random>, printed].")
@click.option("--inet", default=None, help="HOST:PORT for an inet socket instead of a unix one.")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help="Structures per i-PI request [default: the bead count].")
@click.option("--beads", "nbeads", type=click.IntRange(1, 1024), default=1, show_default=True, help="Path-integral beads; 1 is classical MD.")
@with_options(protocol_options)
@with_options(ensemble_options)
@click.option("--model", default=None, help="Model for the printed driver command: a name, MODULE:CALLABLE or a "
              "--models-file name.")
@model_option
@models_file_option
@with_options(dispersion_options)
@click.option("--force", is_flag=True, help="Replace an input.xml and init.xyz already in --out (never a run's).")
def inputs(system, reference, out, steps, time_ps, seed, unix_name, inet, batch_size, nbeads,
           protocol, system_class, dims, timestep_fs, tau_fs, thermostat, start_frame, ensemble, pressure_GPa, barostat,
           tau_barostat_fs, model, model_options, models_file, dispersion, dispersion_functional, force):
    """Write an i-PI input for SYSTEM's reference protocol, then run `i-pi input.xml & dynamat-driver`."""
    _check_out(out, force)
    overrides = protocol_overrides(protocol, system_class, dims, timestep_fs, tau_fs, thermostat, start_frame,
                                   ensemble=ensemble, pressure_GPa=pressure_GPa, barostat=barostat,
                                   tau_barostat_fs=tau_barostat_fs)
    if model:
        model_folder(model)  # a name or MODULE:CALLABLE, checked before anything is written
    elif models_file:
        raise DynamatError("--models-file names models for --model: add --model NAME")
    # the command is printed, to run maybe in the model's own environment: a name unknown here is a warning
    served = served_model(model, models_file, None, dispersion,
                          warn=lambda m: click.echo(f"dynamat: warning: {m}", err=True)) if model else None
    model_args = [served.driver_model if served else "MODEL"]
    # the printed command runs later, by hand: a path: file may be made (or copied there) before it does
    for arg in (served.driver_args if served else ()) + model_option_args(model_options, must_exist=False):
        model_args += ["-o", arg.removeprefix("--option=")] if arg.startswith("--option=") else [arg]
    model_args += dispersion_args(dispersion, dispersion_functional)
    if served:  # a registered model's options are the same in every environment: a wrong one is refused
        check_model_options(served.driver_model, model_args[1:])
    reference, sys_entry, _ = load_system(reference, system, **overrides)
    if nbeads > 1 and sys_entry.protocol.ensemble == "npt":
        raise DynamatError("NPT (--ensemble npt, or an NPT reference's own) runs classical MD through i-PI's "
                           "barostats: drop --beads, or give --ensemble nvt for a fixed cell")
    sys_entry = with_beads(sys_entry, nbeads)  # path integrals: PILE-L, said below as written
    if sys_entry.protocol.relax:
        raise DynamatError(f"protocol {sys_entry.protocol.name} relaxes the cell with the model before MD; "
                           "`dynamat run` does that, a hand-written input cannot")
    steps = steps_for(sys_entry, steps, time_ps)
    unix_name = check_socket_name(unix_name) if unix_name else f"dynamat-{secrets.token_hex(4)}"
    kwargs = dict(mode="unix", address=unix_name)
    if inet:
        host, _, port = inet.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536 or any(c in host for c in "<>&'\" "):
            raise DynamatError(f"--inet wants HOST:PORT, got {inet!r}")
        kwargs = dict(mode="inet", address=host, port=int(port))
    try:
        xml = write_inputs(start_atoms(reference, sys_entry, start_frame or 0), sys_entry.md_settings(steps, seed, nbeads), out,
                           batch_size=batch_size, **kwargs)
    except OSError as exc:
        raise DynamatError(f"cannot write to {out}: {exc.strerror or exc}") from None
    p = sys_entry.protocol
    click.echo(f"wrote {xml} and {RunFolder(xml.parent).init_xyz}")
    click.echo(f"protocol {p.name}: i-PI {p.ipi_thermostat} (paper: {p.paper_thermostat}), dt {p.timestep_fs} fs, "
               f"tau {p.tau_fs} fs, frame every {p.stride} steps, {sys_entry.temperature_K} K")
    if nbeads > 1 and sys_entry.source("thermostat").startswith("pile_l (path integrals"):
        click.echo(f"thermostat {sys_entry.source('thermostat')}")
    if p.ensemble == "npt":
        click.echo(f"ensemble npt: {p.pressure_GPa:g} GPa, {p.barostat} barostat, tau {p.tau_barostat_fs:g} fs "
                   "(the barostat reads the virial every step: run the driver without --stress-stride)")
    where = f"--inet {shlex.quote(inet)}" if inet else f"--unix {shlex.quote(unix_name)}"
    # ';' not '&&': with '&&' the cd happens only in the backgrounded subshell and the driver starts elsewhere
    driver = shlex.quote(served.driver_cmd) if served and served.driver_cmd else "dynamat-driver"
    click.echo(f"run it:  cd {shlex.quote(str(out))}; i-pi input.xml & {driver} --model {shlex.join(model_args)} {where}")


def _check_out(out: Path, force: bool) -> None:
    """Nothing in ``out`` is replaced unasked, and a run folder's inputs never: its resume reads them."""
    rf = RunFolder(out)
    if rf.run_json.exists():
        raise DynamatError(f"{out} holds a dynamat run (run.json): its input.xml is the run's own; give another --out")
    there = [p.name for p in (rf.input_xml, rf.init_xyz) if p.exists() or p.is_symlink()]
    if there and not force:
        raise DynamatError(f"{out} already holds {' and '.join(there)}: give another --out, or --force to replace them")
    for name in there:  # unlinked, not written through: a link there must not lead the write out of --out
        try:
            (out / name).unlink()
        except OSError as exc:
            raise DynamatError(f"cannot replace {out / name}: {exc.strerror or exc}") from None
