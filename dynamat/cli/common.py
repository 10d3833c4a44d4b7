"""Options and output helpers shared by the command modules."""

from __future__ import annotations

from pathlib import Path

import click

from dynamat.io.results import write_json_atomic
from dynamat.runner import MAX_SEED
from dynamat.scoring.card import scorecard

reference_option = click.option(
    "--reference", "reference", type=click.Path(path_type=Path), default=None,
    help="DynaMat v1.0 reference HDF5 [default: the bundled demo file for its systems, else the file from `dynamat data download`].",
)
system_option = click.option("--system", "system", required=True, help="System name (group in the reference file).")



def seed_option(default: int | None = None):
    """``--seed``: a non-negative integer (i-PI reads -1 as 'seed from the clock', which no record could
    reproduce). Without a default, a run draws one and records it in run.json; a rerun reuses it."""
    helps = "Random seed of the thermostat and initial velocities" + (
        " [default: the one the run folder's run.json records, else drawn and recorded there]." if default is None
        else ".")
    return click.option("--seed", type=click.IntRange(0, MAX_SEED), default=default, show_default=default is not None,
                        help=helps)


driver_options = [
    click.option("--driver-cmd", default=None, help="Driver command line from another environment, e.g. ~/envs/mace/bin/dynamat-driver."),
    click.option("--driver-arg", "driver_args", multiple=True, help="Extra driver argument (repeatable), e.g. --driver-arg=--device=cuda."),
]


#: the protocol a system runs under, where the catalogue's or the inferred one is not wanted
#: (``dynamat run`` and ``dynamat inputs``); :func:`protocol_overrides` turns them into keywords
protocol_options = [
    click.option("--protocol", default=None,
                 help="Run under another catalogue protocol, e.g. relaxed_nhc (paper Fig. S5: cell relaxation first)."),
    click.option("--class", "system_class", default=None,
                 help="Material class instead of the catalogue's or the inferred one (e.g. semiconductor, TMD)."),
    click.option("--dims", type=click.Choice(["2", "3"]), default=None,
                 help="3, or 2 for a slab (pressure from xx and yy) [default: catalogue, else a vacuum gap means 2]."),
    click.option("--timestep-fs", type=float, default=None, help="The MLIP's MD time step in fs [default: the protocol's]."),
    click.option("--tau-fs", type=float, default=None, help="Thermostat time constant in fs [default: the protocol's]."),
    click.option("--thermostat", default=None, help="i-PI thermostat mode, e.g. svr or langevin [default: the protocol's]."),
    click.option("--start-frame", type=click.IntRange(0), default=None,
                 help="Reference frame the MLIP run starts from [default: 0, the first]."),
]


def protocol_overrides(protocol, system_class, dims, timestep_fs, tau_fs, thermostat, start_frame) -> dict:
    """The options of :data:`protocol_options` that were given (run.json records each with its source)."""
    ov = dict(protocol=protocol, system_class=system_class, dims=None if dims is None else int(dims),
              timestep_fs=timestep_fs, tau_fs=tau_fs, thermostat=thermostat, start_frame=start_frame)
    return {k: v for k, v in ov.items() if v is not None}


def with_options(options):
    def deco(f):
        for opt in reversed(options):
            f = opt(f)
        return f
    return deco


def progress_printer(label: str):
    """A progress callback (step, total) that prints every 5 % to stderr."""
    state = {"last": -1.0}

    def show(step: int, total: int) -> None:
        frac = step / max(total, 1)
        if frac - state["last"] >= 0.05 or step >= total:
            state["last"] = frac
            click.echo(f"  {label}: step {step}/{total} ({100 * frac:.0f}%)", err=True)

    return show


def emit(res: dict, json_out: Path | None) -> None:
    """Writes ``res`` to ``json_out`` (atomically) when given and prints its scorecard."""
    if json_out:
        write_json_atomic(json_out, res)
        click.echo(f"wrote {json_out}", err=True)
    click.echo(scorecard(res))
