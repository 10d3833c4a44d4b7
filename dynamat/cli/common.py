"""Options and output helpers shared by the command modules."""

from __future__ import annotations

import time
from pathlib import Path

import click

from dynamat.errors import DynamatError
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


#: the isothermal-isobaric protocol (i-PI's barostats); catalogue.get_system checks them together
ensemble_options = [
    click.option("--ensemble", type=click.Choice(["nvt", "npt"]), default=None,
                 help="nvt: fixed cell (the paper's); npt: i-PI's barostat moves the cell [default: the reference's own: "
                      "npt at its pressure where it was run so, else nvt]."),
    click.option("--pressure-GPa", "pressure_GPa", type=float, default=None,
                 help="With --ensemble npt: the external pressure in GPa."),
    click.option("--barostat", type=click.Choice(["isotropic", "flexible"]), default=None,
                 help="With --ensemble npt: isotropic (volume only) or flexible (the whole cell) [default: isotropic]."),
    click.option("--tau-barostat-fs", "tau_barostat_fs", type=float, default=None,
                 help="With --ensemble npt: the barostat's time constant in fs [default: 1000]."),
]


def protocol_overrides(protocol, system_class, dims, timestep_fs, tau_fs, thermostat, start_frame,
                       **ensemble) -> dict:
    """The options of :data:`protocol_options` (and :data:`ensemble_options`, as keywords) that were given
    (run.json records each with its source)."""
    ov = dict(protocol=protocol, system_class=system_class, dims=None if dims is None else int(dims),
              timestep_fs=timestep_fs, tau_fs=tau_fs, thermostat=thermostat, start_frame=start_frame, **ensemble)
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


def eta_printer(label: str):
    """A progress callback (step, total) that prints every 5 % to stderr with the time left, from the
    rate since the first step seen (a resumed run counts from where it resumed)."""

    state = {"last": -1.0, "t0": None, "s0": 0}

    def show(step: int, total: int) -> None:
        now = time.monotonic()
        if state["t0"] is None:
            state["t0"], state["s0"] = now, step
        frac = step / max(total, 1)
        if frac - state["last"] >= 0.05 or step >= total:
            state["last"] = frac
            done = step - state["s0"]
            eta = "" if done <= 0 else f", about {(now - state['t0']) / done * (total - step):.0f} s left"
            click.echo(f"  {label}: step {step}/{total} ({100 * frac:.0f}%{eta})", err=True)

    return show


def emit(res: dict, json_out: Path | None) -> None:
    """Writes ``res`` to ``json_out`` (atomically) when given and prints its scorecard."""
    if json_out:
        write_json_atomic(json_out, res)
        click.echo(f"wrote {json_out}", err=True)
    show_score(res)


def show_score(res: dict) -> None:
    """The scorer's notes (what a number must be read with) on stderr, then the scorecard."""
    for note in res.get("notes") or ():
        click.echo(f"note: {note}", err=True)
    click.echo(scorecard(res))


#: options of a model (``dynamat run --model ase.calculators.lj:LennardJones --model-option sigma=2.3``),
#: passed to the driver as ``--option KEY=VALUE``; the driver types them (see dynamat_driver.models.custom)
model_option = click.option(
    "--model-option", "model_options", multiple=True, metavar="KEY=VALUE",
    help="Model option, typed by the driver: true/false, int, float, path:FILE, else text (repeatable).")


#: ``--dispersion d3-bj`` (and the functional): the driver adds the D3(BJ) correction to the model
#: (dynamat_driver.models.dispersion) and reports it in its timing file, whence run.json
dispersion_options = [
    click.option("--dispersion", type=click.Choice(["d3-bj"]), default=None,
                 help="Add a DFT-D3(BJ) correction to the model in the driver (needs simple-dftd3 there: "
                      "pip install dftd3), e.g. to compare with PBE+D3 references."),
    click.option("--dispersion-functional", default=None, metavar="NAME",
                 help="With --dispersion: the functional whose D3(BJ) parameters are used [default: pbe]."),
]


#: ``--models-file models.toml``: a user's models by name, one table each (dynamat.models_file)
models_file_option = click.option(
    "--models-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help="TOML file with one [name] table per model of your own (calculator = \"MODULE:CALLABLE\", options, label, "
         "tier, n_params, dispersion, driver_cmd, training_set); its names then work as --model.")


def served_model(model: str, models_file: Path | None, driver_cmd: str | None, dispersion: str | None = None,
                 warn=None):
    """How ``model`` is served (:class:`dynamat.models_file.Served`): a models file's table, else the name
    itself. A table's own dispersion and ``--dispersion`` together are refused (one would silently win), and
    a name no driver could serve is refused before any folder is made; with ``warn`` (a command that only
    prints the driver command, to be run maybe in another environment) it is said through ``warn`` instead."""
    from dynamat.known_models import check_model_known
    from dynamat.models_file import read_models_file, serve

    entries = read_models_file(models_file) if models_file else {}
    served = serve(model, entries, driver_cmd)
    try:
        check_model_known(model, tuple(entries), served.driver_cmd)
    except DynamatError as exc:
        if warn is None:
            raise
        warn(f"{exc}; the printed command works only in an environment whose driver knows it")
    if served.entry is not None and served.entry.dispersion and dispersion:
        raise DynamatError(f"model {model!r} has dispersion = {served.entry.dispersion!r} in {models_file}; "
                           "drop --dispersion")
    return served


def label_gap(labels: dict) -> str:
    """What single-point errors the labels leave out (Eq. 1 needs energies, Eq. 2 forces)."""
    if labels["energy"] and labels["forces"]:
        return ""
    if labels["forces"]:
        return " (no energies: force errors, Eq. 2, only)"
    if labels["energy"]:
        return " (no forces: energy errors, Eq. 1, only)"
    return " (label-free: no energy/force errors)"
