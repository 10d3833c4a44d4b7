"""``dynamat run``: one model on one system with i-PI (or ASE's NHC) and a dynamat-driver; with
``--pack K``, one model on several systems, K at a time, all served by one driver process."""

from __future__ import annotations

from pathlib import Path

import click

from dynamat.cli.common import (dispersion_options, driver_options, ensemble_options, model_option,
                                models_file_option, progress_printer, protocol_options,
                                protocol_overrides, reference_option, seed_option, served_model, system_option,
                                with_options)
from dynamat.errors import DynamatError
from dynamat.known_models import check_model_options
from dynamat.models_file import dispersion_args, model_option_args
from dynamat.runner import MAX_STEPS, RunOptions, model_identity, run_packed, run_system


@click.command()
@click.option("--model", required=True, help="Model name as dynamat-driver knows it (see `dynamat models`), or "
              "MODULE:CALLABLE returning an ASE calculator (run folder: MODULE@CALLABLE), or a --models-file name.")
@model_option
@models_file_option
@system_option
@reference_option
@click.option("--steps", type=click.IntRange(1, MAX_STEPS), default=None, help="MD steps [default: the protocol's full length, 20 ps].")
@click.option("--time-ps", type=float, default=None, help="Simulated time in ps instead of --steps.")
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs"), show_default=True)
@seed_option()
@click.option("--overwrite", is_flag=True, help="Replace an existing run folder (without it an unfinished one is resumed, a completed one of --steps kept, a shorter one extended).")
@click.option("--batch-size", type=click.IntRange(1, 4096), default=None, help="Structures per i-PI request [default: the bead count].")
@click.option("--beads", "nbeads", type=click.IntRange(1, 1024), default=1, show_default=True,
              help="Path-integral beads (PILE-L thermostat); 1 is classical MD.")
@click.option("--socket", "socket_mode", type=click.Choice(["unix", "inet"]), default="unix", show_default=True,
              help="unix: a private socket file; inet: TCP on --host with a free port (published in socket.json).")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface for an inet socket (localhost unless named).")
@with_options(protocol_options)
@with_options(ensemble_options)
@click.option("--engine", type=click.Choice(["ipi", "ase"]), default="ipi", show_default=True,
              help="ase: ASE's Nose-Hoover chain as socket server, the paper's exact protocol for metals, alloys, TMDs, perovskites.")
@click.option("--pack", "pack", type=click.IntRange(1, 256), default=None, metavar="K",
              help="Packed runs: --system A,B,C runs K systems at a time, every one served by one driver process "
              "that loads the model once and batches their structures into shared model calls where the model can.")
@click.option("--replicas", type=click.IntRange(1, 1000), default=1, show_default=True, metavar="R",
              help="R independent trajectories per system, seeds --seed + k (recorded in each run.json), in "
              "<out>/<model>/<system> (replica 0) and <system>_r<k>; packed together with --pack.")
@click.option("--pack-wait-ms", type=click.FloatRange(0, 1000), default=None,
              help="With --pack: how long the driver waits for the other runs' positions before a model call [5].")
