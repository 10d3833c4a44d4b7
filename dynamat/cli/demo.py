"""``dynamat demo``: the main job on bundled data: single points, an i-PI MD run, the scorecard."""

from __future__ import annotations

from pathlib import Path

import click

from dynamat.cli.common import driver_options, progress_printer, reference_option, show_score, with_options
from dynamat.errors import DynamatError
from dynamat.io.reference_h5 import reference_n_frames
from dynamat.known_models import check_model_known
from dynamat.reference import load_system, resolve_reference
from dynamat.runner import (RunOptions, check_continues, check_same_run, model_identity, plan_run_dir, read_run_json,
                            run_settings, run_system)
from dynamat.layout import RunFolder, check_out_folder
from dynamat.scoring.run import check_scorable_length, score_run, write_score
from dynamat.singlepoint import run_singlepoint

DEMO_SEED = 12345  # the demo reproduces its numbers


@click.command()
@click.option("--model", default="chgnet", show_default=True)
@click.option("--system", default="bulkCu_300K-demo_EMT", show_default=True)
@reference_option
@click.option("--steps", type=click.IntRange(1, 1_000_000), default=400, show_default=True, help="MD steps (the paper's 20 ps is 80000).")
@click.option("--singlepoint-frames", type=click.IntRange(min=1), default=40, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), default=Path("runs/demo"), show_default=True)
@click.option("--overwrite", is_flag=True, help="Replace the run folder's run. Without it a completed demo run of "
              "--steps is kept and scored again, a shorter or unfinished one continued, any other refused.")
@with_options(driver_options)
def demo(model, system, reference, steps, singlepoint_frames, out, overwrite, driver_cmd, driver_args):
    """The main job on bundled data: single points, an i-PI MD run, and the scorecard.

    A rerun keeps a completed demo run of the same --steps and scores it again; a larger --steps
    continues it; a folder holding any other run is refused unless --overwrite."""
    reference = resolve_reference(reference, system)
    rf = RunFolder.of(check_out_folder(out), model, system)  # names are checked before anything is read
    check_model_known(model, (), driver_cmd)
    _, entry, _ = load_system(reference, system)
    check_scorable_length([(entry, steps)])
    kept = _settle_folder(rf.path, model, entry, steps, overwrite, driver_args, out)
    every = max(1, reference_n_frames(reference, system) // max(singlepoint_frames, 1))
    sp = run_singlepoint(model, reference, system, every, singlepoint_frames, 8, driver_cmd, driver_args,
                         progress=lambda j, n: click.echo(f"  singlepoint {model}/{system}: {j}/{n} frames", err=True))
    if kept:
        click.echo(f"kept: {rf.path} holds a completed demo run of {steps} steps (seed {DEMO_SEED}); scoring it "
                   "again (--overwrite runs it anew)", err=True)
    else:
        opts = RunOptions(steps=steps, seed=DEMO_SEED, overwrite=overwrite, driver_cmd=driver_cmd,
                          driver_args=tuple(driver_args), batch_size=1)
        run_system(model, system, reference, out, opts, progress=progress_printer(f"{model}/{system}"),
                   isolated_energies_eV=sp.get("isolated_atom_energies_model_eV"),
                   announce=lambda m: click.echo(m, err=True))
    curves: dict = {}
    res = score_run(reference, system, rf.path, model=model, curves=curves)
    res.update(sp)
    write_score(res, rf.score_json, curves)
    click.echo(f"wrote {rf.score_json}", err=True)
    show_score(res)


def _settle_folder(run_dir: Path, model: str, entry, steps: int, overwrite: bool, driver_args, out: Path) -> bool:
    """What the demo does with ``run_dir``, decided before any work (the single points come first and take
    minutes): True keeps a completed demo run of ``steps`` steps; False runs (fresh, continued or, with
    ``overwrite``, replacing the folder's run). A run of another seed, model, protocol or length is refused,
    as ``dynamat run`` refuses one, with the way out: --overwrite or another --out."""
    if overwrite:
        from dynamat.replicas import check_no_further_replicas

        plan_run_dir(run_dir, True, steps)  # a folder of something else is not removed
        check_no_further_replicas(out, model, entry.name, 1)  # as `dynamat run --overwrite`: a set's others first
        return False
    old = read_run_json(run_dir)
    if not old:
        plan_run_dir(run_dir, False, steps)  # a folder of something else is refused here
        return False
    check_same_run(run_dir, entry.name, None, False)
    way_out = "pass --overwrite to replace it or --out to choose another folder"
    if old.get("status") == "completed" and int(old.get("steps_requested") or 0) == steps:
        _check_demo_run(run_dir, old, entry, steps, model, driver_args, way_out)
        return True
    action, _ = plan_run_dir(run_dir, False, steps)
    if action == "resume":  # continued: the same seed, protocol and model, or it would mix two runs
        _check_demo_run(run_dir, old, entry, steps, model, driver_args, way_out)
    return False


def _check_demo_run(run_dir: Path, old: dict, entry, steps: int, model: str, driver_args, way_out: str) -> None:
    """A run the demo keeps or continues is one the demo would make: seed DEMO_SEED, the system's protocol
    (classical, i-PI) and the same served model, checked as ``dynamat run`` checks a resume."""
    seed = old.get("seed")
    if isinstance(seed, int) and seed != DEMO_SEED:
        raise DynamatError(f"{run_dir} holds a run with seed {seed}, not the demo's {DEMO_SEED}; {way_out}")
    check_continues(run_dir, old, run_settings(entry, "ipi", 1, steps, DEMO_SEED)[1], "ipi",
                    model_identity(model, driver_args), entry.describe(), way_out)