@with_options(driver_options)
@with_options(dispersion_options)
def run(model, model_options, models_file, system, reference, steps, time_ps, out, seed, overwrite, batch_size, nbeads,
        socket_mode, host, protocol, system_class, dims, timestep_fs, tau_fs, thermostat, start_frame, ensemble,
        pressure_GPa, barostat, tau_barostat_fs, engine, pack, replicas, pack_wait_ms,
        driver_cmd, driver_args, dispersion, dispersion_functional):
    """Run MODEL on SYSTEM with i-PI and a dynamat-driver; leaves <out>/<model>/<system>/run.json.

    An unfinished run in the same folder is resumed from i-PI's RESTART or checkpoint; a rerun with
    a larger --steps continues it."""
    served = served_model(model, models_file, driver_cmd, dispersion)
    opts = RunOptions(steps=steps, seed=seed, overwrite=overwrite, driver_cmd=served.driver_cmd,
                      driver_model=served.driver_model, driver_args=tuple(driver_args) + served.driver_args
                      + model_option_args(model_options) + dispersion_args(dispersion, dispersion_functional),
                      batch_size=batch_size,
                      socket_mode=socket_mode, host=host, engine=engine, nbeads=nbeads)
    check_model_options(served.driver_model, opts.driver_args)
    overrides = protocol_overrides(protocol, system_class, dims, timestep_fs, tau_fs, thermostat, start_frame,
                                   ensemble=ensemble, pressure_GPa=pressure_GPa, barostat=barostat,
                                   tau_barostat_fs=tau_barostat_fs)
    names = [x.strip() for x in system.split(",") if x.strip()]
    if pack_wait_ms is not None and pack is None:
        raise DynamatError("--pack-wait-ms is the pack driver's gather window: add --pack K")
    if overwrite and replicas == 1:  # a single run replaces replica 0 of a set: the set's others must go first
        from dynamat.replicas import check_no_further_replicas

        for name in names:
            check_no_further_replicas(out, model, name, 1)
    opts.keep_same = True  # a rerun of a completed run of the asked length has nothing to do: it says so
    if replicas > 1:
        return _run_replicas(model, names, reference, out, opts, replicas, pack, time_ps, overrides,
                             start_frame or 0, pack_wait_ms)
    if pack is not None or len(names) > 1:
        if pack is None:
            raise DynamatError("several systems run together: add --pack K (K runs at a time, one shared driver)")
        if len(set(names)) != len(names):
            raise DynamatError("--system names a system twice")
        results = run_packed(model, names, reference, out, opts, pack, time_ps=time_ps, overrides=overrides,
                             start_frame=start_frame or 0, wait_ms=pack_wait_ms,
                             progress_for=lambda n: progress_printer(f"{model}/{n}"),
                             announce=lambda m: click.echo(m, err=True))
        _report_results(model, names, results, "packed runs")
        return
    _, _, rec = run_system(model, system, reference, out, opts, time_ps=time_ps, overrides=overrides,
                           start_frame=start_frame or 0,
                           progress=progress_printer(f"{model}/{system}"),
                           announce=lambda m: click.echo(m, err=True))
    sps = rec.seconds_per_step_median
    for note in rec.notes:
        click.echo(f"note: {note}", err=True)
    click.echo(f"{rec.status}: {rec.steps_requested} steps (last saved frame: step {rec.steps_done}), "
               f"{_per_step(sps)} -> {rec.folder}")


def _per_step(seconds: float | None) -> str:
    """The median time per MD step, or why there is none: it needs two timed output rows past the warm-up
    (the first tenth of the steps), which a short run or a short continuation does not reach."""
    if seconds is None:
        return "time per MD step n/a (too few steps timed)"
    return f"{seconds * 1e3:.1f} ms per MD step"


def _report_results(model: str, labels: list[str], results: list, what: str) -> None:
    """One line per run; one error line when any did not complete."""
    failed = 0
    for name, res in zip(labels, results):
        if isinstance(res, Exception):
            failed += 1
            click.echo(f"failed: {model}/{name}: {res}", err=True)
            continue
        sps = res.seconds_per_step_median
        click.echo(f"{res.status}: {model}/{name}, {res.steps_requested} steps, seed {res.seed}, "
                   f"{_per_step(sps)} -> {res.run_dir}")
    if failed:
        raise DynamatError(f"{failed} of {len(labels)} {what} did not complete (each says why above; an "
                           "interrupted one resumes when the same command is run again)")


def _run_replicas(model, names, reference, out, opts, replicas, pack, time_ps, overrides, start_frame, wait_ms):
    """R replicas of each system: one after another, or packed (``--pack K``) under one driver."""
    import copy

    from dynamat.replicas import plan_replicas

    if len(set(names)) != len(names):
        raise DynamatError("--system names a system twice")
    plan = plan_replicas(model, names, reference, out, replicas, seed=opts.seed, overwrite=opts.overwrite,
                         steps=opts.steps, time_ps=time_ps, overrides=overrides, nbeads=opts.nbeads, engine=opts.engine,
                         identity=model_identity(opts.served(model), opts.driver_args))
    opts.keep_final = True  # one done meanwhile by another command of the same set is kept too
    for r in plan:
        if r.keep:
            click.echo(f"kept: {model}/{r.label} is {r.keep} at the asked length (seed {r.seed})", err=True)
    todo = [r for r in plan if not r.keep]
    if not todo:
        return
    if pack is not None or len(names) > 1:
        if pack is None:
            raise DynamatError("several systems run together: add --pack K (K runs at a time, one shared driver)")
        results = run_packed(model, todo, reference, out, opts, pack, time_ps=time_ps, overrides=overrides,
                             start_frame=start_frame, wait_ms=wait_ms,
                             progress_for=lambda n: progress_printer(f"{model}/{n}"),
                             announce=lambda m: click.echo(m, err=True))
    else:
        results = []
        for r in todo:
            o = copy.copy(opts)
            o.seed = r.seed
            try:
                results.append(run_system(model, r.system, reference, out, o, time_ps=time_ps, overrides=overrides,
                                          start_frame=start_frame, progress=progress_printer(f"{model}/{r.label}"),
                                          announce=lambda m: click.echo(m, err=True), replica=r.replica)[2])
            except DynamatError as exc:
                results.append(exc)
    _report_results(model, [r.label for r in todo], results, "replica runs")
